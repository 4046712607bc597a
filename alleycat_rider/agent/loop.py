"""The rider agent's loop: sensor -> message -> spool -> MQTT, once a second, for months.

One thread does everything that matters: it sends at whole-second deadlines and, between them,
handles what the MQTT client reports (:mod:`~alleycat_rider.agent.inbox`, filled from SDK threads
and signal handlers, so no SDK callback ever waits for us; :mod:`~alleycat_rider.agent.linkstate`
says what each event means). On SIGINT or SIGTERM it sends the race's ``final`` message, waits
a bounded time for outstanding PUBACKs, stops the client and returns. The races ridden are
kept beside the spool (:mod:`~alleycat_rider.agent.raceclock`): an agent killed and started
again continues its race rather than beginning another under the same id.

A broker whose CONNACK allows less than ``--qos`` stops the agent with one line (the spool is
kept): downgrading on the quiet would give up the durability QoS 1 was asked for. A TLS
connection still not up after :data:`TLS_CHECK_AFTER` seconds is checked once with a quick
handshake (:mod:`alleycat_rider.tlscheck`) that says which side refuses the other.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from alleycat_rider.agent.display import AgentStatus, Reporter
from alleycat_rider.agent.inbox import Event, Inbox, StopRequested, TlsChecked
from alleycat_rider.agent.linkstate import AgentLink, LinkFactory, LinkState
from alleycat_rider.agent.publisher import Publisher
from alleycat_rider.agent.raceclock import RaceClock
from alleycat_rider.agent.racestate import RaceState
from alleycat_rider.agent.schedule import LatenessWindow, TickSchedule
from alleycat_rider.agent.spool import Spool
from alleycat_rider.config import RiderConfig
from alleycat_rider.core.message import MessageEncoder, RideEvent, output, uuid4
from alleycat_rider.sensors.base import Reading, Sensor

#: How long before its deadline a message is read and spooled (the spool's fsync takes time, on
#: an SD card tens of milliseconds); it is then sent at the deadline itself.
PREPARE_LEAD = 0.05
#: Seconds without a first TLS connection before a quick handshake checks which side refuses:
#: awscrt says so only after 10 to 30 s. Later than a healthy connection takes, so a healthy
#: start never pays for the check (``ssl`` costs ~5 MB of memory).
TLS_CHECK_AFTER = 2.0
#: Seconds to wait for the MQTT client to stop: after a clean ride, and after an error.
STOP_WAIT = 5.0
STOP_WAIT_AFTER_ERROR = 0.5


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
        self._inbox = Inbox()
        self._link: AgentLink | None = None
        self._publisher: Publisher | None = None
        self._link_state: LinkState | None = None
        self.lateness = LatenessWindow()
        self.schedule: TickSchedule | None = None
        self._races = RaceClock(config, race_state, reporter)
        self._stop: int | None = None
        self._abort_drain = False
        self._tls_check_at: float | None = None
        self._reading: Reading | None = None
        self._race: tuple[int, int] | None = None

    @property
    def stop_signal(self) -> int | None:
        """The signal that stopped the ride (``signal.SIGINT`` for Ctrl-C), if one did."""
        return self._stop

    @property
    def publisher(self) -> Publisher:
        """The publisher (available once :meth:`run` started)."""
        assert self._publisher is not None
        return self._publisher

    @property
    def link_state(self) -> LinkState:
        """The link as the agent sees it (available once :meth:`run` started)."""
        assert self._link_state is not None
        return self._link_state

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the running loop to finish (safe from signal handlers and other threads)."""
        self._inbox.put(StopRequested(signum))

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
            self._link = self._link_factory(self._inbox.sink)
            self._publisher = Publisher(
                self._link,
                topic=self.config.topic,
                qos=self.config.qos,
                spool=self._spool,
                monotonic=self._monotonic,
            )
            self._link_state = LinkState(
                self.config,
                publisher=self._publisher,
                subscribe=self._link.subscribe,
                reporter=self._reporter,
                status=self.status,
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

    def _handle_deferred(self) -> None:
        """Handle the completions put aside; decide whether the next ones wake the loop."""
        while (event := self._inbox.deferred(self._completions_wake)) is not None:
            self._handle(event)

    def _completions_wake(self) -> bool:
        return self._stop is not None or self.publisher.backlog

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
            if (event := self._inbox.get(wake - now)) is not None:
                self._handle(event)
        if prepared is not None:  # stopped between preparing and the deadline: send it now
            self._release(schedule.deadline)
            schedule.advance()

    def _start_tls_check(self) -> None:
        self._tls_check_at = None
        if self.link_state.ever_connected:
            return
        from alleycat_rider.tlscheck import start_tls_check  # only now: ssl costs memory

        settings = self.config.mqtt_settings
        start_tls_check(settings, lambda refusal: self._inbox.put(TlsChecked(refusal)))

    def _prepare(self, tick: int, deadline: float) -> str:
        """Read the sensor and spool the message of ``tick``, ahead of its deadline."""
        now = self._monotonic()
        self._reading = self._sensor.read(now)
        # The message is stamped with the deadline it is sent at, not the moment it was made.
        wall_ms = round((self._wall() + deadline - now) * 1000)
        position = self._races.position(tick, wall_ms)
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
        self._races.sent()

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

    def _handle(self, event: Event) -> None:
        match event:
            case TlsChecked(refusal=refusal):
                if refusal is None:
                    self._reporter.event("debug", "tls check told nothing")
                elif not self.link_state.ever_connected:
                    self.link_state.connection_failed(refusal, stopping=self._stop is not None)
            case StopRequested():
                if self._stop is not None:
                    self._abort_drain = True
                self._stop = event.signum
            case _:
                self.link_state.handle(event, stopping=self._stop is not None)

    def _finish(self, schedule: TickSchedule) -> None:
        final_uuid = None
        position = self._races.final_position(schedule.next_tick)
        if position is not None:
            # Second 1 next means the last race already ended with its own final message.
            if position.second > 1:
                self._reading = self._sensor.read(self._monotonic())
                wall_ms = int(self._wall() * 1000)
                final_uuid = self._make(RideEvent.FINAL, position.second, position.race_id, wall_ms)
                self.publisher.release()
            self._races.forget()  # its final is sent: a restart begins a new race
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
            event = self._inbox.get(min(remaining, paused) if paused else remaining)
            if event is None:
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
            connection=self.link_state.connection,
            qos=config.qos,
            spool_depth=self.publisher.spool_depth,
            in_memory=0 if self._spool is None else self._spool.in_memory,
            sent=counters.sent,
            acked=counters.acked,
            dropped=counters.dropped,
            standings=self.link_state.standings,
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
