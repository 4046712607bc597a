"""The producer: a bounded buffer, PutRecords batches, retries with backoff, and a record TTL.

Sans-IO: it is told the time and handed results; it never sleeps or calls a stream. Each record
ends in exactly one of two counts, delivered or dropped, and a record is dropped only when it was
not accepted within the TTL (or the run was stopped before it could be).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass

from simulator.batching import DEFAULT_BATCH_LIMITS, BatchLimits, Record
from simulator.sink import PutRecordsOutcome
from simulator.stats import RunStats

THROTTLED = "ProvisionedThroughputExceededException"


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n))."""

    base: float = 0.1
    cap: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempt`` + 1."""
        ceiling: float = min(self.cap, self.base * 2.0 ** min(attempt, 30))
        return rng.random() * ceiling


@dataclass(frozen=True, slots=True, kw_only=True)
class ProducerConfig:
    """How the producer batches, waits and gives up."""

    limits: BatchLimits = DEFAULT_BATCH_LIMITS
    flush_interval: float = 1.0
    """Send a partly filled batch once its oldest record has waited this long (seconds)."""
    record_ttl: float = 30.0
    """Drop a record not accepted this many seconds after the producer took it."""
    max_buffered: int = 50_000
    """Records held at most (waiting, retrying and in flight); when full, generation waits."""
    backoff: Backoff = Backoff()

    def __post_init__(self) -> None:
        if self.flush_interval < 0:
            raise ValueError("the flush interval cannot be negative")
        if self.record_ttl <= 0:
            raise ValueError("the record TTL must be positive")
        if self.max_buffered < self.limits.max_records:
            raise ValueError("the buffer must hold at least one full batch")


class Producer:
    """Turns a stream of records into PutRecords batches and settles their results."""

    def __init__(self, config: ProducerConfig, stats: RunStats, rng: random.Random) -> None:
        self.config = config
        self.stats = stats
        self._rng = rng
        self._fresh: deque[Record] = deque()
        self._fresh_bytes = 0
        self._retry: list[tuple[float, int, Record]] = []
        self._retry_order = 0
        self.in_flight = 0
        """Records sent and not yet settled."""

    @property
    def pending(self) -> int:
        """Records not yet delivered or dropped."""
        return len(self._fresh) + len(self._retry) + self.in_flight

    @property
    def buffered(self) -> int:
        """Records waiting to be sent (fresh or for a retry)."""
        return len(self._fresh) + len(self._retry)

    def room(self) -> int:
        """How many more records the buffer takes now."""
        return max(0, self.config.max_buffered - self.pending)

    def add_many(self, records: list[Record], now: float) -> None:
        """Take new records in; the TTL of each counts from its ``enqueued_at``."""
        self._fresh.extend(records)
        self._fresh_bytes += sum([record.size for record in records])
        self.stats.record_generated(now, len(records))

    def next_deadline(self) -> float | None:
        """When a batch falls due without new records: a retry's time or the flush interval."""
        times = []
        if self._retry:
            times.append(self._retry[0][0])
        if self._fresh:
            times.append(self._fresh[0].enqueued_at + self.config.flush_interval)
        return min(times) if times else None

    def take_batch(self, now: float, *, drain: bool = False) -> list[Record] | None:
        """The next request to send, or None when nothing is due.

        Retries that are due go first (they are the oldest); fresh records fill the rest. Fresh
        records alone go out once they fill a request or the oldest has waited the flush
        interval, or at once when ``drain`` is set (the run is ending).
        """
        self._expire(now)
        limits = self.config.limits
        retry_due = bool(self._retry) and self._retry[0][0] <= now
        fresh = self._fresh
        if not retry_due:
            if not fresh:
                return None
            full = len(fresh) >= limits.max_records or self._fresh_bytes >= limits.max_request_bytes
            if not (full or drain or fresh[0].enqueued_at + self.config.flush_interval <= now):
                return None
        batch: list[Record] = []
        size = 0
        ttl = self.config.record_ttl
        while self._retry and self._retry[0][0] <= now and len(batch) < limits.max_records:
            record = self._retry[0][2]
            if now - record.enqueued_at > ttl:
                heapq.heappop(self._retry)
                self.stats.dropped_expired += 1
                continue
            if size + record.size > limits.max_request_bytes:
                break
            heapq.heappop(self._retry)
            self.stats.retries += 1
            batch.append(record)
            size += record.size
        max_record_bytes = limits.max_record_bytes
        while fresh and len(batch) < limits.max_records:
            record = fresh[0]
            if record.size > max_record_bytes:
                # Kinesis would reject the whole request: drop the record, and say so.
                fresh.popleft()
                self._fresh_bytes -= record.size
                self.stats.dropped_oversized += 1
                continue
            if size + record.size > limits.max_request_bytes:
                break
            fresh.popleft()
            self._fresh_bytes -= record.size
            batch.append(record)
            size += record.size
        if not batch:
            return None
        for record in batch:
            record.attempts += 1
        self.in_flight += len(batch)
        self.stats.batches += 1
        self.stats.batch_records += len(batch)
        return batch

    def settle(self, batch: list[Record], outcome: PutRecordsOutcome, now: float) -> None:
        """Apply a PutRecords response: count accepted entries, schedule failed ones again."""
        self.in_flight -= len(batch)
        stats = self.stats
        if not outcome.failed_record_count:
            stats.record_delivered(batch, outcome.shard_ids, now)
            return
        accepted: list[Record] = []
        shard_ids: list[str | None] = []
        for record, shard_id, error in zip(
            batch, outcome.shard_ids, outcome.error_codes, strict=True
        ):
            if error is None:
                accepted.append(record)
                shard_ids.append(shard_id)
                continue
            if error == THROTTLED:
                stats.throttled += 1
            else:
                stats.internal_failures += 1
            self._schedule_retry(record, now)
        stats.record_delivered(accepted, shard_ids, now)

    def fail_request(self, batch: list[Record], now: float) -> None:
        """The whole request failed in a way that may pass: every entry is retried."""
        self.in_flight -= len(batch)
        self.stats.failed_requests += 1
        for record in batch:
            self._schedule_retry(record, now)

    def abandon(self) -> int:
        """Give up on everything not yet sent (the run was stopped); returns how many."""
        count = self.buffered
        self.stats.dropped_interrupted += count
        self._fresh.clear()
        self._fresh_bytes = 0
        self._retry.clear()
        return count

    def abandon_in_flight(self) -> int:
        """Count records whose requests will never be settled as dropped; returns how many."""
        count, self.in_flight = self.in_flight, 0
        self.stats.dropped_interrupted += count
        return count

    def _schedule_retry(self, record: Record, now: float) -> None:
        due = now + self.config.backoff.delay(record.attempts, self._rng)
        if due - record.enqueued_at > self.config.record_ttl:
            self.stats.dropped_expired += 1
            return
        self._retry_order += 1
        heapq.heappush(self._retry, (due, self._retry_order, record))

    def _expire(self, now: float) -> None:
        fresh = self._fresh
        ttl = self.config.record_ttl
        while fresh and now - fresh[0].enqueued_at > ttl:
            self._fresh_bytes -= fresh.popleft().size
            self.stats.dropped_expired += 1
