"""A workload recorded once and replayed under any strategy, measured at the stream.

``alleycat compare`` generates the fleet's messages once (:func:`record_workload`) and replays
them, message for message, through a fresh run per strategy or batching mode
(:class:`ReplayFleet`); :class:`MeteredStream` measures each run where Kinesis would see it.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from simulator.engine.batching import Record
from simulator.engine.capacity import DEFAULT_ON_DEMAND_POLICY, CapacityMode, OnDemandPolicy
from simulator.engine.fleet import Fleet, FleetConfig, fleet_messages
from simulator.engine.keys import Keyer
from simulator.engine.shards import LocalStream
from simulator.engine.sink import PutRecordsOutcome, RecordDistribution, StreamDescription

#: Runs start at a race boundary (2026-11-26T20:00:00Z), so every run is the same.
WORKLOAD_START = 1_764_187_200.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """What every strategy or mode is run against."""

    riders: int = 1000
    shards: int = 4
    duration: int = 300
    classes: int = 6
    phase_spread_ms: int = 1000
    """0 synchronises the riders: all send on the whole second."""
    seed: int = 1
    race_seconds: int = 300
    ramp_seconds: int = 0
    """Riders join over this many seconds (0: all at once)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSpec:
    """The built-in stream a run writes to: its capacity mode, and its shards if provisioned."""

    mode: CapacityMode = CapacityMode.PROVISIONED
    shards: int = 4
    """Provisioned shards (an on-demand stream starts as its policy says)."""
    policy: OnDemandPolicy = DEFAULT_ON_DEMAND_POLICY
    auto: bool = False
    """Service-managed distribution (on-demand only)."""

    @property
    def label(self) -> str:
        """``provisioned:4``, ``on-demand``, ``on-demand-advantage``."""
        if self.mode is CapacityMode.PROVISIONED:
            return f"{self.mode.value}:{self.shards}"
        return self.mode.value

    def open(self) -> LocalStream:
        """A fresh built-in stream as specified."""
        distribution = (
            RecordDistribution.AUTO if self.auto else RecordDistribution.USER_PARTITION_KEY
        )
        return LocalStream(
            self.shards, capacity=self.mode, policy=self.policy, distribution=distribution
        )


#: A slice of a recorded workload: timestamps (ms), rider indexes and message bytes.
Chunk = tuple[list[int], list[int], list[bytes]]
#: Seconds of riding recorded at a time, so runs can start before the recording ends.
CHUNK_SECONDS = 10


class RecordedWorkload:
    """The fleet's messages in the order it sends them, complete or still arriving.

    Args:
        workload: what was recorded.
        source: called for the next chunk when a run needs messages not received yet;
            None when every chunk is already here.
    """

    def __init__(self, workload: Workload, source: Callable[[], Chunk] | None = None) -> None:
        self.workload = workload
        self.total = fleet_messages(workload.riders, workload.duration, workload.ramp_seconds)
        self.timestamps_ms: list[int] = []
        self.riders: list[int] = []
        self.data: list[bytes] = []
        self._source = source

    def extend(self, chunk: Chunk) -> None:
        """Append a chunk of messages."""
        self.timestamps_ms += chunk[0]
        self.riders += chunk[1]
        self.data += chunk[2]

    def fetch(self) -> bool:
        """Receive the next chunk; False when everything is here already."""
        if self._source is None or len(self.data) >= self.total:
            return False
        self.extend(self._source())
        return True


def record_workload(
    workload: Workload, on_chunk: Callable[[Chunk], None] | None = None
) -> RecordedWorkload:
    """Generate every message of ``workload`` once, with no key yet.

    Args:
        workload: the fleet and its seed.
        on_chunk: called with each chunk of ``CHUNK_SECONDS`` as soon as it is generated.
    """
    fleet = Fleet(
        FleetConfig(
            riders=workload.riders,
            classes=workload.classes,
            race_seconds=workload.race_seconds,
            phase_spread_ms=workload.phase_spread_ms,
            ramp_seconds=workload.ramp_seconds,
        ),
        start=WORKLOAD_START,
        duration=workload.duration,
        keyer=lambda riders, timestamps_ms: [("-", None)] * len(riders),
        rng=random.Random(workload.seed),
    )
    recorded = RecordedWorkload(workload)
    until = WORKLOAD_START
    while not fleet.done:
        until += CHUNK_SECONDS
        records: list[Record] = []
        fleet.emit_until(until, records, fleet.total)
        chunk = (
            [round(r.generated_at * 1000) for r in records],
            [r.rider for r in records],
            [r.data for r in records],
        )
        recorded.extend(chunk)
        if on_chunk is not None:
            on_chunk(chunk)
    return recorded


class ReplayFleet:
    """Sends a recorded workload again on its original schedule, under a new keyer."""

    def __init__(self, recorded: RecordedWorkload, keyer: Keyer) -> None:
        self._recorded = recorded
        self._keyer = keyer
        self._cursor = 0
        self.total = recorded.total
        self.generated = 0

    @property
    def done(self) -> bool:
        """True once every message has been sent."""
        return self._cursor >= self.total

    @property
    def next_due(self) -> float | None:
        """Simulation time of the next message, or None when done."""
        rec = self._recorded
        while self._cursor >= len(rec.timestamps_ms):
            if not rec.fetch():
                return None
        return rec.timestamps_ms[self._cursor] / 1000

    def emit_until(self, now: float, out: list[Record], limit: int) -> int:
        """Append every message due by ``now`` (at most ``limit``) as a keyed record."""
        rec, keyer, start = self._recorded, self._keyer, self._cursor
        now_ms = now * 1000
        while (not rec.timestamps_ms or rec.timestamps_ms[-1] <= now_ms) and rec.fetch():
            pass
        end = min(bisect.bisect_right(rec.timestamps_ms, now_ms, lo=start), start + limit)
        riders, timestamps = rec.riders[start:end], rec.timestamps_ms[start:end]
        out += [
            Record(data, key, explicit, timestamp_ms / 1000, rider=rider)
            for data, rider, timestamp_ms, (key, explicit) in zip(
                rec.data[start:end], riders, timestamps, keyer(riders, timestamps), strict=True
            )
        ]
        self._cursor = end
        self.generated += end - start
        return end - start

    def flush(self, now: float, out: list[Record]) -> None:
        """Nothing to add: a replay holds no messages back."""

    def leaderboard(self, per_class: int = 5) -> dict[int, list[tuple[str, int, float]]]:
        """No leaderboard: a comparison shows no dashboard."""
        return {}


class MeteredStream:
    """The built-in stream, measured: offered load, rider stickiness, order and billing.

    Shards are indexed in the order they were first seen (the stream's shards at the start,
    then the children of each split), so a split adds shards without moving the others.
    """

    def __init__(self, stream: LocalStream, riders: int) -> None:
        self.stream = stream
        shards = stream.describe().shards
        count = len(shards)
        self.shard_ids = [s.shard_id for s in shards]
        """Every shard seen, in the order of :attr:`offered_peak`."""
        self._index = {s.shard_id: i for i, s in enumerate(shards)}
        self._parent: dict[int, int] = {}
        self._offered_peak = [0] * count
        self._second = -1
        self._offered = [0] * count
        self._history: dict[int, list[int]] = {}
        """Each past second's entries offered to each shard."""
        self.rider_shard = [-1] * riders
        """Each rider's shard index (the latest of one line of splits); -2 once a rider has
        been seen on two shards neither of which was split from the other."""
        self._rider_last = [0.0] * riders
        self.out_of_order = 0
        """Messages accepted after a later message of the same rider."""
        self.billed_kilobytes = 0

    @property
    def offered_peak(self) -> list[int]:
        """The most entries offered to each shard in one second, accepted or not."""
        return [max(p, c) for p, c in zip(self._offered_peak, self._offered, strict=True)]

    def offered_per_second(self, start: float) -> tuple[tuple[int, ...], ...]:
        """Entries offered to each shard in each second from ``start`` to the last put."""
        seconds = dict(self._history)
        if self._second >= 0:
            seconds[self._second] = self._offered
        empty = [0] * len(self._offered)
        last = max(seconds, default=int(start) - 1)
        return tuple(tuple(seconds.get(s, empty)) for s in range(int(start), last + 1))

    def describe(self) -> StreamDescription:
        """The wrapped stream's description."""
        return self.stream.describe()

    def put_records(self, records: Sequence[Record], now: float) -> PutRecordsOutcome:
        """Write through to the stream and measure the outcome."""
        outcome = self.stream.put_records(records, now)
        second = int(now)
        if second != self._second:
            self._roll(second)
        if self.stream.scale_outs and len(self.stream.router.shards) + len(
            self.stream.closed
        ) > len(self._index):
            self._follow_split()
        offered, index_of = self._offered, self._index
        rider_shard, rider_last = self.rider_shard, self._rider_last
        keyed = self.stream.distribution is RecordDistribution.USER_PARTITION_KEY
        router = self.stream.router
        kb = 0
        for record, shard_id in zip(records, outcome.shard_ids, strict=True):
            if shard_id is None:  # Throttled: still offered to the shard its key names.
                if keyed:
                    shard_of = router.shards[
                        router.index_for(record.partition_key, record.explicit_hash_key)
                    ]
                    offered[index_of[shard_of.shard_id]] += 1
                continue
            shard = index_of[shard_id]
            offered[shard] += 1
            kb += (record.size + 1023) // 1024  # Whole KB, as on-demand bills (costs.billed_kb).
            rider = record.rider
            if rider < 0:
                continue
            seen = rider_shard[rider]
            if seen != shard and seen != -2:
                rider_shard[rider] = shard if seen == -1 or self._split_from(shard, seen) else -2
            if record.generated_at < rider_last[rider]:
                self.out_of_order += 1
            else:
                rider_last[rider] = record.generated_at
        self.billed_kilobytes += kb
        return outcome

    def _follow_split(self) -> None:
        """Index the shards a split opened, and remember whose children they are."""
        for shard in self.stream.router.shards:
            if shard.shard_id in self._index:
                continue
            index = self._index[shard.shard_id] = len(self.shard_ids)
            self.shard_ids.append(shard.shard_id)
            self._offered_peak.append(0)
            self._offered.append(0)
            if shard.parent_shard_id is not None:
                self._parent[index] = self._index[shard.parent_shard_id]
        for shard in self.stream.closed:
            if shard.parent_shard_id is not None and shard.shard_id in self._index:
                self._parent[self._index[shard.shard_id]] = self._index[shard.parent_shard_id]

    def _split_from(self, shard: int, ancestor: int) -> bool:
        """Whether ``shard`` descends from ``ancestor`` by splits: a consumer that reads
        parents first (as the KCL does) reads a rider's records across it in order."""
        parent = self._parent.get(shard)
        while parent is not None:
            if parent == ancestor:
                return True
            parent = self._parent.get(parent)
        return False

    def close(self) -> None:
        """Close the wrapped stream."""
        self.stream.close()

    def _roll(self, second: int) -> None:
        peak = self._offered_peak
        for i, count in enumerate(self._offered):
            if count > peak[i]:
                peak[i] = count
        if self._second >= 0:
            self._history[self._second] = self._offered
        self._second = second
        self._offered = [0] * len(peak)
