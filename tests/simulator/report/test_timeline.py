"""A run second by second: every series adds up to the summary's totals."""

from __future__ import annotations

from simulator.engine.batching import Record
from simulator.engine.clock import VirtualClock
from simulator.engine.counters import RunStats
from simulator.engine.fleet import FleetConfig
from simulator.engine.runner import Simulation, SimulationConfig
from simulator.engine.shards import SHARD_RECORDS_PER_SECOND, LocalStream
from simulator.report.timeline import PERCENTILES, RunTimeline, _spread

START = 1_764_187_200.0


def run_with_timeline(riders: int, shards: int, duration: int) -> tuple[Simulation, RunTimeline]:
    config = SimulationConfig(fleet=FleetConfig(riders=riders), duration=duration, seed=3)
    clock = VirtualClock(START)
    simulation = Simulation(config, LocalStream(shards), clock)
    timeline = RunTimeline(simulation.stats, simulation.start)
    result = simulation.run(on_pass=timeline)
    timeline.finish(result.stats, clock.now())
    return simulation, timeline


def test_a_throttled_run_adds_up_second_by_second_and_no_shard_passes_its_limit():
    simulation, timeline = run_with_timeline(riders=1200, shards=1, duration=30)
    stats = simulation.stats
    series = timeline.to_dict()
    assert stats.throttled > 0  # 1,200 riders on one shard of 1,000 records/s
    assert sum(series["generated"]) == stats.generated == 1200 * 30
    assert sum(series["accepted"]) == stats.delivered
    assert sum(series["throttled"]) == stats.throttled
    (shard_id, shard), *_ = stats.shards.items()
    per_second = series["shards"][shard_id]
    assert sum(per_second) == shard.records
    assert max(per_second) == shard.peak_records_per_s <= SHARD_RECORDS_PER_SECOND
    # The backlog drains after the riders stop: the run is longer than the ride.
    length = len(series["seconds"])
    assert length > 30
    assert {len(series[k]) for k in ("generated", "accepted", "throttled", "p99_ms")} == {length}
    assert max(series["p99_ms"]) > 0


def test_each_shard_gets_its_own_series_and_the_latency_curve_is_the_histogram():
    simulation, timeline = run_with_timeline(riders=300, shards=4, duration=10)
    stats = simulation.stats
    series = timeline.to_dict()
    assert sorted(series["shards"]) == sorted(stats.shards)
    for shard_id, shard in stats.shards.items():
        assert sum(series["shards"][shard_id]) == shard.records > 0
        assert max(series["shards"][shard_id]) == shard.peak_records_per_s
    curve = series["latency_ms"]
    assert len(curve) == len(PERCENTILES) == 101
    assert curve == sorted(curve)
    assert curve[50] == stats.latency.percentile(50)
    assert curve[99] == stats.latency.percentile(99)
    assert curve[100] == stats.latency.max_ms


def test_records_per_second_are_kept_only_when_asked_and_by_the_second_of_acceptance():
    stats = RunStats(["shardId-000000000000"])
    shard = stats.shards["shardId-000000000000"]
    assert shard.per_second is None
    stats.keep_per_second()
    record = Record(b"x", "k", None, 10.0)
    stats.record_delivered([record, record], ["shardId-000000000000"] * 2, now=11.2)
    stats.record_delivered([record], ["shardId-000000000000"], now=11.9)
    stats.record_delivered([record], ["shardId-000000000000"], now=13.0)
    # A shard first seen later keeps its seconds too.
    stats.record_delivered([record], ["shardId-000000000009"], now=13.5)
    assert shard.records_per_second() == {11: 3, 13: 1}
    assert stats.shards["shardId-000000000009"].records_per_second() == {13: 1}


def test_counts_between_samples_are_spread_with_the_remainder_on_the_last_second():
    series: list[int] = []
    _spread(series, 10, 3)
    _spread(series, 2, 1)
    assert series == [3, 3, 4, 2]
