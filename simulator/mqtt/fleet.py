"""The fleet over MQTT: every virtual rider on its own MQTT 5 connection, as real bikes are.

The riders are the simulator's own (:class:`~simulator.engine.fleet.Fleet`: the rider model,
phases, races, ``--seed``), and each message is the exact ride message. Rider ``i`` connects as
``<prefix><racerId>`` with the fleet's certificate and publishes its message once a second on the
ride topic, QoS 0 or 1. The connections are :mod:`simulator.mqtt.wire`'s, all on one event loop
driven by one timer (``client="awscrt"`` gives each rider the rider agent's awscrt client
instead, :class:`~alleycat_rider.mqtt.MqttLink`, for comparison). Connections:

- are opened at most ``connect_rate`` a second (IoT Core limits CONNECTs per account), each
  reconnecting by itself with backoff and jitter when it drops, dealt over the brokers given
  (and the source addresses, when given);
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
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

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
#: First connection attempts under way at once at most: past what the process can handshake,
#: more would only time out and come back as retries (the TLS handshake is the costly part).
MAX_CONNECTING = 100
#: QoS 1 messages held per rider while it is offline (ten minutes of riding).
DEFAULT_BACKLOG = 600
#: How long the fleet waits at the end for what is in flight.
DRAIN_SECONDS = 10.0
#: Locust's request types for what the fleet reports (see :attr:`MqttFleet.report`).
CONNECT, PUBLISH, MESSAGE = "CONNECT", "PUBLISH", "message"
#: Seconds between the fleet's passes over its riders (its one timer).
TICK = 0.01
#: Why a leaving rider's messages were dropped: not acknowledged within :data:`DRAIN_SECONDS`.
LEFT_UNSENT = "its Locust user stopped before the broker acknowledged it"


class FleetLink(Protocol):
    """A rider's connection, as the fleet uses it."""

    def start(self) -> None: ...

    def publish(self, topic: str, payload: bytes, qos: int, token: int) -> None: ...


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
    brokers: tuple[tuple[str, int], ...] = ()
    """``(host, port)`` of each broker, riders dealt over them in turn; none: the settings'."""
    source_addresses: tuple[str, ...] = ()
    """Local addresses to connect from, in turn (past one address's ephemeral ports)."""
    certs_dir: Path | None = None
    """Riders' own certificates (``<client id>.crt/.key``); riders without one use the fleet's."""
    first_rider: int = 0
    """Rider ``i`` is racer ``100 + first_rider + i`` (a Locust worker's block of riders)."""
    client: str = "fleet"
    """``fleet``: :mod:`simulator.mqtt.wire`'s connections; ``awscrt``: an awscrt client each."""


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
    left: int = 0
    """Riders that left before the end (a Locust user stopped): disconnected once what they
    held was acknowledged, or after :data:`DRAIN_SECONDS` with the rest dropped (counted)."""

    def to_dict(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


@dataclass(slots=True)
class _Rider:
    index: int
    link: Any = None
    connected: bool = False
    ever_connected: bool = False
    connect_started: float = 0.0
    attempting: bool = False
    """Its first attempt to connect is under way."""
    held: deque[Record] = field(default_factory=deque)
    sent_at: deque[float] = field(default_factory=lambda: deque(maxlen=PACE))
    """When its last publishes went out: at most :data:`PACE` in any one second."""
    in_flight: int = 0
    """Its publishes not yet acknowledged (or failed)."""
    left: bool = False
    """It leaves (its Locust user stopped): it sends what it holds, then disconnects."""


def _awscrt_links(
    shared: Any,
) -> Callable[[MqttSettings, Callable[[LinkEvent], None]], MqttLink]:
    """Makes a rider's awscrt client, on the fleet's one TLS context (``shared``)."""

    def make_link(settings: MqttSettings, sink: Callable[[LinkEvent], None]) -> MqttLink:
        return MqttLink(settings, sink, tls_context=shared)

    return make_link


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
        self.fleet = fleet
        self.options = options
        self._monotonic = monotonic
        self._wall = wall
        self.riders = [_Rider(i) for i in range(fleet.config.riders)]
        self.peak_riders = len(self.riders)
        self._rng = random.Random()
        self._tls: Any = None
        self.contexts = 0
        """TLS contexts loaded (one per certificate in use)."""
        self._on_loop = make_link is None and options.client == "fleet"
        self._loop: Any = None
        if self._on_loop:
            self._prepare_links()
        elif make_link is None:
            shared = None if options.settings.cert is None else make_tls_context(options.settings)
            self.contexts = 0 if shared is None else 1
            make_link = _awscrt_links(shared)
        self._make_link = make_link
        self.counts = MqttCounts()
        self.latency = LatencyHistogram()
        """Publish to PUBACK, milliseconds."""
        self.connect_latency = LatencyHistogram()
        """Start of a connection to its CONNACK, milliseconds."""
        self._holding: set[int] = set()
        """Riders holding messages for when they are connected."""
        self._events: queue.SimpleQueue[tuple[int, LinkEvent]] = queue.SimpleQueue()
        self._in_flight: dict[int, tuple[Record, float]] = {}
        """Token -> the record and when it was handed to its connection."""
        self._tokens = 0
        self._opened = 0
        self._connect_budget = 0.0
        self.connect_rate = options.connect_rate
        """Connections opened per second at most (Locust's workers each take their share)."""
        self.report: deque[tuple[str, str, float, str | None]] | None = None
        """When set, every CONNECT and PUBLISH outcome and every drop is appended here as
        ``(request type, name, milliseconds, error or None)`` (for Locust's request rows)."""
        self.on_tick: Callable[[], None] | None = None
        """Called on every pass of the loop's timer (a Locust worker grows its fleet there)."""
        self._last_budget_at = monotonic()
        self.connecting = 0
        """Riders whose first attempt to connect is under way (at most :data:`MAX_CONNECTING`)."""
        self.refused: set[int] = set()
        """Riders a broker refused (their certificate, a CONNACK): counted, the others ride on."""
        self.stopped = threading.Event()
        self.failures: list[str] = []
        """The distinct reasons connections failed, first seen first."""
        self._leaving: dict[int, float] = {}
        """Riders leaving -> when to stop waiting for what they hold (see :meth:`leave`)."""

    def _prepare_links(self) -> None:
        """The event loop, the TLS contexts and every rider's link (not started).

        Raises:
            CertificateError: the fleet's certificate, or a rider's own, cannot be used.
        """
        from simulator.mqtt.connect import TlsContexts, new_event_loop

        settings = self.options.settings
        self._tls = None if settings.cert is None else TlsContexts(settings.ca)
        if self._tls is not None:
            assert settings.cert is not None and settings.key is not None
            self._tls.get(settings.cert, settings.key)  # the fleet's: a bad one is said first
        self._loop = new_event_loop()
        try:
            self._link_riders(self.riders)
        except BaseException:
            self._loop.close()
            raise

    def _link_riders(self, riders: list[_Rider]) -> None:
        from simulator.mqtt.wire import make_links

        if not riders:
            return
        options = self.options
        settings = options.settings
        links = make_links(
            self._loop,
            self,
            client_ids=[self.client_id(r.index) for r in riders],
            brokers=self.summary_brokers(),
            sources=list(options.source_addresses),
            settings=settings,
            contexts=self._tls,
            certs_dir=options.certs_dir,
            rng=self._rng,
            first_index=riders[0].index,
        )
        self.contexts = 0 if self._tls is None else len(self._tls)
        for rider, link in zip(riders, links, strict=True):
            rider.link = link

    def grow(self, riders: int) -> None:
        """Ride with ``riders`` riders from now on (more than before: Locust's users joined);
        their connections open at the connect rate. Only on the event loop's thread."""
        added = [_Rider(i) for i in range(len(self.riders), riders)]
        if added:
            self._link_riders(added)
            self.riders.extend(added)
            self.peak_riders = len(self.riders)

    def leave(self, indices: range, now: float) -> None:
        """Riders ``indices`` leave (their Locust user stopped; they make no more messages):
        each sends what it holds, then disconnects with a DISCONNECT; what is still not
        acknowledged after :data:`DRAIN_SECONDS` is dropped and counted. Only on the event
        loop's thread."""
        for index in indices:
            rider = self.riders[index]
            if not rider.left:
                rider.left = True
                self._leaving[index] = now + DRAIN_SECONDS

    def _see_off(self, now: float) -> None:
        """Disconnect the leaving riders that have nothing left to send, or no time left."""
        for index, until in list(self._leaving.items()):
            rider = self.riders[index]
            if (rider.held or rider.in_flight) and now < until:
                continue
            del self._leaving[index]
            self._settled(rider)  # a first attempt under way: it ends here, unreported
            if rider.link is not None:  # what is in flight comes back failed: held, dropped below
                if self._on_loop:
                    rider.link.stop()
                else:
                    rider.link.stop(timeout=1.0)
            rider.connected = False
            self.counts.left += 1
            while rider.held:
                rider.held.popleft()
                self._drop(LEFT_UNSENT)
            self._holding.discard(index)

    def client_id(self, index: int) -> str:
        """Rider ``index``'s MQTT client id."""
        return f"{self.options.client_id_prefix}{FIRST_RACER_ID + self.options.first_rider + index}"

    @property
    def open_connections(self) -> int:
        return sum(1 for r in self.riders if r.connected)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def held(self) -> int:
        return sum(len(self.riders[i].held) for i in list(self._holding))  # read from other threads

    def run(self) -> None:
        """Ride until the fleet is done or :attr:`stopped` is set, then drain and disconnect."""
        if self._on_loop:
            self._run_on_loop()
            return
        try:
            while not self.stopped.is_set() and not self.fleet.done:
                self.step()
                self.stopped.wait(0.005)
            self._drain()
        finally:
            self.close()

    def _run_on_loop(self) -> None:
        """The whole run on the links' event loop, one timer doing every pass (:data:`TICK`)."""
        loop = self._loop
        riders = self.riders
        failure: list[BaseException] = []
        phase = "riding"
        until = next_check = 0.0

        def tick() -> None:
            nonlocal phase, until, next_check
            try:
                now = self._monotonic()
                if self.on_tick is not None:
                    self.on_tick()
                if phase == "riding":
                    if self.stopped.is_set() or self.fleet.done:
                        phase, until = "draining", now + DRAIN_SECONDS
                    else:
                        self.step()
                if phase == "draining":
                    self._send_all_held(now)
                    if not (self._in_flight or self._holding) or now >= until:
                        phase, until = "closing", now + 2.0
                        for rider in riders[: self._opened]:
                            rider.link.stop()
                if phase == "closing":
                    if now >= until or all(r.link.closed for r in riders[: self._opened]):
                        loop.stop()
                        return
                if now >= next_check:
                    next_check = now + 1.0
                    for rider in riders[: self._opened]:
                        rider.link.check(now)
                loop.call_later(TICK, tick)
            except BaseException as exc:  # a defect: end the run, and say so in the thread
                failure.append(exc)
                loop.stop()

        try:
            loop.call_soon(tick)
            loop.run_forever()
        finally:
            for rider in self.riders:
                rider.connected = False
                if rider.link is not None and not rider.link.closed:
                    rider.link.abandon()  # a defect, or a goodbye not finished: none left open
            loop.close()
        if failure:
            raise failure[0]

    def step(self) -> None:
        """One pass: open connections, take events, publish what is due."""
        now = self._monotonic()
        self._open_connections(now)
        if not self._on_loop:
            self._take_events()
        due: list[Record] = []
        self.fleet.emit_until(self._wall(), due, 100_000)
        self.counts.generated += len(due)
        riders = len(self.riders)
        if any(record.rider >= riders for record in due):
            # Riders that joined after this pass grew the fleet (a Locust user, from its thread).
            self.grow(max(record.rider for record in due) + 1)
        for record in due:
            self._offer(self.riders[record.rider], record, now)
        self._send_all_held(now)
        if self._leaving:
            self._see_off(now)

    def _send_all_held(self, now: float) -> None:
        """Send what riders hold, for those connected again (only riders holding any are seen)."""
        for index in list(self._holding):
            rider = self.riders[index]
            if rider.connected:
                self._send_held(rider, now)

    def _open_connections(self, now: float) -> None:
        if self._opened >= len(self.riders):
            return
        rate = self.connect_rate
        self._connect_budget = min(rate, self._connect_budget + (now - self._last_budget_at) * rate)
        self._last_budget_at = now
        while (
            self._connect_budget >= 1
            and self._opened < len(self.riders)
            and self.connecting < MAX_CONNECTING
        ):
            rider = self.riders[self._opened]
            self._opened += 1
            if rider.left:
                continue  # gone before its turn to connect
            self._connect_budget -= 1
            if rider.link is None:
                assert self._make_link is not None
                settings = replace(self.options.settings, client_id=self.client_id(rider.index))
                rider.link = self._make_link(settings, self._sink_for(rider.index))
            self.connecting += 1
            rider.attempting = True
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
            match event:
                case PublishDone(token=token, delivered=delivered, rejected=rejected, code=code):
                    self.publish_done(index, token, delivered, rejected, code)
                case Connected():
                    self.link_connected(index)
                case ConnectionFailed(message=message, refused=refused):
                    self.link_failed(index, message, refused)
                case Disconnected():
                    self.link_lost(index)

    # What the links tell (simulator.mqtt.wire.LinkEvents): on the loop, or from _take_events.

    def link_connected(self, index: int) -> None:
        """Rider ``index`` is connected (again)."""
        now = self._monotonic()  # latencies end when the event is taken, not at the step
        rider = self.riders[index]
        rider.connected = True
        self._settled(rider)
        if rider.ever_connected:
            self.counts.reconnects += 1
        else:
            self.counts.connects += 1
            took = (now - rider.connect_started) * 1000
            self.connect_latency.add(took)
            if self.report is not None:
                self.report.append((CONNECT, "connect", took, None))
        rider.ever_connected = True
        self.refused.discard(index)

    def link_failed(self, index: int, message: str, refused: bool) -> None:
        """An attempt of rider ``index`` failed (it tries again by itself)."""
        self.counts.connect_failures += 1
        self._settled(self.riders[index])
        if self.report is not None:
            self.report.append((CONNECT, "connect", 0.0, message))
        if refused:
            self.refused.add(index)
        if message not in self.failures and len(self.failures) < 5:
            self.failures.append(message)

    def _settled(self, rider: _Rider) -> None:
        """A rider's first attempt ended (connected or failed): another rider may start."""
        if rider.attempting:
            rider.attempting = False
            self.connecting -= 1

    def link_lost(self, index: int) -> None:
        """Rider ``index``'s connection was lost (it reconnects by itself)."""
        rider = self.riders[index]
        if rider.connected:
            self.counts.disconnects += 1
        rider.connected = False

    def publish_done(
        self, index: int, token: int, delivered: bool, rejected: bool, code: str
    ) -> None:
        """A publish of rider ``index`` was acknowledged, written (QoS 0) or failed."""
        entry = self._in_flight.pop(token, None)
        if entry is None:
            return
        record, sent_at = entry
        rider = self.riders[index]
        rider.in_flight -= 1
        took = (self._monotonic() - sent_at) * 1000
        if delivered:
            if self.options.qos == 1:
                self.counts.acked += 1
                self.latency.add(took)
            else:
                self.counts.sent_unacknowledged += 1
            if self.report is not None:
                self.report.append((PUBLISH, self.options.topic, took, None))
            return
        self.counts.failed += 1
        if self.report is not None:
            self.report.append((PUBLISH, self.options.topic, took, code))
        if rejected or self.options.qos == 0:
            if rejected:
                self.counts.rejected += 1
            self._drop(code)
            return
        self._hold(rider, record)  # lost with its connection: sent again on reconnect

    def _offer(self, rider: _Rider, record: Record, now: float) -> None:
        if (
            rider.connected
            and not rider.held
            and rider.in_flight < MAX_IN_FLIGHT_PER_CONNECTION
            and (len(rider.sent_at) < PACE or now - rider.sent_at[0] >= 1.0)
        ):  # _may_publish, inline: every message passes here
            self._publish(rider, record, now)
        elif self.options.qos == 1:
            self._hold(rider, record)
        else:
            self._drop("not connected (QoS 0)")  # nothing to send it on

    def _drop(self, reason: str) -> None:
        self.counts.dropped += 1
        if self.report is not None:
            self.report.append((MESSAGE, "dropped", 0.0, reason))

    def _hold(self, rider: _Rider, record: Record) -> None:
        if len(rider.held) >= self.options.backlog:
            rider.held.popleft()
            self._drop("held too long offline")
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
        self._in_flight[token] = (record, self._monotonic())
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
                self._drop("not connected (QoS 0)")

    def _drain(self) -> None:
        deadline = self._monotonic() + DRAIN_SECONDS
        while (self._in_flight or self.held) and self._monotonic() < deadline:
            now = self._monotonic()
            self._take_events()
            self._send_all_held(now)
            time.sleep(0.01)
        self._take_events()

    def close(self) -> None:
        """Disconnect every rider (their awscrt clients; the loop's links close in the run)."""
        if self._on_loop:
            if not self._loop.is_closed():
                self._loop.close()
            return
        for rider in self.riders:
            if rider.link is not None:
                try:
                    rider.link.stop(timeout=1.0)
                except Exception:  # a client already gone
                    pass
                rider.link = None
            rider.connected = False

    def summary_brokers(self) -> list[tuple[str, int]]:
        """The brokers the riders are dealt over."""
        settings = self.options.settings
        return list(self.options.brokers) or [(settings.endpoint, settings.port)]

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
            "riders_refused": len(self.refused),
            "brokers": [f"{h}:{p}" for h, p in self.summary_brokers()],
            "tls_contexts": self.contexts,
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
