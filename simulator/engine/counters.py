"""What a run did, as the engine counts it: counts, per-shard load, latency, and recent rates.

:class:`RunStats` is written by the producer as results come in; the reports (dashboard, summary,
compare) only read it. :meth:`RunStats.snapshot` gives an
immutable copy for the dashboard, and :meth:`RunStats.summary` the figures ``--json`` prints.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from simulator.engine.batching import PUT_PAYLOAD_UNIT_BYTES, Record, put_payload_units

#: Seconds of per-second rates kept for the dashboard.
RATE_WINDOW_SECONDS = 10


class LatencyHistogram:
    """Latencies counted per whole millisecond: exact percentiles at 1 ms resolution.

    Memory stays bounded because the record TTL bounds every latency.
    """

    __slots__ = ("counts", "count", "max_ms")

    def __init__(self) -> None:
        #: Whole milliseconds -> how many records took that long.
        self.counts: dict[int, int] = {}
        self.count = 0
        self.max_ms = 0

    def add(self, ms: float) -> None:
        """Record one latency."""
        bucket = int(ms) if ms > 0 else 0
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.count += 1
        if bucket > self.max_ms:
            self.max_ms = bucket

    def add_counts(self, counts: Counter[int]) -> None:
        """Record many latencies at once: whole milliseconds -> how many took that long."""
        if min(counts) < 0:
            counts[0] += sum(counts.pop(ms) for ms in [ms for ms in counts if ms < 0])
        mine = self.counts
        for ms, count in counts.items():
            mine[ms] = mine.get(ms, 0) + count
        self.count += counts.total()
        self.max_ms = max(self.max_ms, max(counts))

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0..100) in whole ms; 0 when empty."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * p / 100))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return float(bucket)
        return float(self.max_ms)


class ShardStats:
    """What one shard accepted."""

    __slots__ = ("shard_id", "records", "bytes", "peak_records_per_s", "peak_bytes_per_s",
                 "_second", "_second_records", "_second_bytes", "last_records_per_s",
                 "last_bytes_per_s", "per_second")  # fmt: skip

    def __init__(self, shard_id: str) -> None:
        self.shard_id = shard_id
        self.records = 0
        self.bytes = 0
        self.peak_records_per_s = 0
        self.peak_bytes_per_s = 0
        self.last_records_per_s = 0
        self.last_bytes_per_s = 0
        self._second = -1
        self._second_records = 0
        self._second_bytes = 0
        #: Records accepted in each past second, when kept (:meth:`RunStats.keep_per_second`).
        self.per_second: dict[int, int] | None = None

    def add(self, size: int, second: int, count: int = 1) -> None:
        """Count ``count`` records of ``size`` bytes in all, accepted during ``second``."""
        if second != self._second:
            self._roll(second)
        self.records += count
        self.bytes += size
        self._second_records += count
        self._second_bytes += size
        if self._second_records > self.peak_records_per_s:
            self.peak_records_per_s = self._second_records
        if self._second_bytes > self.peak_bytes_per_s:
            self.peak_bytes_per_s = self._second_bytes

    def rate(self, now_second: int) -> tuple[int, int]:
        """Records and bytes accepted in the last complete second before ``now_second``."""
        if now_second - 1 == self._second:
            return self._second_records, self._second_bytes
        if now_second == self._second:
            return self.last_records_per_s, self.last_bytes_per_s
        return 0, 0

    def records_per_second(self) -> dict[int, int]:
        """Records accepted in each second so far (when kept): the HTML report's heat map."""
        seconds = dict(self.per_second or {})
        if self._second >= 0:
            seconds[self._second] = seconds.get(self._second, 0) + self._second_records
        return seconds

    def _roll(self, second: int) -> None:
        kept = self.per_second
        if kept is not None and self._second >= 0:
            kept[self._second] = kept.get(self._second, 0) + self._second_records
        consecutive = second == self._second + 1
        self.last_records_per_s = self._second_records if consecutive else 0
        self.last_bytes_per_s = self._second_bytes if consecutive else 0
        self._second = second
        self._second_records = 0
        self._second_bytes = 0


class RateWindow:
    """Counts per whole second over the last few seconds."""

    __slots__ = ("_seconds",)

    def __init__(self) -> None:
        self._seconds: deque[list[int]] = deque(maxlen=RATE_WINDOW_SECONDS + 1)

    def add(self, second: int, count: int = 1) -> None:
        """Count ``count`` events during ``second``."""
        seconds = self._seconds
        if seconds and seconds[-1][0] == second:
            seconds[-1][1] += count
        elif not seconds or seconds[-1][0] < second:
            seconds.append([second, count])
        else:
            for entry in seconds:
                if entry[0] == second:
                    entry[1] += count
                    break

    def per_second(self, now_second: int, window: int = 5, *, since: int | None = None) -> float:
        """The mean rate over the ``window`` complete seconds before ``now_second``, counting
        none before ``since`` (the run's first whole second): a run's first seconds are not
        averaged with seconds before it began. 0 until a second is complete."""
        first = now_second - window if since is None else max(now_second - window, since)
        if first >= now_second:
            return 0.0
        total = sum(c for s, c in self._seconds if first <= s < now_second)
        return total / (now_second - first)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardSnapshot:
    """One shard's load at a moment."""

    shard_id: str
    records: int
    bytes: int
    records_per_s: int
    bytes_per_s: int
    peak_records_per_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsSnapshot:
    """Everything a dashboard shows, frozen at one moment of simulation time."""

    now: float
    elapsed: float
    duration: float
    generated: int
    delivered: int
    throttled: int
    retries: int
    dropped: int
    failed_requests: int
    batches: int
    in_flight_requests: int
    buffered: int
    batch_fill: float
    generated_per_s: float
    delivered_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    shards: tuple[ShardSnapshot, ...]
    leaderboard: dict[int, list[tuple[str, int, float]]] = field(default_factory=dict)


class RunStats:
    """The counters of one run; every record generated ends up delivered or dropped."""

    def __init__(self, shard_ids: list[str]) -> None:
        self.generated = 0
        self.delivered = 0
        self.messages_delivered = 0
        self.throttled = 0
        """Entries rejected as throttled, counting each attempt."""
        self.internal_failures = 0
        self.retries = 0
        """Entries sent again after a failure."""
        self.dropped_expired = 0
        """Given up on at the TTL; no request carrying it can have written it."""
        self.dropped_unknown = 0
        """Given up on with the outcome unknown (a request carrying it got no answer, or was
        still in flight at the TTL or at the end): it may be in the stream."""
        self.dropped_interrupted = 0
        self.dropped_oversized = 0
        self.accepted_after_drop = 0
        """Of ``dropped_unknown``, records the stream said it accepted after the TTL."""
        self.failed_requests = 0
        self.batches = 0
        self.batch_records = 0
        self.put_payload_units = 0
        self.latency = LatencyHistogram()
        self.shards = {sid: ShardStats(sid) for sid in shard_ids}
        self.generated_rate = RateWindow()
        self.delivered_rate = RateWindow()
        self._keep_per_second = False

    def keep_per_second(self) -> None:
        """Keep each shard's records per second (one number a shard a second) from now on."""
        self._keep_per_second = True
        for shard in self.shards.values():
            if shard.per_second is None:
                shard.per_second = {}

    @property
    def dropped(self) -> int:
        """Records that will never be delivered, for whatever reason."""
        return (
            self.dropped_expired
            + self.dropped_unknown
            + self.dropped_interrupted
            + self.dropped_oversized
        )

    def record_generated(self, now: float, count: int = 1) -> None:
        """Count records the fleet produced."""
        self.generated += count
        self.generated_rate.add(int(now), count)

    def record_delivered(
        self,
        records: list[Record],
        shard_ids: list[str | None],
        now: float,
        *,
        accepted_at: float | None = None,
    ) -> None:
        """Count records answered at ``now`` as accepted by the shards in ``shard_ids``; per
        second, they count in the second of ``accepted_at`` (when the stream took them), if
        given: the built-in stream spends that second's budget however long the answer takes."""
        if not records:
            return
        count = len(records)
        sizes = [record.size for record in records]
        now_ms = now * 1000
        self.latency.add_counts(
            Counter([int(now_ms - record.generated_at * 1000) for record in records])
        )
        self.delivered += count
        self.messages_delivered += sum([record.messages for record in records])
        # One PUT payload unit a record, and one more for each further started 25 KB.
        self.put_payload_units += count + sum(
            [put_payload_units(size) - 1 for size in sizes if size > PUT_PAYLOAD_UNIT_BYTES]
        )
        second = int(now if accepted_at is None else accepted_at)
        self.delivered_rate.add(second, count)
        per_shard: dict[str | None, list[int]] = {}  # shard -> [records, bytes]
        for shard_id, size in zip(shard_ids, sizes, strict=True):
            load = per_shard.get(shard_id)
            if load is None:
                per_shard[shard_id] = [1, size]
            else:
                load[0] += 1
                load[1] += size
        for shard_id, (records_on_shard, size) in per_shard.items():
            if shard_id is None:
                continue
            shard = self.shards.get(shard_id)
            if shard is None:
                shard = self.shards[shard_id] = ShardStats(shard_id)
                if self._keep_per_second:
                    shard.per_second = {}
            shard.add(size, second, records_on_shard)

    def snapshot(
        self,
        *,
        now: float,
        start: float,
        duration: float,
        in_flight_requests: int,
        buffered: int,
        leaderboard: dict[int, list[tuple[str, int, float]]] | None = None,
    ) -> StatsSnapshot:
        """An immutable view for the dashboard."""
        second = int(now)
        shards = []
        for s in self.shards.values():
            rps, bps = s.rate(second)
            shards.append(
                ShardSnapshot(
                    shard_id=s.shard_id,
                    records=s.records,
                    bytes=s.bytes,
                    records_per_s=rps,
                    bytes_per_s=bps,
                    peak_records_per_s=s.peak_records_per_s,
                )
            )
        return StatsSnapshot(
            now=now,
            elapsed=max(0.0, now - start),
            duration=duration,
            generated=self.generated,
            delivered=self.delivered,
            throttled=self.throttled,
            retries=self.retries,
            dropped=self.dropped,
            failed_requests=self.failed_requests,
            batches=self.batches,
            in_flight_requests=in_flight_requests,
            buffered=buffered,
            batch_fill=self.batch_records / self.batches if self.batches else 0.0,
            generated_per_s=self.generated_rate.per_second(second, since=math.ceil(start)),
            delivered_per_s=self.delivered_rate.per_second(second, since=math.ceil(start)),
            latency_p50_ms=self.latency.percentile(50),
            latency_p95_ms=self.latency.percentile(95),
            latency_p99_ms=self.latency.percentile(99),
            shards=tuple(shards),
            leaderboard=leaderboard or {},
        )

    def summary(self) -> dict[str, Any]:
        """The run's figures as plain JSON-able values (the ``--json`` output)."""
        return {
            "generated": self.generated,
            "delivered": self.delivered,
            "throttled": self.throttled,
            "internal_failures": self.internal_failures,
            "retries": self.retries,
            "dropped": self.dropped,
            "dropped_expired": self.dropped_expired,
            "dropped_unknown": self.dropped_unknown,
            "dropped_interrupted": self.dropped_interrupted,
            "dropped_oversized": self.dropped_oversized,
            "accepted_after_drop": self.accepted_after_drop,
            "failed_requests": self.failed_requests,
            "batches": self.batches,
            "mean_batch_records": round(self.batch_records / self.batches, 1)
            if self.batches
            else 0.0,
            "put_payload_units": self.put_payload_units,
            "latency_ms": {
                "p50": round(self.latency.percentile(50), 1),
                "p95": round(self.latency.percentile(95), 1),
                "p99": round(self.latency.percentile(99), 1),
                "max": float(self.latency.max_ms),
            },
            "shards": [
                {
                    "shard_id": s.shard_id,
                    "records": s.records,
                    "bytes": s.bytes,
                    "peak_records_per_s": s.peak_records_per_s,
                    "peak_bytes_per_s": s.peak_bytes_per_s,
                }
                for s in sorted(self.shards.values(), key=lambda s: s.shard_id)
            ],
        }
