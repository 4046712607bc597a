"""A built-in stream that remembers what it accepted, for tests that look at every record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from simulator.engine.batching import Record
from simulator.engine.shards import LocalStream, ShardRouter
from simulator.engine.sink import PutRecordsOutcome, StreamDescription


class RecordingStream:
    """The built-in stream, remembering every accepted record, its shard and when.

    It wraps a :class:`LocalStream` rather than subclassing it: the simulator's compiled build
    does not let Python classes inherit from its classes.
    """

    def __init__(self, shard_count: int, **options: Any) -> None:
        self.stream = LocalStream(shard_count, **options)
        self.accepted: list[tuple[str, Record, float]] = []

    @property
    def router(self) -> ShardRouter:
        return self.stream.router

    def describe(self) -> StreamDescription:
        return self.stream.describe()

    def put_records(self, records: Sequence[Record], now: float) -> PutRecordsOutcome:
        outcome = self.stream.put_records(records, now)
        for record, shard_id in zip(records, outcome.shard_ids, strict=True):
            if shard_id is not None:
                self.accepted.append((shard_id, record, now))
        return outcome

    def close(self) -> None:
        self.stream.close()

    def rows(self) -> list[tuple[str, int, str, bytes]]:
        """``(shard_id, rider, partition_key, data)`` of each accepted record, in order."""
        return [(s, r.rider, r.partition_key, r.data) for s, r, _ in self.accepted]
