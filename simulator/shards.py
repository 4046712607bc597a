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
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from simulator.batching import Record
from simulator.sink import PutRecordsOutcome, StreamDescription

#: The hash space is ``[0, HASH_SPACE_MAX]``.
HASH_SPACE_MAX = 2**128 - 1
#: Per-shard write limits, in provisioned and on-demand mode alike.
SHARD_RECORDS_PER_SECOND = 1000
SHARD_BYTES_PER_SECOND = 1024 * 1024

THROTTLED = "ProvisionedThroughputExceededException"
INTERNAL_FAILURE = "InternalFailure"


@dataclass(frozen=True, slots=True)
class Shard:
    """An open shard and the inclusive hash key range it owns."""

    shard_id: str
    starting_hash_key: int
    ending_hash_key: int

    @property
    def midpoint(self) -> int:
        """A hash key in the middle of the range."""
        return (self.starting_hash_key + self.ending_hash_key) // 2


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
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")


class ShardRouter:
    """Finds the shard of a record: MD5 of its key, or its explicit hash key."""

    _CACHE_LIMIT = 1 << 16

    def __init__(self, shards: Sequence[Shard]) -> None:
        if not shards:
            raise ValueError("a stream needs at least one shard")
        self.shards = sorted(shards, key=lambda s: s.starting_hash_key)
        self._starts = [s.starting_hash_key for s in self.shards]
        self._cache: dict[str, int] = {}
        self._explicit_cache: dict[str, int] = {}

    def index_for(self, partition_key: str, explicit_hash_key: str | None = None) -> int:
        """The position in :attr:`shards` of the shard a record goes to."""
        # Most strategies repeat their keys (racer, class, balanced), so remember recent ones.
        cache = self._cache
        memo = partition_key if explicit_hash_key is None else explicit_hash_key
        index = cache.get(memo)
        if index is None:
            if len(cache) >= self._CACHE_LIMIT:
                cache.clear()
            value = hash_key(partition_key) if explicit_hash_key is None else int(explicit_hash_key)
            index = cache[memo] = bisect.bisect_right(self._starts, value) - 1
        return index

    def shard_for(self, partition_key: str, explicit_hash_key: str | None = None) -> Shard:
        """The shard a record goes to."""
        return self.shards[self.index_for(partition_key, explicit_hash_key)]


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
    """

    def __init__(
        self,
        shard_count: int,
        *,
        name: str = "built-in",
        limits: ShardLimits = DEFAULT_SHARD_LIMITS,
    ) -> None:
        self.name = name
        self.limits = limits
        self.router = ShardRouter(split_hash_space(shard_count))
        # What each shard has accepted in the current second: its budget spent so far.
        self._second = -1
        self._used_records = [0] * shard_count
        self._used_bytes = [0] * shard_count
        # Sequence numbers grow within a shard and look like Kinesis's 56-digit ones.
        self._sequence = [49 * 10**54 + i * 10**48 for i in range(shard_count)]
        self._ids = [s.shard_id for s in self.router.shards]

    def describe(self) -> StreamDescription:
        """The stream's name and open shards."""
        return StreamDescription(name=self.name, shards=tuple(self.router.shards))

    def put_records(self, records: Sequence[Record], now: float) -> PutRecordsOutcome:
        """Write a batch: each entry is accepted with a sequence number or throttled."""
        second = int(now)
        if second != self._second:
            # A new second: every shard's budget is whole again.
            self._second = second
            self._used_records = [0] * len(self._ids)
            self._used_bytes = [0] * len(self._ids)
        used_records, used_bytes = self._used_records, self._used_bytes
        max_records = self.limits.records_per_second
        max_bytes = self.limits.bytes_per_second
        index_for = self.router.index_for
        sequence = self._sequence
        ids = self._ids
        shard_ids: list[str | None] = []
        sequence_numbers: list[str | None] = []
        error_codes: list[str | None] = []
        failed = 0
        for record in records:
            index = index_for(record.partition_key, record.explicit_hash_key)
            size = record.size
            if used_records[index] < max_records and used_bytes[index] + size <= max_bytes:
                used_records[index] += 1
                used_bytes[index] += size
                sequence[index] += 1
                shard_ids.append(ids[index])
                sequence_numbers.append(str(sequence[index]))
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

    def close(self) -> None:
        """Nothing to release; present so every sink can be closed alike."""
