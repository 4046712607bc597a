"""The fleet over MQTT: every virtual rider on its own MQTT 5 connection, as real bikes are.

The riders are the simulator's own (:class:`~simulator.engine.fleet.Fleet`: the rider model,
phases, races, ``--seed``), and each message is the exact ride message. Rider ``i`` connects as
``<prefix><racerId>`` with the fleet's certificate and publishes its message once a second on the
ride topic, QoS 0 or 1. Connections:

- are opened at most ``connect_rate`` a second (IoT Core limits CONNECTs per account), each
  reconnecting by itself with backoff when it drops (the agent's adapter,
  :class:`~alleycat_rider.mqtt.MqttLink`);
- never publish more than :data:`MAX_PUBLISHES_PER_SECOND` a second (IoT Core's limit per
  connection) as the broker counts them, on arrival: sends are paced at :data:`PACE` a second
  with at most :data:`MAX_IN_FLIGHT_PER_CONNECTION` unacknowledged, resends after a reconnect
  included.

Nothing is lost silently. A QoS 1 message is acknowledged (a PUBACK), or held while its rider is
offline and sent again on reconnect (at most ``backlog`` per rider; beyond that the oldest is
dropped and counted), or still in flight or held at the end (counted). A QoS 0 message is sent
without acknowledgement, or dropped (counted) when its rider is not connected::

    generated = acked + sent_unacknowledged + dropped + in_flight + held
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from alleycat_rider.mqtt import (
    Connected,
    ConnectionFailed,
    Disconnected,
    LinkEvent,
    MqttLink,
    MqttSettings,
    PublishDone,
    make_tls_context,
)
from simulator.engine.batching import Record
from simulator.engine.counters import LatencyHistogram
from simulator.engine.fleet import FIRST_RACER_ID, Fleet

#: IoT Core's limit of publishes per second on one connection.
MAX_PUBLISHES_PER_SECOND = 100
#: Publishes a connection may have unacknowledged at once. The broker counts publishes when they
#: arrive, not when they were handed to the client: sends paced at ``PACE`` a second, plus at
#: most this many sent earlier and still on their way, keep any second of arrivals within
#: :data:`MAX_PUBLISHES_PER_SECOND` however late the network or the client's event loop is.
MAX_IN_FLIGHT_PER_CONNECTION = 10
#: Publishes handed to one connection in any one second.
PACE = MAX_PUBLISHES_PER_SECOND - MAX_IN_FLIGHT_PER_CONNECTION
#: Connections opened per second by default: well under IoT Core's per-account CONNECT limit.
DEFAULT_CONNECT_RATE = 100
#: QoS 1 messages held per rider while it is offline (ten minutes of riding).
DEFAULT_BACKLOG = 600
#: How long the fleet waits at the end for what is in flight.
DRAIN_SECONDS = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttFleetOptions:
    """Where the fleet connects and how it publishes."""

    settings: MqttSettings
    """The broker and the fleet's certificate; ``client_id`` is replaced per rider."""
    topic: str = "alleycat-publish"
    qos: int = 1
    client_id_prefix: str = "alleycat-"
    connect_rate: float = DEFAULT_CONNECT_RATE
    backlog: int = DEFAULT_BACKLOG


@dataclass(slots=True)
class MqttCounts:
    """What the fleet did; see the module doc for how the counts add up."""

    generated: int = 0
    published: int = 0
    """Publishes handed to a connection (resends included)."""
    acked: int = 0
    sent_unacknowledged: int = 0
    """QoS 0 messages written to a connection."""
    resent: int = 0
    failed: int = 0
    """Publishes that failed (a lost connection, a rejecting broker); QoS 1 ones are resent."""
    rejected: int = 0
    """PUBACKs with an error reason (e.g. NOT_AUTHORIZED): dropped, not resent."""
    dropped: int = 0
    connects: int = 0
    connect_failures: int = 0
    reconnects: int = 0
    disconnects: int = 0

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class _Rider:
    index: int
    link: MqttLink | None = None
    connected: bool = False
    ever_connected: bool = False
    connect_started: float = 0.0
    held: deque[Record] = field(default_factory=deque)
    sent_at: deque[float] = field(default_factory=lambda: deque(maxlen=PACE))
    """When its last publishes went out: at most :data:`PACE` in any one second."""
    in_flight: int = 0
    """Its publishes not yet acknowledged (or failed)."""


class MqttFleet:
    """Runs a :class:`Fleet` over one MQTT connection per rider; see the module doc.

    Args:
        fleet: The riders and their schedule (its clock is the wall clock).
        options: Where and how to publish.
        monotonic: The clock for rates.
        wall: Epoch seconds, the fleet's schedule.
        make_link: Builds a connection (injectable for tests of the bookkeeping); by default
            an :class:`MqttLink` on one TLS context shared by every rider (the fleet's one
            certificate: its key and trust store loaded once, not once per connection).

    Raises:
        CertificateError: the fleet's certificate, key or CA cannot be used.
    """

    def __init__(
        self,
        fleet: Fleet,
        options: MqttFleetOptions,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        make_link: Callable[[MqttSettings, Callable[[LinkEvent], None]], MqttLink] | None = None,
    ) -> None:
        if make_link is None:
            shared = None if options.settings.cert is None else make_tls_context(options.settings)

            def make_link(settings: MqttSettings, sink: Callable[[LinkEvent], None]) -> MqttLink:
                return MqttLink(settings, sink, tls_context=shared)

        self.fleet = fleet
        self.options = options
        self._monotonic = monotonic
        self._wall = wall
        self._make_link = make_link
        self.riders = [_Rider(i) for i in range(fleet.config.riders)]
        self.counts = MqttCounts()
        self.latency = LatencyHistogram()
        """Publish to PUBACK, milliseconds."""
        self.connect_latency = LatencyHistogram()
        """Start of a connection to its CONNACK, milliseconds."""
        self._holding: set[int] = set()
        """Riders holding messages for when they are connected."""
        self._events: queue.SimpleQueue[tuple[int, LinkEvent]] = queue.SimpleQueue()
        self._in_flight: dict[int, tuple[int, Record, float]] = {}
        self._tokens = 0
        self._opened = 0
        self._connect_budget = 0.0
        self._last_budget_at = monotonic()
        self.stopped = threading.Event()
        self.failures: list[str] = []
        """The distinct reasons connections failed, first seen first."""

    @property
    def open_connections(self) -> int:
        return sum(1 for r in self.riders if r.connected)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def held(self) -> int:
        return sum(len(self.riders[i].held) for i in self._holding)

    def run(self) -> None:
        """Ride until the fleet is done or :attr:`stopped` is set, then drain and disconnect."""
        try:
            while not self.stopped.is_set() and not self.fleet.done:
                self.step()
                self.stopped.wait(0.005)
            self._drain()
        finally:
            self.close()

    def step(self) -> None:
        """One pass: open connections, take events, publish what is due."""
        now = self._monotonic()
        self._open_connections(now)
        self._take_events()
        due: list[Record] = []
        self.fleet.emit_until(self._wall(), due, 100_000)
        self.counts.generated += len(due)
        for record in due:
            self._offer(self.riders[record.rider], record, now)
        self._send_all_held(now)

    def _send_all_held(self, now: float) -> None:
        """Send what riders hold, for those connected again (only riders holding any are seen)."""
        for index in list(self._holding):
            rider = self.riders[index]
            if rider.connected:
                self._send_held(rider, now)

    def _open_connections(self, now: float) -> None:
        if self._opened >= len(self.riders):
            return
        rate = self.options.connect_rate
        self._connect_budget = min(rate, self._connect_budget + (now - self._last_budget_at) * rate)
        self._last_budget_at = now
        while self._connect_budget >= 1 and self._opened < len(self.riders):
            rider = self.riders[self._opened]
            self._opened += 1
            self._connect_budget -= 1
            client_id = f"{self.options.client_id_prefix}{FIRST_RACER_ID + rider.index}"
            settings = replace(self.options.settings, client_id=client_id)
            rider.link = self._make_link(settings, self._sink_for(rider.index))
            rider.link.start()
            # Read the clock anew: a step that opens many connections takes a while.
            rider.connect_started = self._monotonic()

    def _sink_for(self, index: int) -> Callable[[LinkEvent], None]:
        """Rider ``index``'s events, onto the one queue (called from SDK threads)."""
        events = self._events
        return lambda event: events.put((index, event))

    def _take_events(self) -> None:
        while True:
            try:
                index, event = self._events.get_nowait()
            except queue.Empty:
                return
            now = self._monotonic()  # latencies end when the event is taken, not at the step
            rider = self.riders[index]
            match event:
                case PublishDone(token=token, delivered=delivered, rejected=rejected, code=code):
                    self._done(rider, token, delivered, rejected, code, now)
                case Connected():
                    rider.connected = True
                    if rider.ever_connected:
                        self.counts.reconnects += 1
                    else:
                        self.counts.connects += 1
                        self.connect_latency.add((now - rider.connect_started) * 1000)
                    rider.ever_connected = True
                case ConnectionFailed(message=message):
                    self.counts.connect_failures += 1
                    if message not in self.failures and len(self.failures) < 5:
                        self.failures.append(message)
                case Disconnected():
                    if rider.connected:
                        self.counts.disconnects += 1
                    rider.connected = False

    def _done(
        self, rider: _Rider, token: int, delivered: bool, rejected: bool, code: str, now: float
    ) -> None:
        entry = self._in_flight.pop(token, None)
        if entry is None:
            return
        _index, record, sent_at = entry
        rider.in_flight -= 1
        if delivered:
            if self.options.qos == 1:
                self.counts.acked += 1
                self.latency.add((now - sent_at) * 1000)
            else:
                self.counts.sent_unacknowledged += 1
            return
        self.counts.failed += 1
        if rejected or self.options.qos == 0:
            if rejected:
                self.counts.rejected += 1
            self.counts.dropped += 1
            return
        self._hold(rider, record)  # lost with its connection: sent again on reconnect

    def _offer(self, rider: _Rider, record: Record, now: float) -> None:
        if rider.connected and not rider.held and self._may_publish(rider, now):
            self._publish(rider, record, now)
        elif self.options.qos == 1:
            self._hold(rider, record)
        else:
            self.counts.dropped += 1  # QoS 0 with no connection: nothing to send it on

    def _hold(self, rider: _Rider, record: Record) -> None:
        if len(rider.held) >= self.options.backlog:
            rider.held.popleft()
            self.counts.dropped += 1
        rider.held.append(record)
        self._holding.add(rider.index)

    def _send_held(self, rider: _Rider, now: float) -> None:
        while rider.held and self._may_publish(rider, now):
            self.counts.resent += 1
            self._publish(rider, rider.held.popleft(), now)
        if not rider.held:
            self._holding.discard(rider.index)

    def _may_publish(self, rider: _Rider, now: float) -> bool:
        if rider.in_flight >= MAX_IN_FLIGHT_PER_CONNECTION:
            return False
        recent = rider.sent_at
        return len(recent) < PACE or now - recent[0] >= 1.0

    def _publish(self, rider: _Rider, record: Record, now: float) -> None:
        assert rider.link is not None
        self._tokens += 1
        token = self._tokens
        self._in_flight[token] = (rider.index, record, self._monotonic())
        rider.sent_at.append(now)
        rider.in_flight += 1
        self.counts.published += 1
        try:
            rider.link.publish(self.options.topic, record.data, self.options.qos, token)
        except Exception:  # a client that cannot take it now: as a failed publish
            self._in_flight.pop(token, None)
            rider.in_flight -= 1
            self.counts.failed += 1
            if self.options.qos == 1:
                self._hold(rider, record)
            else:
                self.counts.dropped += 1

    def _drain(self) -> None:
        deadline = self._monotonic() + DRAIN_SECONDS
        while (self._in_flight or self.held) and self._monotonic() < deadline:
            now = self._monotonic()
            self._take_events()
            self._send_all_held(now)
            time.sleep(0.01)
        self._take_events()

    def close(self) -> None:
        """Disconnect every rider."""
        for rider in self.riders:
            if rider.link is not None:
                try:
                    rider.link.stop(timeout=1.0)
                except Exception:  # a client already gone
                    pass
                rider.link = None
            rider.connected = False

    def summary(self) -> dict[str, Any]:
        """Everything counted, for ``--json`` and the summary table."""
        counts = self.counts.to_dict()
        return {
            "via": "mqtt",
            "qos": self.options.qos,
            "riders": len(self.riders),
            **counts,
            "in_flight": self.in_flight,
            "held": self.held,
            "open_connections": self.open_connections,
            "connect_failure_reasons": list(self.failures),
            "puback_latency_ms": {
                "p50": self.latency.percentile(50),
                "p95": self.latency.percentile(95),
                "p99": self.latency.percentile(99),
            },
            "connect_ms": {
                "p50": self.connect_latency.percentile(50),
                "p99": self.connect_latency.percentile(99),
            },
        }
