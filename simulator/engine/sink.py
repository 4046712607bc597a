"""The one seam between the simulator and a stream: ``put_records(records, now)``.

A sink is the built-in shard model (:class:`simulator.engine.shards.LocalStream`) or a real stream
(:mod:`simulator.sinks.kinesis`). It answers each PutRecords request with the per-entry results
Kinesis gives, raises :class:`~simulator.errors.RetryableSinkError` when the whole request failed
but may pass later, and :class:`~simulator.errors.FatalSinkError` when the run cannot go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from simulator.engine.batching import Record


@dataclass(frozen=True, slots=True)
class Shard:
    """An open shard and the inclusive hash key range it owns."""

    shard_id: str
    starting_hash_key: int
    ending_hash_key: int
    parent_shard_id: str | None = None
    """The shard this one was split from, if any."""

    @property
    def midpoint(self) -> int:
        """A hash key in the middle of the range."""
        return (self.starting_hash_key + self.ending_hash_key) // 2


class RecordDistribution(StrEnum):
    """Who decides a record's shard (a stream's ``RecordDistributionStrategy``)."""

    USER_PARTITION_KEY = "USER_PARTITION_KEY"
    """The partition key's MD5 (or the explicit hash key), as ever."""
    AUTO = "AUTO"
    """The service spreads records over the open shards: keys are ignored and may be left
    out, and no order is kept. On-demand streams only."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamDescription:
    """What the simulator needs to know of a stream before it writes."""

    name: str
    shards: tuple[Shard, ...]
    """The open shards, in hash-key order."""
    distribution: RecordDistribution = RecordDistribution.USER_PARTITION_KEY


@dataclass(slots=True, kw_only=True)
class PutRecordsOutcome:
    """A PutRecords response: index-aligned with the request's entries."""

    failed_record_count: int
    shard_ids: list[str | None]
    """The shard each entry was written to; None for a failed entry."""
    sequence_numbers: list[str | None]
    error_codes: list[str | None]
    """None for an accepted entry, else ``ProvisionedThroughputExceededException`` or
    ``InternalFailure``."""


class StreamSink(Protocol):
    """Something that takes PutRecords requests."""

    def describe(self) -> StreamDescription:
        """The stream's name and open shards."""
        ...

    def put_records(self, records: Sequence[Record], now: float) -> PutRecordsOutcome:
        """Write one request of at most the batch limits; ``now`` is the simulation's time."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
