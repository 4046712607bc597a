"""The producer: a bounded buffer, PutRecords batches, retries with backoff, and a record TTL.

Sans-IO: it is told the time and handed results; it never sleeps or calls a stream. Each record
ends in exactly one of two counts, delivered or dropped, and a record is dropped only when it was
not accepted within the TTL (or the run was stopped before it could be).

The TTL holds for records in flight too: a record whose TTL ends while a request carries it is
counted as dropped then, whatever the answer brings later. A dropped record is *unknown* when
it may be in the stream (a request that carried it got no answer, or was still in flight), and
*expired* when it cannot be (every request that carried it was refused).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from simulator.engine.batching import DEFAULT_BATCH_LIMITS, BatchLimits, Record
from simulator.engine.counters import RunStats
from simulator.engine.shards import DEFAULT_SHARD_LIMITS, THROTTLED, ShardLimits, ShardRouter
from simulator.engine.sink import PutRecordsOutcome


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


class ShardPacer:
    """Paces writes to shards that have throttled, at the shard's limits (like the KPL).

    A token bucket per shard, holding at most one second of the shard's budget. A shard's
    bucket starts empty when it first throttles (it has just said it is full), and is forgotten
    once the shard has caught up.
    """

    #: Do not wake for fewer records than this while a backlog is longer.
    MIN_SEND = 50

    def __init__(self, limits: ShardLimits = DEFAULT_SHARD_LIMITS) -> None:
        self.limits = limits
        self._buckets: dict[int, list[float]] = {}

    def start(self, shard: int, now: float) -> None:
        """Begin pacing ``shard`` with an empty bucket, unless it is paced already."""
        self._buckets.setdefault(shard, [0.0, 0.0, now])

    def forget(self, shard: int) -> None:
        """Stop pacing ``shard``."""
        self._buckets.pop(shard, None)

    def allowance(self, shard: int, now: float) -> tuple[int, int]:
        """Records and bytes ``shard`` may take at ``now``."""
        bucket = self._buckets.get(shard)
        if bucket is None:
            return self.limits.records_per_second, self.limits.bytes_per_second
        if now > bucket[2]:
            bucket[:] = [*self._refilled(bucket, now), now]
        return int(bucket[0]), int(bucket[1])

    def spend(self, shard: int, records: int, size: int) -> None:
        """Take ``records`` and ``size`` bytes out of ``shard``'s bucket."""
        bucket = self._buckets.get(shard)
        if bucket is not None:
            bucket[0] -= records
            bucket[1] -= size

    def ready_at(self, shard: int, after: float, wanted: int) -> float:
        """The first time from ``after`` on that ``shard`` may take ``wanted`` records.

        At most :attr:`MIN_SEND` records are waited for: a long backlog goes out in pieces.
        """
        bucket = self._buckets.get(shard)
        if bucket is None:
            return after
        records, _ = self._refilled(bucket, max(after, bucket[2]))
        missing = min(wanted, self.MIN_SEND) - records
        at = max(after, bucket[2])
        return at if missing <= 0 else at + missing / self.limits.records_per_second

    def _refilled(self, bucket: list[float], now: float) -> tuple[float, float]:
        elapsed = now - bucket[2]
        limits = self.limits
        return (
            min(limits.records_per_second, bucket[0] + elapsed * limits.records_per_second),
            min(limits.bytes_per_second, bucket[1] + elapsed * limits.bytes_per_second),
        )


class _Flight:
    """A request in flight: its records, the oldest among those not yet given up on, and how
    many were given up on."""

    __slots__ = ("batch", "oldest", "given_up")

    def __init__(self, batch: list[Record]) -> None:
        self.batch = batch
        self.oldest = min([record.enqueued_at for record in batch])
        self.given_up = 0


class Producer:
    """Turns a stream of records into PutRecords batches and settles their results.

    Failed entries wait in a backlog per shard, oldest first, while that shard backs off;
    fresh records bound for a backing-off shard queue behind its backlog. So a shard that is
    over its limit drains in order, like a queue, and a record waits only as long as the
    shard's backlog ahead of it: the others keep flowing.

    Args:
        config: batching, TTL and buffer limits.
        stats: the counters to update.
        rng: the randomness of the backoff jitter.
        router: predicts the shard of a record (as the KPL does); without one, every record
            counts as one shard's.
        expire_in_flight: give up on records in flight at their TTL. Off in virtual time,
            where the clock jumps ahead while a request is out: its flight takes no simulated
            time there, so the TTL cannot end during it.
        pace_limits: what one "shard" of the pacer takes a second; without a router (keys the
            stream ignores) every record is one shard's, so give the whole stream's limits.
    """

    def __init__(
        self,
        config: ProducerConfig,
        stats: RunStats,
        rng: random.Random,
        router: ShardRouter | None = None,
        *,
        expire_in_flight: bool = True,
        pace_limits: ShardLimits = DEFAULT_SHARD_LIMITS,
    ) -> None:
        self.config = config
        self._expire_in_flight = expire_in_flight
        self.stats = stats
        self._rng = rng
        self._router = router
        self._index_of = (
            {shard.shard_id: i for i, shard in enumerate(router.shards)} if router else {}
        )
        self._fresh: deque[Record] = deque()
        self._fresh_bytes = 0
        #: Shard index -> records waiting to be sent again, oldest first.
        self._backlogs: dict[int, deque[Record]] = {}
        self._backlog_size = 0
        #: Shard index -> when it may be written again, and its throttled responses in a row.
        self._not_before: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._pacer = ShardPacer(pace_limits)
        self.in_flight = 0
        """Records sent and not yet settled (nor given up on at their TTL)."""
        self._flights: list[_Flight] = []

    @property
    def pending(self) -> int:
        """Records not yet delivered or dropped."""
        return len(self._fresh) + self._backlog_size + self.in_flight

    @property
    def buffered(self) -> int:
        """Records waiting to be sent (fresh or for a retry)."""
        return len(self._fresh) + self._backlog_size

    def room(self) -> int:
        """How many more records the buffer takes now."""
        return max(0, self.config.max_buffered - self.pending)

    def add_many(self, records: list[Record], now: float) -> None:
        """Take new records in; the TTL of each counts from its ``enqueued_at``.

        A record over the record size limit is dropped and counted at once: Kinesis would
        reject the whole request that carried it.
        """
        self.stats.record_generated(now, len(records))
        sizes = [record.size for record in records]
        if sizes and max(sizes) > self.config.limits.max_record_bytes:
            limit = self.config.limits.max_record_bytes
            kept = [record for record in records if record.size <= limit]
            self.stats.dropped_oversized += len(records) - len(kept)
            records, sizes = kept, [record.size for record in kept]
        self._fresh.extend(records)
        self._fresh_bytes += sum(sizes)

    def next_deadline(self) -> float | None:
        """When a batch falls due without new records: a shard's backoff or the flush interval."""
        times = [
            max(
                self._not_before.get(s, 0.0),
                self._pacer.ready_at(s, self._not_before.get(s, 0.0), len(q)),
            )
            for s, q in self._backlogs.items()
            if q
        ]
        if self._fresh:
            times.append(self._fresh[0].enqueued_at + self.config.flush_interval)
        if self._flights and self._expire_in_flight:
            times.append(min([f.oldest for f in self._flights]) + self.config.record_ttl)
        return min(times) if times else None

    def take_batch(self, now: float, *, drain: bool = False) -> list[Record] | None:
        """The next request to send, or None when nothing is due.

        Backlogs whose backoff is over go first (they hold the oldest records); fresh records
        fill the rest. Fresh records alone go out once they fill a request or the oldest has
        waited the flush interval, or at once when ``drain`` is set (the run is ending).
        """
        self._expire(now)
        limits = self.config.limits
        pacer = self._pacer
        ready = [
            s
            for s, queue in self._backlogs.items()
            if queue and self._not_before[s] <= now and pacer.ready_at(s, now, len(queue)) <= now
        ]
        fresh = self._fresh
        if not ready:
            if not fresh:
                return None
            full = len(fresh) >= limits.max_records or self._fresh_bytes >= limits.max_request_bytes
            if not (full or drain or fresh[0].enqueued_at + self.config.flush_interval <= now):
                return None
        batch: list[Record] = []
        size = 0
        max_records, max_bytes = limits.max_records, limits.max_request_bytes
        ready.sort(key=lambda s: self._backlogs[s][0].enqueued_at)
        for shard in ready:
            queue = self._backlogs[shard]
            records_allowed, bytes_allowed = pacer.allowance(shard, now)
            taken = taken_bytes = 0
            while (
                queue
                and len(batch) < max_records
                and size + queue[0].size <= max_bytes
                and taken < records_allowed
                and taken_bytes + queue[0].size <= bytes_allowed
            ):
                record = queue.popleft()
                self._backlog_size -= 1
                if record.attempts:
                    self.stats.retries += 1
                batch.append(record)
                size += record.size
                taken += 1
                taken_bytes += record.size
            pacer.spend(shard, taken, taken_bytes)
        held = self._held_shards(now)
        if not held and size + self._fresh_bytes <= max_bytes:
            # Every shard takes records and every fresh record fits: no need to look at each.
            popleft = fresh.popleft
            moved = [popleft() for _ in range(min(len(fresh), max_records - len(batch)))]
            moved_bytes = sum([record.size for record in moved])
            self._fresh_bytes -= moved_bytes
            size += moved_bytes
            batch += moved
        route = self._route
        while fresh and len(batch) < max_records:
            record = fresh[0]
            if size + record.size > max_bytes:
                break
            fresh.popleft()
            self._fresh_bytes -= record.size
            if held:
                shard = route(record)
                if shard in held:
                    self._backlogs[shard].append(record)
                    self._backlog_size += 1
                    continue
            batch.append(record)
            size += record.size
        if not batch:
            return None
        for record in batch:
            record.attempts += 1
        self.in_flight += len(batch)
        self._flights.append(_Flight(batch))
        self.stats.batches += 1
        self.stats.batch_records += len(batch)
        return batch

    def settle(
        self,
        batch: list[Record],
        outcome: PutRecordsOutcome,
        now: float,
        *,
        accepted_at: float | None = None,
    ) -> None:
        """Apply a PutRecords response: count accepted entries, hold failed ones back.

        Entries whose TTL ended before the answer came are already counted as dropped; those
        the stream accepted are counted in ``accepted_after_drop`` (they are in the stream).
        ``accepted_at`` is when the stream took them, if not ``now`` (the answer's time): the
        second each shard's figures count them in.
        """
        if self._land(batch, now):
            kept: list[Record] = []
            kept_ids: list[str | None] = []
            kept_sequences: list[str | None] = []
            kept_errors: list[str | None] = []
            for record, shard_id, sequence, error in zip(
                batch, outcome.shard_ids, outcome.sequence_numbers, outcome.error_codes, strict=True
            ):
                if not record.given_up:
                    kept.append(record)
                    kept_ids.append(shard_id)
                    kept_sequences.append(sequence)
                    kept_errors.append(error)
                elif error is None:
                    self.stats.accepted_after_drop += 1
            failed_count = sum([1 for error in kept_errors if error is not None])
            outcome = PutRecordsOutcome(
                failed_record_count=failed_count,
                shard_ids=kept_ids,
                sequence_numbers=kept_sequences,
                error_codes=kept_errors,
            )
            batch = kept
        self.in_flight -= len(batch)
        stats = self.stats
        if not outcome.failed_record_count:
            stats.record_delivered(batch, outcome.shard_ids, now, accepted_at=accepted_at)
            if self._failures:
                self._recovered(outcome.shard_ids)
            return
        accepted: list[Record] = []
        shard_ids: list[str | None] = []
        failed: list[Record] = []
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
            failed.append(record)
        stats.record_delivered(accepted, shard_ids, now, accepted_at=accepted_at)
        # A shard that took some entries made progress: its backoff starts afresh.
        self._recovered(shard_ids)
        self._hold_back(failed, now)

    def fail_request(
        self, batch: list[Record], now: float, *, outcome_unknown: bool = False
    ) -> None:
        """The whole request failed in a way that may pass: every entry is retried.

        ``outcome_unknown``: no answer came (a timeout, a closed connection), so the entries
        may be in the stream; if they are given up on later, they count as unknown.
        """
        if self._land(batch, now):
            batch = [record for record in batch if not record.given_up]
        self.in_flight -= len(batch)
        self.stats.failed_requests += 1
        if outcome_unknown:
            for record in batch:
                record.maybe_written = True
        self._hold_back(batch, now)

    def drop_request(self, batch: list[Record], now: float) -> None:
        """The whole request was refused for good (the run stops): its entries are dropped."""
        if self._land(batch, now):
            batch = [record for record in batch if not record.given_up]
        self.in_flight -= len(batch)
        for record in batch:
            self._count_drop(record)

    def reshard(
        self, router: ShardRouter | None, pace_limits: ShardLimits = DEFAULT_SHARD_LIMITS
    ) -> None:
        """Predict shards with ``router`` from now on (the stream split its shards).

        Records waiting for a retry are sorted into the new shards' backlogs, oldest first;
        backoffs and pacing start afresh, as for shards never throttled.
        """
        waiting = sorted([r for queue in self._backlogs.values() for r in queue], key=_age)
        self._router = router
        self._index_of = (
            {shard.shard_id: i for i, shard in enumerate(router.shards)} if router else {}
        )
        self._backlogs = {}
        self._not_before.clear()
        self._failures.clear()
        self._pacer = ShardPacer(pace_limits)
        for record in waiting:
            shard = self._route(record)
            queue = self._backlogs.get(shard)
            if queue is None:
                queue = self._backlogs[shard] = deque()
                self._not_before[shard] = 0.0
            queue.append(record)

    def expire(self, now: float) -> None:
        """Give up on records whose TTL has ended, waiting or in flight."""
        self._expire(now)

    def abandon(self) -> int:
        """Give up on everything not yet sent (the run was stopped); returns how many."""
        count = self.buffered
        for queue in self._backlogs.values():  # fresh records were never sent
            for record in queue:
                self._count_drop(record)
        self.stats.dropped_interrupted += len(self._fresh)
        self._fresh.clear()
        self._fresh_bytes = 0
        self._backlogs.clear()
        self._backlog_size = 0
        return count

    def abandon_in_flight(self) -> int:
        """Count records whose requests will never be settled as dropped (unknown: they may
        be in the stream); returns how many."""
        count, self.in_flight = self.in_flight, 0
        self.stats.dropped_unknown += count
        self._flights.clear()
        return count

    def _land(self, batch: list[Record], now: float) -> bool:
        """Forget ``batch``'s flight, giving up on its records past their TTL; True if any
        of its records was given up on (the caller leaves those out)."""
        flights = self._flights
        for i, flight in enumerate(flights):
            if flight.batch is batch:
                del flights[i]
                break
        else:
            return False
        if self._expire_in_flight and now - flight.oldest > self.config.record_ttl:
            self._give_up_in_flight(flight, now)
        return flight.given_up > 0

    def _give_up_in_flight(self, flight: _Flight, now: float) -> None:
        ttl = self.config.record_ttl
        oldest = float("inf")
        for record in flight.batch:
            if record.given_up:
                continue
            if now - record.enqueued_at > ttl:
                record.given_up = True
                flight.given_up += 1
                self.in_flight -= 1
                self.stats.dropped_unknown += 1
            else:
                oldest = min(oldest, record.enqueued_at)
        flight.oldest = oldest

    def _count_drop(self, record: Record) -> None:
        """A record given up on when the run stops: unknown if it may be in the stream."""
        if record.maybe_written:
            self.stats.dropped_unknown += 1
        else:
            self.stats.dropped_interrupted += 1

    def _route(self, record: Record) -> int:
        if self._router is None:
            return 0
        return self._router.index_for(record.partition_key, record.explicit_hash_key)

    def _held_shards(self, now: float) -> set[int]:
        """Shards that fresh records must queue behind: backing off, or with a backlog."""
        if not self._backlog_size and not self._not_before:
            return set()
        held = {s for s, queue in self._backlogs.items() if queue}
        held.update(s for s, t in self._not_before.items() if t > now)
        for shard in held:
            self._backlogs.setdefault(shard, deque())
        return held

    def _hold_back(self, records: list[Record], now: float) -> None:
        """Put failed records in their shards' backlogs, in age order; back those shards off."""
        by_shard: dict[int, list[Record]] = {}
        for record in records:
            by_shard.setdefault(self._route(record), []).append(record)
        for shard, failed in by_shard.items():
            queue = self._backlogs.get(shard)
            merged = sorted([*failed, *queue] if queue else failed, key=_age)
            self._backlogs[shard] = deque(merged)
            self._backlog_size += len(failed)
            attempt = self._failures.get(shard, 0) + 1
            self._failures[shard] = attempt
            self._not_before[shard] = now + self.config.backoff.delay(attempt, self._rng)
            self._pacer.start(shard, now)

    def _recovered(self, shard_ids: Iterable[str | None]) -> None:
        """Shards that accepted entries start their backoff afresh."""
        for shard_id in set(shard_ids):
            shard = self._index_of.get(shard_id or "", 0)
            self._failures.pop(shard, None)
            if not self._backlogs.get(shard):
                self._not_before.pop(shard, None)
                self._pacer.forget(shard)

    def _expire(self, now: float) -> None:
        ttl = self.config.record_ttl
        stats = self.stats
        fresh = self._fresh
        while fresh and now - fresh[0].enqueued_at > ttl:
            self._fresh_bytes -= fresh.popleft().size
            stats.dropped_expired += 1
        for queue in self._backlogs.values():
            while queue and now - queue[0].enqueued_at > ttl:
                if queue.popleft().maybe_written:
                    stats.dropped_unknown += 1
                else:
                    stats.dropped_expired += 1
                self._backlog_size -= 1
        if self._expire_in_flight:
            for flight in self._flights:
                if now - flight.oldest > ttl:
                    self._give_up_in_flight(flight, now)


def _age(record: Record) -> float:
    return record.enqueued_at
