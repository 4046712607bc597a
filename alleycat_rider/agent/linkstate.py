"""The MQTT link as the agent sees it: what each of its events means, and what the rider is told.

The agent's loop hands every :class:`~alleycat_rider.mqtt.LinkEvent` here. A completion goes to
the publisher; a connection subscribes to the results topic and lets the publisher send; a
results message becomes the standings shown. A failure that persists (a connection refused, a
publish failed or rejected) is told once a minute per reason, not once a second; a device the
broker refuses before it ever connected, or a broker that takes less than ``--qos``, stops the
ride with one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from alleycat_rider.agent.display import AgentStatus, Reporter
from alleycat_rider.agent.publisher import Publisher
from alleycat_rider.config import RiderConfig
from alleycat_rider.core.standings import ResultsError, Standings, standings_for
from alleycat_rider.errors import CertificateError, PublishError
from alleycat_rider.mqtt import (
    Connected,
    ConnectionFailed,
    Disconnected,
    EventSink,
    LinkEvent,
    PublishDone,
    Received,
    Subscribed,
)

#: Repeat a connection failure in the log at most this often (seconds) while it persists.
FAILURE_LOG_INTERVAL = 60.0


class AgentLink(Protocol):
    """What the agent needs of :class:`~alleycat_rider.mqtt.MqttLink`."""

    def start(self) -> None:
        """Start connecting."""

    def publish(self, topic: str, payload: bytes, qos: int, token: int) -> None:
        """Start a publish."""

    def subscribe(self, topic: str) -> None:
        """Subscribe to a topic."""

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect and stop."""


LinkFactory = Callable[[EventSink], AgentLink]


class Throttle:
    """Says whether a repeated failure is told now: once a minute per reason."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._last: tuple[str, float] | None = None

    def due(self, reason: str) -> bool:
        """Whether to tell this failure now (and if so, remember that it was told)."""
        now = self._monotonic()
        last = self._last
        if last is None or last[0] != reason or now - last[1] >= FAILURE_LOG_INTERVAL:
            self._last = (reason, now)
            return True
        return False

    def reset(self) -> None:
        """Tell the next failure at once, whatever its reason."""
        self._last = None


class LinkState:
    """The link's state for the agent: connected or not, and the standings it brought.

    Args:
        config: The validated configuration.
        publisher: Where completions and connection changes go.
        subscribe: Subscribes the link to a topic.
        reporter: Where events go.
        status: The agent's status snapshot, redrawn when standings arrive.
        monotonic: The monotonic clock.
    """

    def __init__(
        self,
        config: RiderConfig,
        *,
        publisher: Publisher,
        subscribe: Callable[[str], None],
        reporter: Reporter,
        status: Callable[[], AgentStatus],
        monotonic: Callable[[], float],
    ) -> None:
        self.config = config
        self._publisher = publisher
        self._subscribe = subscribe
        self._reporter = reporter
        self._status = status
        self.connection = "connecting"
        """``connecting`` until the first connection, then ``connected`` or ``offline``."""
        self.ever_connected = False
        self.standings: Standings | None = None
        """The rider's standings in the last results message, if any arrived."""
        self._failures = Throttle(monotonic)
        self._publish_failures = Throttle(monotonic)
        self._rejections = Throttle(monotonic)

    def handle(self, event: LinkEvent, *, stopping: bool) -> None:
        """Act on one event of the link; ``stopping`` once the ride was asked to stop.

        Raises:
            CertificateError: the broker refused the device before it ever connected.
            PublishError: the broker accepts less than ``--qos``.
        """
        publisher = self._publisher
        match event:
            case PublishDone():
                failed_live = not (event.delivered or event.rejected) and publisher.connected
                publisher.on_publish_done(event)
                if event.rejected:
                    self._publish_rejected(event.code)
                elif failed_live and not stopping:
                    self._publish_failed(event.code, publisher.resume_in)
            case Connected():
                self._check_maximum_qos(event.maximum_qos)
                self.ever_connected = True
                self.connection = "connected"
                self._failures.reset()
                self._subscribe(self.config.results_topic)
                self._reporter.event(
                    "info",
                    "connected",
                    endpoint=f"{self.config.endpoint}:{self.config.port}",
                    spool_depth=publisher.spool_depth,
                )
                publisher.on_connected()
            case Disconnected():
                publisher.on_disconnected()
                self.connection = "offline"
                if not stopping:
                    self._reporter.event("warning", "disconnected", reason=event.code)
            case ConnectionFailed():
                self.connection_failed(event, stopping=stopping)
            case Subscribed():
                if event.granted:
                    self._reporter.event("info", "subscribed", topic=event.topic)
                else:
                    self._reporter.event(
                        "warning", "subscription refused", topic=event.topic, reason=event.code
                    )
            case Received():
                self._results(event.payload)

    def connection_failed(self, event: ConnectionFailed, *, stopping: bool) -> None:
        """A connection failed (or the quick TLS check said why it would).

        Raises:
            CertificateError: the broker refused the device before it ever connected.
        """
        self.connection = "offline"
        if event.refused and not self.ever_connected and not stopping:
            raise CertificateError(event.message)
        if self._failures.due(event.code):
            level = "error" if event.refused else "warning"
            self._reporter.event(
                level, "connection failed", reason=event.code, detail=event.message
            )

    def _check_maximum_qos(self, maximum_qos: int) -> None:
        qos = self.config.qos
        if qos > maximum_qos:
            raise PublishError(
                f"{self.config.endpoint}:{self.config.port} accepts QoS {maximum_qos} only "
                f"(the Maximum QoS of its CONNACK), not --qos {qos}: ride with --qos "
                f"{maximum_qos}, or let the broker take QoS {qos} (mosquitto: max_qos); "
                "spooled messages stay in the spool"
            )

    def _publish_failed(self, code: str, retry_in: float) -> None:
        """Log a publish that failed on a live connection: once a minute per reason."""
        if self._publish_failures.due(code):
            self._reporter.event(
                "warning", "publish failed", reason=code, retry_in_s=round(retry_in, 1)
            )

    def _publish_rejected(self, code: str) -> None:
        """Log a publish the broker refused (not authorized on the topic, say): once a minute per
        reason, with the number refused so far; every one is counted."""
        if self._rejections.due(code):
            self._reporter.event(
                "warning",
                "publish rejected",
                reason=code,
                rejected=self._publisher.counters.rejected,
                topic=self.config.topic,
            )

    def _results(self, payload: bytes) -> None:
        config = self.config
        try:
            standings = standings_for(payload, racer_id=config.racer_id, class_id=config.class_id)
        except ResultsError as exc:
            self._reporter.event("warning", "malformed results message ignored", error=str(exc))
            return
        except Exception as exc:  # whatever one message does, the ride goes on
            self._reporter.event(
                "error", "results message could not be read", error=f"{type(exc).__name__}: {exc}"
            )
            return
        if standings is None:
            return
        self.standings = standings
        self._reporter.event(
            "info",
            "standings",
            race=standings.race_id,
            place=standings.place,
            riders=standings.riders,
            output=standings.output,
            leader_output=standings.leader_output,
        )
        # Redrawn now, not at the next second: the panel shows the leader the log just gave.
        self._reporter.update(self._status)
