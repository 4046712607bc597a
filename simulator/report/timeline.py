"""A run, second by second, for the HTML report: rates, throttling, latency and each shard's load.

Each shard's records per second are exact: the run's counters keep them, by the second each
record was accepted in (:meth:`~simulator.engine.counters.RunStats.keep_per_second`), and records
accepted per second is their sum. Records made, entries throttled and the p99 latency are
sampled: :class:`RunTimeline` is called on every pass of the run loop, as the dashboard's sampler
is, and reads the counters once per simulated second, on the loop's own thread; what changed
since the last sample is split over the seconds in between, the remainder on the last, so those
series add up to the summary's totals too. It keeps a few numbers a second and one a second per
shard, and takes time as an argument: the simulation clock's seconds.
"""

from __future__ import annotations

from typing import Any

from simulator.engine.counters import LatencyHistogram, RunStats
from simulator.report.history import _p99_since

#: The latency curve's points: every whole percentile, 0 to 100.
PERCENTILES = tuple(range(101))


class RunTimeline:
    """Per simulated second of a run, from its start: records made, accepted and throttled, the
    p99 latency of the records accepted, and the records each shard accepted.

    Args:
        stats: the run's counters; from now on they keep each shard's records per second.
        start: the run's simulated start (epoch seconds).
    """

    def __init__(self, stats: RunStats, start: float) -> None:
        stats.keep_per_second()
        self.start = int(start)
        self._second = self.start
        self.generated: list[int] = []
        self.throttled: list[int] = []
        self.p99_ms: list[float] = []
        self.shards: dict[str, list[int]] = {}
        self.accepted: list[int] = []
        self.latency_curve: list[float] = []
        self._generated = self._throttles = 0
        self._latency: dict[int, int] = {}

    def __call__(self, simulation: Any) -> None:
        """Sample the run (a :class:`~simulator.engine.runner.Simulation`) on a pass."""
        self.sample(simulation.stats, simulation.clock.now())

    def sample(self, stats: RunStats, now: float) -> None:
        """Take a sample when simulated time has passed a whole second (cheap otherwise)."""
        if int(now) > self._second:
            self._take(stats, int(now) - self._second)

    def finish(self, stats: RunStats, now: float) -> None:
        """The last sample, at the end of the run: every series now adds up to its total."""
        self._take(stats, max(1, int(now) + 1 - self._second))
        per_shard = {sid: s.records_per_second() for sid, s in sorted(stats.shards.items())}
        last = max((max(seconds, default=0) for seconds in per_shard.values()), default=0)
        length = max(len(self.generated), last + 1 - self.start)
        for series in (self.generated, self.throttled):
            series.extend([0] * (length - len(series)))
        self.p99_ms.extend([0.0] * (length - len(self.p99_ms)))
        self.shards = {
            sid: [seconds.get(self.start + i, 0) for i in range(length)]
            for sid, seconds in per_shard.items()
        }
        self.accepted = [sum(column) for column in zip(*self.shards.values(), strict=True)]
        self.latency_curve = latency_curve(stats.latency)

    def _take(self, stats: RunStats, seconds: int) -> None:
        self._second += seconds
        _spread(self.generated, stats.generated - self._generated, seconds)
        _spread(self.throttled, stats.throttled - self._throttles, seconds)
        self.p99_ms.extend([_p99_since(stats.latency.counts, self._latency)] * seconds)
        self._generated, self._throttles = stats.generated, stats.throttled
        self._latency = dict(stats.latency.counts)

    def to_dict(self) -> dict[str, Any]:
        """The series as plain JSON values; ``seconds`` counts from the run's start."""
        return {
            "start": self.start,
            "seconds": list(range(len(self.generated))),
            "generated": self.generated,
            "accepted": self.accepted,
            "throttled": self.throttled,
            "p99_ms": self.p99_ms,
            "shards": self.shards,
            "latency_percentiles": list(PERCENTILES),
            "latency_ms": self.latency_curve,
        }


def _spread(series: list[int], count: int, seconds: int) -> None:
    """Append ``count`` spread over ``seconds`` seconds, the remainder on the last one."""
    each = count // seconds
    series.extend([each] * (seconds - 1))
    series.append(count - each * (seconds - 1))


def latency_curve(histogram: LatencyHistogram) -> list[float]:
    """The latency at every whole percentile, 0 to 100 (a distribution in 101 points)."""
    return [histogram.percentile(p) for p in PERCENTILES]
