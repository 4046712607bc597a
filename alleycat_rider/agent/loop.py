"""The rider agent's loop: sensor -> message -> spool -> MQTT, once a second, for months.

One thread does everything that matters: it sends at whole-second deadlines and, between them,
handles what the MQTT client reports (through a queue filled from SDK threads and from signal
handlers, so no SDK callback ever waits for us). On SIGINT or SIGTERM it sends the race's
``final`` message, waits a bounded time for outstanding PUBACKs, stops the client and returns.
The race being ridden is kept beside the spool (:mod:`alleycat_rider.agent.racestate`): an agent
killed and started again continues its race rather than beginning another under the same id.

A broker whose CONNACK allows less than ``--qos`` stops the agent with one line (the spool is
kept): downgrading on the quiet would give up the durability QoS 1 was asked for. A TLS
connection still not up after :data:`TLS_CHECK_AFTER` seconds is checked once with a quick
handshake (:mod:`alleycat_rider.tlscheck`) that says which side refuses the other.
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

from alleycat_rider.agent.display import AgentStatus, Reporter
from alleycat_rider.agent.publisher import Publisher
from alleycat_rider.agent.racestate import KeptRace, RaceState
from alleycat_rider.agent.schedule import LatenessWindow, TickSchedule
from alleycat_rider.agent.spool import Spool
from alleycat_rider.config import RiderConfig
from alleycat_rider.core.message import (
    MessageEncoder,
    RideEvent,
    output,
    race_id,
    race_position,
    uuid4,
)
from alleycat_rider.core.standings import ResultsError, Standings, standings_for
from alleycat_rider.errors import CertificateError, PublishError
from alleycat_rider.mqtt import (
    Connected,
    ConnectionFailed,
    Disconnected,
    EventSink,
    LinkEvent,
    MqttSettings,
    PublishDone,
    Received,
    Subscribed,
)
from alleycat_rider.sensors.base import Reading, Sensor

#: How long before its deadline a message is read and spooled (the spool's fsync takes time, on
#: an SD card tens of milliseconds); it is then sent at the deadline itself.
PREPARE_LEAD = 0.05
#: Repeat a connection failure in the log at most this often (seconds) while it persists.
FAILURE_LOG_INTERVAL = 60.0
#: Seconds without a first TLS connection before a quick handshake checks which side refuses:
#: awscrt says so only after 10 to 30 s. Later than a healthy connection takes, so a healthy
#: start never pays for the check (``ssl`` costs ~5 MB of memory).
TLS_CHECK_AFTER = 2.0
#: Seconds to wait for the MQTT client to stop: after a clean ride, and after an error.
STOP_WAIT = 5.0
STOP_WAIT_AFTER_ERROR = 0.5


@dataclass(frozen=True, slots=True)
class StopRequested:
    """A signal asked the agent to stop."""

    signum: int


@dataclass(frozen=True, slots=True)
class TlsChecked:
    """The quick TLS check is done."""

    refusal: ConnectionFailed | None
    """Which side refused the other, or ``None`` if the handshake did not tell."""


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
        race_state: Where the race being ridden is kept, to continue it after a restart.
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
        race_state: RaceState | None = None,
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
        self._events: queue.SimpleQueue[LinkEvent | StopRequested | TlsChecked] = (
            queue.SimpleQueue()
        )
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
        self._race_state = race_state
        # Ticks of the race continued at the start, before this agent's tick 0.
        self._tick_offset = 0
        self._kept_start_ms: int | None = None
        self._to_keep: KeptRace | None = None
        self._stop: int | None = None
        self._abort_drain = False
        self._ever_connected = False
        self._connection = "connecting"
        self._last_failure: tuple[str, float] | None = None
        self._last_publish_failure: tuple[str, float] | None = None
        self._last_rejection: tuple[str, float] | None = None
        self._tls_check_at: float | None = None
        self._reading: Reading | None = None
        self._race: tuple[int, int] | None = None
        self._standings: Standings | None = None

    @property
    def stop_signal(self) -> int | None:
        """The signal that stopped the ride (``signal.SIGINT`` for Ctrl-C), if one did."""
        return self._stop

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
        failed = True
        try:
            self._sensor.start()
            self._link = self._link_factory(self._sink)
            self._publisher = Publisher(
                self._link,
                topic=self.config.topic,
                qos=self.config.qos,
                spool=self._spool,
                monotonic=self._monotonic,
            )
            self._report_start()
            self._link.start()
            if self.config.tls:
                self._tls_check_at = self._monotonic() + TLS_CHECK_AFTER
            self.schedule = TickSchedule.starting_after(self._monotonic())
            self._ride(self.schedule)
            self._finish(self.schedule)
            failed = False
        finally:
            if self._link is not None:
                # After a refusal there is nothing left to send: the user's one line should not
                # wait for a TLS handshake the SDK holds open for up to 30 s.
                self._link.stop(timeout=STOP_WAIT_AFTER_ERROR if failed else STOP_WAIT)
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
            if self._tls_check_at is not None and now >= self._tls_check_at:
                self._start_tls_check()
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

    def _start_tls_check(self) -> None:
        self._tls_check_at = None
        if self._ever_connected:
            return
        from alleycat_rider.tlscheck import start_tls_check  # only now: ssl costs memory

        config = self.config
        settings = MqttSettings(
            endpoint=config.endpoint,
            port=config.port,
            client_id=config.client_id,
            cert=config.cert,
            key=config.key,
            ca=config.ca,
        )
        start_tls_check(settings, lambda refusal: self._events.put(TlsChecked(refusal)))

    def _prepare(self, tick: int, deadline: float) -> str:
        """Read the sensor and spool the message of ``tick``, ahead of its deadline."""
        now = self._monotonic()
        self._reading = self._sensor.read(now)
        # The message is stamped with the deadline it is sent at, not the moment it was made.
        wall_ms = round((self._wall() + deadline - now) * 1000)
        race_seconds = self.config.race_seconds
        if self._race_start_ms is None:
            self._race_start_ms = self._first_race_start(tick, wall_ms)
        ticks = tick + self._tick_offset
        position = race_position(self._race_start_ms, ticks, race_seconds)
        start_ms = self._race_start_ms + ticks // race_seconds * race_seconds * 1000
        if start_ms != self._kept_start_ms and self._race_state is not None:
            self._to_keep = self._kept_race(start_ms)  # written once the message is sent
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
        kept = self._to_keep
        if kept is not None and self._race_state is not None:
            self._race_state.keep(kept)
            self._kept_start_ms = kept.start_ms
            self._to_keep = None

    def _kept_race(self, start_ms: int) -> KeptRace:
        config = self.config
        return KeptRace(
            racer_id=config.racer_id,
            class_id=config.class_id,
            race_seconds=config.race_seconds,
            start_ms=start_ms,
        )

    def _first_race_start(self, tick: int, wall_ms: int) -> int:
        """The start of the race ``tick`` rides in: the kept race if it is this rider's and not
        over (continued where the clock is), else a race beginning at this tick."""
        kept = None if self._race_state is None else self._race_state.recall()
        elapsed = None
        if kept is not None and kept == self._kept_race(kept.start_ms):
            elapsed = kept.elapsed(wall_ms)
        if kept is None or elapsed is None:
            return wall_ms - tick * 1000
        self._tick_offset = elapsed - tick
        self._kept_start_ms = kept.start_ms
        self._reporter.event(
            "info", "race continued", race_id=race_id(kept.start_ms), second=elapsed + 1
        )
        return kept.start_ms

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

    def _handle(self, event: LinkEvent | StopRequested | TlsChecked) -> None:
        publisher = self.publisher
        match event:
            case PublishDone():
                failed_live = not (event.delivered or event.rejected) and publisher.connected
                publisher.on_publish_done(event)
                if event.rejected:
                    self._publish_rejected(event.code)
                elif failed_live and self._stop is None:
                    self._publish_failed(event.code, publisher.resume_in)
            case Connected():
                self._check_maximum_qos(event.maximum_qos)
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
            case TlsChecked(refusal=refusal):
                if refusal is None:
                    self._reporter.event("debug", "tls check told nothing")
                elif not self._ever_connected:
                    self._connection_failed(refusal)
            case StopRequested():
                if self._stop is not None:
                    self._abort_drain = True
                self._stop = event.signum

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
        now = self._monotonic()
        last = self._last_publish_failure
        if last is None or last[0] != code or now - last[1] >= FAILURE_LOG_INTERVAL:
            self._last_publish_failure = (code, now)
            self._reporter.event(
                "warning", "publish failed", reason=code, retry_in_s=round(retry_in, 1)
            )

    def _publish_rejected(self, code: str) -> None:
        """Log a publish the broker refused (not authorized on the topic, say): once a minute per
        reason, with the number refused so far; every one is counted."""
        now = self._monotonic()
        last = self._last_rejection
        if last is None or last[0] != code or now - last[1] >= FAILURE_LOG_INTERVAL:
            self._last_rejection = (code, now)
            self._reporter.event(
                "warning",
                "publish rejected",
                reason=code,
                rejected=self.publisher.counters.rejected,
                topic=self.config.topic,
            )

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
        # Redrawn now, not at the next second: the panel shows the leader the log just gave.
        self._reporter.update(self.status)

    def _finish(self, schedule: TickSchedule) -> None:
        final_uuid = None
        if self._race_start_ms is not None:
            position = race_position(
                self._race_start_ms,
                schedule.next_tick + self._tick_offset,
                self.config.race_seconds,
            )
            # Second 1 next means the last race already ended with its own final message.
            if position.second > 1:
                self._reading = self._sensor.read(self._monotonic())
                wall_ms = int(self._wall() * 1000)
                final_uuid = self._make(RideEvent.FINAL, position.second, position.race_id, wall_ms)
                self.publisher.release()
            if self._race_state is not None:
                self._race_state.forget()  # its final is sent: a restart begins a new race
        self._reporter.event("info", "stopping", signal=self._stop, final_uuid=final_uuid)
        deadline = self._monotonic() + self.config.drain_timeout
        while True:
            self._handle_deferred()
            if self.publisher.settled or self._abort_drain:
                break
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                break
            # Sends paused after a failed publish resume within the drain, if it lasts long enough.
            paused = self.publisher.resume_in
            try:
                event = self._events.get(timeout=min(remaining, paused) if paused else remaining)
            except queue.Empty:
                self.publisher.pump()
                continue
            self._handle(event)
        counters = self.publisher.counters
        self._reporter.event(
            "info",
            "stopped",
            produced=counters.produced,
            sent=counters.sent,
            acked=counters.acked,
            retried=counters.retried,
            failed=counters.failed,
            dropped=counters.dropped,
            rejected=counters.rejected,
            spool_depth=self.publisher.spool_depth,
            in_memory=0 if self._spool is None else self._spool.in_memory,
            unspooled=0 if self._spool is None else self._spool.unspooled,
            missed_ticks=schedule.missed,
            **self.lateness.summary_ms(),
            **self._sensor.stats.summary(),
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
            in_memory=0 if self._spool is None else self._spool.in_memory,
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
