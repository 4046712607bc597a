"""The Kinesis shard model: hash ranges, MD5 routing and per-shard write budgets.

Kinesis hashes each partition key with MD5 into a 128-bit integer and writes the record to the
open shard whose ``HashKeyRange`` holds it; an ``ExplicitHashKey`` replaces the hash. CreateStream
with N shards splits the space in N equal steps, the last shard taking the remainder. Each shard
accepts at most 1,000 records and 1 MiB per second; entries over that budget are rejected with
``ProvisionedThroughputExceededException`` and must be retried.

:class:`LocalStream` answers PutRecords the way Kinesis does, so the simulator runs without AWS.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass

try:
    # CPython's own MD5 hashes a short key in a third of the time OpenSSL 3 takes (most of
    # which goes to setting up and cleaning a context per hash); routing hashes every key.
    from _md5 import md5  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - an interpreter built without it
    from hashlib import md5

from simulator.engine.batching import Record
from simulator.engine.capacity import (
    DEFAULT_ON_DEMAND_POLICY,
    CapacityMode,
    OnDemandPolicy,
    split_shards,
)
from simulator.engine.sink import PutRecordsOutcome, RecordDistribution, Shard, StreamDescription

#: The hash space is ``[0, HASH_SPACE_MAX]``.
HASH_SPACE_MAX = 2**128 - 1
#: Per-shard write limits, in provisioned and on-demand mode alike.
SHARD_RECORDS_PER_SECOND = 1000
SHARD_BYTES_PER_SECOND = 1024 * 1024

THROTTLED = "ProvisionedThroughputExceededException"
INTERNAL_FAILURE = "InternalFailure"


def shard_id(index: int) -> str:
    """The id Kinesis gives the ``index``-th shard of a new stream."""
    return f"shardId-{index:012d}"


def split_hash_space(shard_count: int) -> list[Shard]:
    """The shards CreateStream makes: ``step = 2**128 // N``, the last shard ending at 2**128-1."""
    if shard_count < 1:
        raise ValueError("a stream needs at least one shard")
    step = (HASH_SPACE_MAX + 1) // shard_count
    shards = [Shard(shard_id(i), i * step, (i + 1) * step - 1) for i in range(shard_count - 1)]
    shards.append(Shard(shard_id(shard_count - 1), (shard_count - 1) * step, HASH_SPACE_MAX))
    return shards


def hash_key(partition_key: str) -> int:
    """The 128-bit hash Kinesis routes a partition key by."""
    return int.from_bytes(md5(partition_key.encode()).digest(), "big")


class ShardRouter:
    """Finds the shard of a record: MD5 of its key, or its explicit hash key.

    Racer, class and balanced keys repeat, so the shard of each key is remembered, up to
    ``cache_limit`` keys. Random keys never come back (a time key only within its millisecond):
    a cache of them only fills memory and misses, so when the cache fills with few repeats since
    it was last emptied, the router stops remembering keys and hashes each one.
    """

    #: Keep remembering when at least one lookup in this many found its key.
    REPEATS_WORTH_CACHING = 8

    def __init__(self, shards: Sequence[Shard], *, cache_limit: int = 1 << 16) -> None:
        if not shards:
            raise ValueError("a stream needs at least one shard")
        self.shards = sorted(shards, key=lambda s: s.starting_hash_key)
        self._starts = [s.starting_hash_key for s in self.shards]
        # The same starts as 16-byte big-endian strings: an MD5 digest compares with them
        # byte by byte exactly as its 128-bit value does, with no conversion to an integer.
        self._start_digests = [start.to_bytes(16, "big") for start in self._starts]
        self._cache: dict[str, int] = {}
        self._cache_limit = cache_limit
        self._hits = 0
        self.remembering = True
        """False once keys have been seen not to repeat."""

    def index_for(self, partition_key: str, explicit_hash_key: str | None = None) -> int:
        """The position in :attr:`shards` of the shard a record goes to."""
        memo = partition_key if explicit_hash_key is None else explicit_hash_key
        index = self._cache.get(memo)
        if index is not None:
            self._hits += 1
            return index
        index = self._hash(partition_key, explicit_hash_key)
        if self.remembering:
            self._keep(memo, index)
        return index

    def indices_for(self, records: Sequence[Record]) -> list[int]:
        """:meth:`index_for` of each record, for a whole request at once."""
        index_for = self.index_for
        return [index_for(record.partition_key, record.explicit_hash_key) for record in records]

    def shard_for(self, partition_key: str, explicit_hash_key: str | None = None) -> Shard:
        """The shard a record goes to."""
        return self.shards[self.index_for(partition_key, explicit_hash_key)]

    def _hash(self, partition_key: str, explicit_hash_key: str | None) -> int:
        if explicit_hash_key is None:
            digest = md5(partition_key.encode()).digest()
            return bisect.bisect_right(self._start_digests, digest) - 1
        return bisect.bisect_right(self._starts, int(explicit_hash_key)) - 1

    def _keep(self, memo: str, index: int) -> None:
        cache = self._cache
        if len(cache) >= self._cache_limit:
            # Full: go on remembering only if keys came back since the cache was last emptied.
            self.remembering = self._hits * self.REPEATS_WORTH_CACHING >= len(cache)
            cache.clear()
            self._hits = 0
            if not self.remembering:
                return
        cache[memo] = index


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardLimits:
    """How much one shard accepts each second."""

    records_per_second: int = SHARD_RECORDS_PER_SECOND
    bytes_per_second: int = SHARD_BYTES_PER_SECOND


DEFAULT_SHARD_LIMITS = ShardLimits()


class LocalStream:
    """An in-process Kinesis stream that answers PutRecords with Kinesis's per-entry results.

    Time is the caller's: ``put_records(records, now)`` spends the budget of the second ``now``
    falls in, so the model throttles the same way in real, scaled and virtual time.

    Provisioned, it keeps ``shard_count`` shards. On-demand (``capacity``), it starts with the
    policy's shards and splits them as the write rate grows (:mod:`simulator.engine.capacity`):
    the parents close, :attr:`closed` keeps them and :attr:`scale_outs` says when each split
    happened. With ``distribution`` AUTO (on-demand only), keys are ignored and records are
    dealt evenly over the open shards, in an order drawn from ``seed``.
    """

    def __init__(
        self,
        shard_count: int,
        *,
        name: str = "built-in",
        limits: ShardLimits = DEFAULT_SHARD_LIMITS,
        capacity: CapacityMode = CapacityMode.PROVISIONED,
        policy: OnDemandPolicy = DEFAULT_ON_DEMAND_POLICY,
        distribution: RecordDistribution = RecordDistribution.USER_PARTITION_KEY,
        seed: int = 0,
    ) -> None:
        if distribution is RecordDistribution.AUTO and not capacity.on_demand:
            raise ValueError("service-managed distribution (AUTO) needs an on-demand stream")
        self.name = name
        self.limits = limits
        self.capacity = capacity
        self.policy = policy
        self.distribution = distribution
        if capacity.on_demand:
            shard_count = policy.starting_shards(limits.bytes_per_second)
        shards = split_hash_space(shard_count)
        self.closed: list[Shard] = []
        """Shards closed by a split, in the order they closed."""
        self.scale_outs: list[tuple[int, int]] = []
        """``(second, open shards after)`` of each split, in order."""
        self._next_index = shard_count
        self._peak_records = 0
        self._peak_bytes = 0
        self._scale_at: float | None = None
        self._bag: list[int] = []
        self._rng = random.Random(seed)
        # Sequence numbers grow within a shard and look like Kinesis's 56-digit ones.
        # They are the shard's 40-digit prefix and a 16-digit counter: formatting a small
        # integer per record costs a fraction of formatting a 56-digit one.
        self._counters: dict[str, int] = {}
        self._open(shards)
        # What each shard has accepted in the current second: its budget spent so far.
        self._second = -1
        self._used_records = [0] * shard_count
        self._used_bytes = [0] * shard_count

    def _open(self, shards: list[Shard]) -> None:
        """Route to ``shards`` from now on, keeping each shard's sequence counter."""
        self._bag.clear()
        self.router = ShardRouter(shards)
        self._ids = [s.shard_id for s in self.router.shards]
        self._sequence_prefix = [
            f"{49 * 10**38 + int(sid.rsplit('-', 1)[1]) * 10**32}" for sid in self._ids
        ]
        self._sequence = [self._counters.get(sid, 10**15) for sid in self._ids]

    def describe(self) -> StreamDescription:
        """The stream's name and open shards."""
        return StreamDescription(
            name=self.name, shards=tuple(self.router.shards), distribution=self.distribution
        )

    def put_records(self, records: Sequence[Record], now: float) -> PutRecordsOutcome:
        """Write a batch: each entry is accepted with a sequence number or throttled."""
        # A time before the current second (a caller's clock stepping back) spends the current
        # second's budget: no second is ever given its budget twice.
        second = max(int(now), self._second)
        if second != self._second:
            # A new second: every shard's budget is whole again.
            if self.capacity.on_demand:
                self._scale(second)
            self._second = second
            self._used_records = [0] * len(self._ids)
            self._used_bytes = [0] * len(self._ids)
        used_records, used_bytes = self._used_records, self._used_bytes
        max_records = self.limits.records_per_second
        max_bytes = self.limits.bytes_per_second
        sequence, prefix, ids = self._sequence, self._sequence_prefix, self._ids
        shard_ids: list[str | None] = []
        sequence_numbers: list[str | None] = []
        error_codes: list[str | None] = []
        failed = 0
        for record, index in zip(records, self._indices(records), strict=True):
            size = record.size
            if used_records[index] < max_records and used_bytes[index] + size <= max_bytes:
                used_records[index] += 1
                used_bytes[index] += size
                sequence[index] += 1
                shard_ids.append(ids[index])
                sequence_numbers.append(f"{prefix[index]}{sequence[index]}")
                error_codes.append(None)
            else:
                failed += 1
                shard_ids.append(None)
                sequence_numbers.append(None)
                error_codes.append(THROTTLED)
        return PutRecordsOutcome(
            failed_record_count=failed,
            shard_ids=shard_ids,
            sequence_numbers=sequence_numbers,
            error_codes=error_codes,
        )

    def _indices(self, records: Sequence[Record]) -> list[int]:
        """The open shard each record goes to: by its key, or dealt in turn under AUTO."""
        if self.distribution is RecordDistribution.USER_PARTITION_KEY:
            return self.router.indices_for(records)
        # Each run of N records goes one to each of the N open shards, in a random order: as
        # even as dealing in turn, without pinning a rider who sends at the same place in
        # every request to one shard.
        bag, count = self._bag, len(self._ids)
        indices: list[int] = []
        for _ in range(len(records)):
            if not bag:
                bag.extend(range(count))
                self._rng.shuffle(bag)
            indices.append(bag.pop())
        return indices

    def _scale(self, second: int) -> None:
        """At the turn of a second: note the write rate of the one that ended, and split
        shards once a scale-out asked for earlier is due."""
        if self._second >= 0:
            self._peak_records = max(self._peak_records, sum(self._used_records))
            self._peak_bytes = max(self._peak_bytes, sum(self._used_bytes))
        needed = self.policy.shards_needed(
            self._peak_records,
            self._peak_bytes,
            shard_records_per_second=self.limits.records_per_second,
            shard_bytes_per_second=self.limits.bytes_per_second,
        )
        if needed <= len(self._ids):
            self._scale_at = None
            return
        if self._scale_at is None:
            self._scale_at = self._second + 1 + self.policy.scale_out_seconds
        if second < self._scale_at:
            return
        self._scale_at = None
        for sid, counter in zip(self._ids, self._sequence, strict=True):
            self._counters[sid] = counter
        shards, closed = split_shards(self.router.shards, needed, self._next_index)
        self._next_index += 2 * len(closed)
        self.closed += closed
        self._open(shards)
        self.scale_outs.append((second, len(shards)))

    def close(self) -> None:
        """Nothing to release; present so every sink can be closed alike."""
