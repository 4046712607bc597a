"""The run loop: riders produce, the producer batches, the dispatcher sends, the clock moves.

:class:`Simulation` wires a fleet, a producer and a sink together and drives them with a clock, so
the same code runs in real time, compressed time and virtual time. It stops by itself when every
message is delivered or dropped; Ctrl-C stops generation and drains what is left for a bounded
time, counting the rest as dropped.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from simulator.engine.aggregation import PER_SECOND, BatchingKind, BatchingMode, BatchingStage
from simulator.engine.batching import Record
from simulator.engine.clock import Clock, VirtualClock
from simulator.engine.counters import RunStats, StatsSnapshot
from simulator.engine.dispatch import Dispatcher, InlineDispatcher
from simulator.engine.fleet import Fleet, FleetConfig
from simulator.engine.keys import KEYLESS, Keyer, PartitionKeyStrategy, RiderKeys, make_keyer
from simulator.engine.producer import Producer, ProducerConfig
from simulator.engine.shards import DEFAULT_SHARD_LIMITS, ShardLimits, ShardRouter
from simulator.engine.sink import RecordDistribution, StreamDescription, StreamSink
from simulator.engine.source import RecordSource
from simulator.errors import FatalSinkError, RetryableSinkError, SimulatorError

#: The finest step the loop takes for a deadline (a flush, a backoff, a held record's hold).
DEADLINE_STEP = 0.005


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationConfig:
    """One simulated run."""

    fleet: FleetConfig = field(default_factory=FleetConfig)
    duration: int = 300
    """Seconds of riding; every rider sends one message per second."""
    strategy: PartitionKeyStrategy = PartitionKeyStrategy.RANDOM
    producer: ProducerConfig = field(default_factory=ProducerConfig)
    seed: int | None = None
    tick: float = 0.25
    """Simulation seconds between passes of the loop when nothing else is due."""
    drain_timeout: float = 10.0
    """After Ctrl-C, simulation seconds allowed to send what is buffered."""

    def __post_init__(self) -> None:
        if self.duration < 1:
            raise ValueError("the duration must be at least one second")


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended."""

    stats: RunStats
    interrupted: bool
    error: SimulatorError | None
    """The error that stopped the run early, if any."""


class Simulation:
    """A fleet writing into one stream, driven by one clock.

    Args:
        config: the run.
        sink: the stream.
        clock: real, scaled or virtual time.
        dispatcher: how requests are sent (inline by default).
        batching: how messages become Kinesis records.
        messages: makes the message source from the run's keyer, in place of a fresh fleet
            (``alleycat compare`` replays one recorded workload under every strategy).
    """

    def __init__(
        self,
        config: SimulationConfig,
        sink: StreamSink,
        clock: Clock,
        *,
        dispatcher: Dispatcher | None = None,
        batching: BatchingMode = PER_SECOND,
        messages: Callable[[Keyer], RecordSource] | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.clock = clock
        self.stream: StreamDescription = sink.describe()
        self.dispatcher = dispatcher or InlineDispatcher(sink, clock)
        rng = random.Random(config.seed)
        fleet_rng = random.Random(rng.getrandbits(64))
        self.start = clock.now()
        self.started_wall = time.monotonic()
        count = config.fleet.riders
        keyless = config.strategy in KEYLESS
        if keyless and self.stream.distribution is not RecordDistribution.AUTO:
            raise ValueError(
                f"--partition-key {config.strategy.value} sends no key: the stream must spread "
                "records itself (an on-demand stream with service-managed distribution)"
            )
        if keyless and batching.kind is not BatchingKind.PER_SECOND:
            raise ValueError(
                f"--partition-key {config.strategy.value} cannot be used with --batching "
                f"{batching.label}: consumers may drop aggregated records on such a stream"
            )
        self._keyer = keyer = make_keyer(
            config.strategy,
            racer_ids=[100 + i for i in range(count)],
            class_ids=[i % config.fleet.classes + 1 for i in range(count)],
            shards=self.stream.shards,
            rng=random.Random(rng.getrandbits(64)),
        )
        #: Where the ride messages come from: a fresh fleet, or ``messages(keyer)``.
        self.fleet: RecordSource = (
            Fleet(
                config.fleet, start=self.start, duration=config.duration, keyer=keyer, rng=fleet_rng
            )
            if messages is None
            else messages(keyer)
        )
        #: The messages packed into Kinesis records as ``batching`` says.
        self.batching = BatchingStage(self.fleet, batching, self.stream.shards)
        self.stats = RunStats([s.shard_id for s in self.stream.shards])
        self._known_shards: set[str | None] = {None, *[s.shard_id for s in self.stream.shards]}
        self.rekeyed = 0
        """Times ``balanced`` keys were dealt again over the shards of a split."""
        router, pace_limits = self._routing(self.stream)
        self.producer = Producer(
            config.producer,
            self.stats,
            random.Random(rng.getrandbits(64)),
            router,
            expire_in_flight=not isinstance(clock, VirtualClock),
            pace_limits=pace_limits,
        )
        self._stop = threading.Event()
        self.interrupted = False

    @staticmethod
    def _routing(stream: StreamDescription) -> tuple[ShardRouter | None, ShardLimits]:
        """How the producer predicts shards: by key, or (keys ignored) one stream-wide pace."""
        if stream.distribution is RecordDistribution.AUTO:
            count = len(stream.shards)
            limits = ShardLimits(
                records_per_second=DEFAULT_SHARD_LIMITS.records_per_second * count,
                bytes_per_second=DEFAULT_SHARD_LIMITS.bytes_per_second * count,
            )
            return None, limits
        return ShardRouter(stream.shards), DEFAULT_SHARD_LIMITS

    def _resharded(self, shard_ids: list[str | None]) -> None:
        """A result named a shard not seen before: the stream split; follow its new map."""
        self._known_shards.update(shard_ids)
        stream = self.sink.describe()
        if stream.shards == self.stream.shards:
            return
        self.stream = stream
        self._known_shards.update(s.shard_id for s in stream.shards)
        self.producer.reshard(*self._routing(stream))
        if isinstance(self._keyer, RiderKeys) and self._keyer.reshard(stream.shards):
            self.rekeyed += 1

    def stop(self) -> None:
        """Ask the run to stop generating and drain (safe from another thread)."""
        self._stop.set()

    def snapshot(self) -> StatsSnapshot:
        """The run's figures now, for a dashboard."""
        return self.stats.snapshot(
            now=self.clock.now(),
            start=self.start,
            duration=self.config.duration,
            in_flight_requests=self.dispatcher.in_flight,
            buffered=self.producer.buffered,
            leaderboard=self.fleet.leaderboard(),
        )

    def run(self, on_pass: Callable[[Simulation], None] | None = None) -> RunResult:
        """Run until every message is delivered or dropped; ``on_pass`` is called each pass."""
        error: SimulatorError | None = None
        drain_until: float | None = None
        while True:
            try:
                if self._stop.is_set() and drain_until is None:
                    self.interrupted = True
                    now = self.clock.now()
                    drain_until = now + self.config.drain_timeout
                    # Messages a batching stage holds are sent too, not lost.
                    held: list[Record] = []
                    self.batching.flush(now, held)
                    self.producer.add_many(held, now)
                error = self._settle()
                if error is not None:
                    break
                if not self._pass(drain_until):
                    break
                if on_pass is not None:
                    on_pass(self)
            except KeyboardInterrupt:
                if drain_until is not None:
                    break  # A second Ctrl-C: stop draining.
                self._stop.set()
        self._finish()
        return RunResult(self.stats, self.interrupted, error)

    def _settle(self) -> SimulatorError | None:
        """Apply finished requests; return the first error that must stop the run."""
        fatal: SimulatorError | None = None
        for done in self.dispatcher.completions():
            if done.outcome is not None:
                self.producer.settle(
                    done.batch, done.outcome, done.finished_at, accepted_at=done.sent_at
                )
                if not self._known_shards.issuperset(done.outcome.shard_ids):
                    self._resharded(done.outcome.shard_ids)
            elif isinstance(done.error, FatalSinkError):
                self.producer.drop_request(done.batch, done.finished_at)
                fatal = fatal or done.error
            else:
                unknown = isinstance(done.error, RetryableSinkError) and done.error.outcome_unknown
                self.producer.fail_request(done.batch, done.finished_at, outcome_unknown=unknown)
        return fatal

    def _pass(self, drain_until: float | None) -> bool:
        """One pass of the loop; False when the run is over."""
        clock, source, producer, dispatcher = (
            self.clock,
            self.batching,
            self.producer,
            self.dispatcher,
        )
        now = clock.now()
        generating = drain_until is None and not source.done
        draining = not generating
        # A batch already due leaves before new records are made: the request is then in
        # flight while the CPU makes the next ones, not after.
        self._send(now, draining)
        if generating:
            records: list[Record] = []
            source.emit_until(now, records, producer.room())
            producer.add_many(records, now)
            self._send(now, draining)
        if draining and producer.pending == 0 and dispatcher.in_flight == 0:
            return False
        if drain_until is not None and now >= drain_until:
            return False
        if dispatcher.in_flight and (
            not producer.room() or (not dispatcher.has_capacity and not generating)
        ):
            # Nothing can move until a request completes. Waiting here, not on the clock, also
            # keeps a virtual clock (--fast) from racing ahead while requests are in flight.
            dispatcher.wake.wait(0.5)
            return True
        if dispatcher.in_flight and isinstance(dispatcher, InlineDispatcher):
            return True
        # Riders' messages are made a tick at a time (each keeps its own timestamp); held
        # records and the producer's deadlines are kept to within a few milliseconds.
        emission = source.next_due if generating else None
        due = [t for t in (source.next_close, producer.next_deadline(), drain_until) if t]
        if not due and emission is None and dispatcher.in_flight:
            dispatcher.wake.wait(0.5)  # only completions are left to wait for
            return True
        wake_at = (
            now + self.config.tick if emission is None else max(emission, now + self.config.tick)
        )
        if due:
            wake_at = min(wake_at, max(min(due), now + DEADLINE_STEP))
        clock.sleep_until(wake_at, dispatcher.wake if dispatcher.in_flight else None)
        return True

    def _send(self, now: float, draining: bool) -> None:
        """Submit the batches that are due, as far as the dispatcher has room."""
        if not self.dispatcher.has_capacity:
            self.producer.expire(now)  # take_batch expires what is due; it is not called now
        while self.dispatcher.has_capacity:
            batch = self.producer.take_batch(now, drain=draining)
            if batch is None:
                break
            self.dispatcher.submit(batch, now)

    def _finish(self) -> None:
        """Stop the dispatcher and count whatever is left as dropped."""
        try:
            self.dispatcher.close()
        except KeyboardInterrupt:
            pass
        self._settle()
        self.producer.abandon()
        self.producer.abandon_in_flight()
