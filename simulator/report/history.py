"""The recent past of a run, for the dashboard: shard rates over a window, short histories.

:class:`RunHistory` samples a run's counters once per simulated second, on the run loop's own
thread (the counters are never read while the loop changes them). From the samples it smooths
each shard's rate over the last :data:`WINDOW_SECONDS` (requests are accepted in bursts, so one
second's total swings around a steady load) and keeps a per-second history of records accepted,
throttles and p99 latency for the dashboard's sparklines. It takes time as an argument: the
simulation clock's seconds, whatever the speed.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass

from simulator.engine.counters import RunStats, StatsSnapshot

#: Simulated seconds the shard bars are averaged over.
WINDOW_SECONDS = 5
#: Simulated seconds of history kept for the sparklines.
HISTORY_SECONDS = 120


@dataclass(frozen=True, slots=True, kw_only=True)
class RecentHistory:
    """Per simulated second, oldest first: what the sparklines show."""

    accepted: tuple[int, ...] = ()
    """Records accepted in each second."""
    throttled: tuple[int, ...] = ()
    """Entries rejected as throttled in each second."""
    p99_ms: tuple[float, ...] = ()
    """The p99 latency of the records accepted in each second (0 when none were)."""


@dataclass(frozen=True, slots=True)
class _Sample:
    second: int
    shards: dict[str, tuple[int, int]]
    """Shard id -> records and bytes accepted so far."""


class RunHistory:
    """Samples a run once per simulated second; call :meth:`sample` on every pass of the loop.

    Args:
        window: seconds the shard rates are averaged over.
        keep: seconds of history kept.
    """

    def __init__(self, window: int = WINDOW_SECONDS, keep: int = HISTORY_SECONDS) -> None:
        self.window = window
        self._samples: deque[_Sample] = deque(maxlen=window + 1)
        self._accepted: deque[int] = deque(maxlen=keep)
        self._throttled: deque[int] = deque(maxlen=keep)
        self._p99: deque[float] = deque(maxlen=keep)
        self._second: int | None = None
        self._delivered = 0
        self._throttles = 0
        self._latency: dict[int, int] = {}

    def sample(self, stats: RunStats, now: float) -> None:
        """Take a sample when simulated time has entered a new second (cheap otherwise)."""
        second = int(now)
        if second == self._second:
            return
        if self._second is not None and second > self._second:
            # The counts since the last sample belong to the seconds in between.
            seconds = second - self._second
            accepted = stats.delivered - self._delivered
            throttled = stats.throttled - self._throttles
            p99 = _p99_since(stats.latency.counts, self._latency)
            for _ in range(min(seconds, self._accepted.maxlen or seconds)):
                self._accepted.append(round(accepted / seconds))
                self._throttled.append(round(throttled / seconds))
                self._p99.append(p99)
        self._second = second
        self._delivered = stats.delivered
        self._throttles = stats.throttled
        self._latency = dict(stats.latency.counts)
        shards = {sid: (s.records, s.bytes) for sid, s in stats.shards.items()}
        self._samples.append(_Sample(second, shards))

    def smoothed(self, snapshot: StatsSnapshot) -> StatsSnapshot:
        """``snapshot`` with each shard's rate the mean over the window (or what there is)."""
        if len(self._samples) < 2:
            return snapshot
        first, last = self._samples[0], self._samples[-1]
        span = last.second - first.second
        shards = []
        for shard in snapshot.shards:
            records, size = last.shards.get(shard.shard_id, (0, 0))
            records_before, size_before = first.shards.get(shard.shard_id, (0, 0))
            shards.append(
                dataclasses.replace(
                    shard,
                    records_per_s=round((records - records_before) / span),
                    bytes_per_s=round((size - size_before) / span),
                )
            )
        return dataclasses.replace(snapshot, shards=tuple(shards))

    @property
    def window_seconds(self) -> int:
        """Seconds the shard rates are averaged over now (fewer at the start of a run)."""
        if len(self._samples) < 2:
            return 1
        return self._samples[-1].second - self._samples[0].second

    def recent(self) -> RecentHistory:
        """The history as it is now."""
        return RecentHistory(
            accepted=tuple(self._accepted),
            throttled=tuple(self._throttled),
            p99_ms=tuple(self._p99),
        )


def _p99_since(now: dict[int, int], before: dict[int, int]) -> float:
    """The p99 of the latencies counted in ``now`` but not yet in ``before`` (whole ms)."""
    added = sorted((ms, count - before.get(ms, 0)) for ms, count in now.items())
    total = sum(count for _, count in added)
    if total <= 0:
        return 0.0
    rank = max(1, math.ceil(total * 0.99))
    seen = 0
    for ms, count in added:
        seen += count
        if seen >= rank:
            return float(ms)
    return float(added[-1][0])
