"""The rider agent's loop: sensor -> message -> spool -> MQTT, once a second, for months.

One thread does everything that matters: it sends at whole-second deadlines and, between them,
handles what the MQTT client reports (through a queue filled from SDK threads and from signal
handlers, so no SDK callback ever waits for us). On SIGINT or SIGTERM it sends the race's
``final`` message, waits a bounded time for outstanding PUBACKs, stops the client and returns.
"""

from __future__ import annotations

import queue
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Protocol

from alleycat_rider.config import RiderConfig
from alleycat_rider.core.message import MessageEncoder, RideEvent, output, race_position, uuid4
from alleycat_rider.core.standings import ResultsError, Standings, standings_for
from alleycat_rider.display import AgentStatus, Reporter
from alleycat_rider.errors import CertificateError
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
from alleycat_rider.publisher import Publisher
from alleycat_rider.schedule import LatenessWindow, TickSchedule
from alleycat_rider.sensors.base import Reading, Sensor
from alleycat_rider.spool import Spool

#: How long before its deadline a message is read and spooled (the spool's fsync takes time, on
#: an SD card tens of milliseconds); it is then sent at the deadline itself.
PREPARE_LEAD = 0.05
#: Repeat a connection failure in the log at most this often (seconds) while it persists.
FAILURE_LOG_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class StopRequested:
    """A signal asked the agent to stop."""

    signum: int


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


class Agent:
    """One rider's agent.

    Args:
        config: The validated configuration.
        sensor: Where readings come from (not yet started).
        link_factory: Builds the MQTT link, given the sink its events must go to.
        spool: The QoS 1 spool (``None`` for QoS 0).
        reporter: Where events and status go.
        monotonic: The monotonic clock.
        wall: The wall clock (epoch seconds) for ``deviceTimestamp``.
        rng: Where uuids come from; the system's randomness unless testing.
        lead: Seconds before each deadline to prepare its message.
    """

    def __init__(
        self,
        config: RiderConfig,
        *,
        sensor: Sensor,
        link_factory: LinkFactory,
        spool: Spool | None,
        reporter: Reporter,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        lead: float = PREPARE_LEAD,
    ) -> None:
        self.config = config
        self._sensor = sensor
        self._link_factory = link_factory
        self._spool = spool
        self._reporter = reporter
        self._monotonic = monotonic
        self._wall = wall
        self._rng = rng if rng is not None else random.SystemRandom()
        # Without a spool there is nothing slow to do ahead of the deadline.
        self._lead = lead if config.qos == 1 else 0.0
        self._encoder = MessageEncoder(config.identity)
        self._events: queue.SimpleQueue[LinkEvent | StopRequested] = queue.SimpleQueue()
        # Completions are handled at the next wake-up unless a backlog waits for room in the
        # window: waking the loop costs more CPU than anything else it does in a second.
        self._deferred: deque[PublishDone] = deque()
        self._eager = True
        self._deferral = threading.Lock()
        self._link: AgentLink | None = None
        self._publisher: Publisher | None = None
        self.lateness = LatenessWindow()
        self.schedule: TickSchedule | None = None
        self._race_start_ms: int | None = None
        self._stop: int | None = None
        self._abort_drain = False
        self._ever_connected = False
        self._connection = "connecting"
        self._last_failure: tuple[str, float] | None = None
        self._reading: Reading | None = None
        self._race: tuple[int, int] | None = None
        self._standings: Standings | None = None

    @property
    def publisher(self) -> Publisher:
        """The publisher (available once :meth:`run` started)."""
        assert self._publisher is not None
        return self._publisher

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the running loop to finish (safe from signal handlers and other threads)."""
        self._events.put(StopRequested(signum))

    def run(self) -> None:
        """Ride until asked to stop.

        Raises:
            CertificateError: the broker refused the device before it ever connected.
            SensorError: the sensor cannot be opened.
            SpoolError: the spool cannot be written.
            PublishError: the MQTT client cannot be used.
        """
        restore = self._install_signal_handlers()
        try:
            self._sensor.start()
            self._link = self._link_factory(self._sink)
            self._publisher = Publisher(
                self._link, topic=self.config.topic, qos=self.config.qos, spool=self._spool
            )
            self._report_start()
            self._link.start()
            self.schedule = TickSchedule.starting_after(self._monotonic())
            self._ride(self.schedule)
            self._finish(self.schedule)
        finally:
            if self._link is not None:
                self._link.stop()
            self._sensor.close()
            restore()

    def _sink(self, event: LinkEvent) -> None:
        """Take an event from an SDK thread; never blocks."""
        with self._deferral:  # held for an instant, never while handling anything
            if not self._eager and isinstance(event, PublishDone):
                self._deferred.append(event)
                return
        self._events.put(event)

    def _handle_deferred(self) -> None:
        """Handle the completions put aside; decide whether the next ones wake the loop."""
        while True:
            with self._deferral:
                if not self._deferred:
                    self._eager = self._stop is not None or self.publisher.backlog
                    return
                event = self._deferred.popleft()
            self._handle(event)

    def _ride(self, schedule: TickSchedule) -> None:
        prepared: str | None = None
        while self._stop is None:
            self._handle_deferred()
            now = self._monotonic()
            if prepared is None:
                # Only a durable append (see Publisher.durable_needed) is slow enough to be done
                # ahead of the deadline. The PUBACK of the last message, expected any moment, is
                # not waited for: one wake-up a second, not two, on a healthy link.
                publisher = self.publisher
                slow = publisher.spool_depth > 0 and (not publisher.connected or publisher.backlog)
                lead = self._lead if slow else 0.0
                tick = schedule.due(now + lead)
                if tick is not None:
                    prepared = self._prepare(tick, schedule.deadline)
                    continue
                wake = schedule.deadline - lead
            elif now >= schedule.deadline:
                self._release(schedule.deadline)
                schedule.advance()
                prepared = None
                continue
            else:
                wake = schedule.deadline
            try:
                event = self._events.get(timeout=wake - now)
            except queue.Empty:
                continue
            self._handle(event)
        if prepared is not None:  # stopped between preparing and the deadline: send it now
            self._release(schedule.deadline)
            schedule.advance()

    def _prepare(self, tick: int, deadline: float) -> str:
        """Read the sensor and spool the message of ``tick``, ahead of its deadline."""
        now = self._monotonic()
        self._reading = self._sensor.read(now)
        # The message is stamped with the deadline it is sent at, not the moment it was made.
        wall_ms = round((self._wall() + deadline - now) * 1000)
        if self._race_start_ms is None:
            self._race_start_ms = wall_ms - tick * 1000
        position = race_position(self._race_start_ms, tick, self.config.race_seconds)
        uuid = self._make(position.event, position.second, position.race_id, wall_ms)
        self._reporter.event(
            "debug",
            "message",
            uuid=uuid,
            race_id=position.race_id,
            second=position.second,
            event=str(position.event),
        )
        return uuid

    def _release(self, deadline: float) -> None:
        """Send the prepared message: at its deadline, unless the loop is late."""
        self.publisher.release()
        self.lateness.add(self._monotonic() - deadline)
        self._reporter.update(self.status)

    def _make(self, event: RideEvent, second: int, race_id: int, wall_ms: int) -> str:
        reading = self._reading
        assert reading is not None
        uuid = uuid4(self._rng)
        payload = self._encoder.encode(
            uuid=uuid,
            event=event,
            device_timestamp=wall_ms,
            second=second,
            race_id=race_id,
            cadence=reading.cadence,
            resistance=reading.resistance,
        )
        self._race = (race_id, second)
        self.publisher.prepare(uuid, payload)
        return uuid

    def _handle(self, event: LinkEvent | StopRequested) -> None:
        publisher = self.publisher
        match event:
            case PublishDone():
                publisher.on_publish_done(event)
                if event.rejected:
                    self._reporter.event("warning", "publish rejected", reason=event.code)
            case Connected():
                self._ever_connected = True
                self._connection = "connected"
                self._last_failure = None
                assert self._link is not None
                self._link.subscribe(self.config.results_topic)
                self._reporter.event(
                    "info",
                    "connected",
                    endpoint=f"{self.config.endpoint}:{self.config.port}",
                    spool_depth=publisher.spool_depth,
                )
                publisher.on_connected()
            case Disconnected():
                publisher.on_disconnected()
                self._connection = "offline"
                if self._stop is None:
                    self._reporter.event("warning", "disconnected", reason=event.code)
            case ConnectionFailed():
                self._connection_failed(event)
            case Subscribed():
                if event.granted:
                    self._reporter.event("info", "subscribed", topic=event.topic)
                else:
                    self._reporter.event(
                        "warning", "subscription refused", topic=event.topic, reason=event.code
                    )
            case Received():
                self._results(event.payload)
            case StopRequested():
                if self._stop is not None:
                    self._abort_drain = True
                self._stop = event.signum

    def _connection_failed(self, event: ConnectionFailed) -> None:
        self._connection = "offline"
        if event.refused and not self._ever_connected and self._stop is None:
            raise CertificateError(event.message)
        now = self._monotonic()
        last = self._last_failure
        if last is None or last[0] != event.code or now - last[1] >= FAILURE_LOG_INTERVAL:
            self._last_failure = (event.code, now)
            level = "error" if event.refused else "warning"
            self._reporter.event(
                level, "connection failed", reason=event.code, detail=event.message
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
        self._standings = standings
        self._reporter.event(
            "info",
            "standings",
            race=standings.race_id,
            place=standings.place,
            riders=standings.riders,
            output=standings.output,
            leader_output=standings.leader_output,
        )

    def _finish(self, schedule: TickSchedule) -> None:
        final_uuid = None
        if self._race_start_ms is not None:
            position = race_position(
                self._race_start_ms, schedule.next_tick, self.config.race_seconds
            )
            # Second 1 next means the last race already ended with its own final message.
            if position.second > 1:
                self._reading = self._sensor.read(self._monotonic())
                wall_ms = int(self._wall() * 1000)
                final_uuid = self._make(RideEvent.FINAL, position.second, position.race_id, wall_ms)
                self.publisher.release()
        self._reporter.event("info", "stopping", signal=self._stop, final_uuid=final_uuid)
        deadline = self._monotonic() + self.config.drain_timeout
        while True:
            self._handle_deferred()
            if self.publisher.settled or self._abort_drain:
                break
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                break
            try:
                event = self._events.get(timeout=remaining)
            except queue.Empty:
                break
            self._handle(event)
        counters = self.publisher.counters
        self._reporter.event(
            "info",
            "stopped",
            produced=counters.produced,
            sent=counters.sent,
            acked=counters.acked,
            retried=counters.retried,
            dropped=counters.dropped,
            rejected=counters.rejected,
            spool_depth=self.publisher.spool_depth,
            missed_ticks=schedule.missed,
            **self.lateness.summary_ms(),
        )

    def status(self) -> AgentStatus:
        """A snapshot for display."""
        config = self.config
        reading = self._reading
        counters = self.publisher.counters
        return AgentStatus(
            name=config.name,
            racer_id=config.racer_id,
            class_id=config.class_id,
            cadence=None if reading is None else reading.cadence,
            resistance=None if reading is None else reading.resistance,
            output=None if reading is None else output(reading.cadence, reading.resistance),
            race_id=None if self._race is None else self._race[0],
            second=None if self._race is None else self._race[1],
            race_seconds=config.race_seconds,
            connection=self._connection,
            qos=config.qos,
            spool_depth=self.publisher.spool_depth,
            sent=counters.sent,
            acked=counters.acked,
            dropped=counters.dropped,
            standings=self._standings,
            lateness_p99_ms=self.lateness.summary_ms()["lateness_p99_ms"],
        )

    def _report_start(self) -> None:
        config = self.config
        self._reporter.event(
            "info",
            "starting",
            endpoint=f"{config.endpoint}:{config.port}",
            tls=config.tls,
            client_id=config.client_id,
            topic=config.topic,
            qos=config.qos,
            racer_id=config.racer_id,
            class_id=config.class_id,
            sensor=config.sensor,
            spool=str(config.spool) if config.qos == 1 else None,
            spool_depth=self.publisher.spool_depth,
            spool_dropped=None if self._spool is None else self._spool.dropped,
        )

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.request_stop(signum)  # SimpleQueue.put is safe in a signal handler

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore
