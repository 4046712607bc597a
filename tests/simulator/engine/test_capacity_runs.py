"""Whole runs on an on-demand built-in stream: splits followed, balanced keys dealt again, AUTO."""

from collections import Counter

import pytest

from simulator.engine.aggregation import parse_batching
from simulator.engine.capacity import CapacityMode, OnDemandPolicy
from simulator.engine.clock import VirtualClock
from simulator.engine.fleet import FleetConfig
from simulator.engine.keys import PartitionKeyStrategy
from simulator.engine.runner import Simulation, SimulationConfig
from simulator.engine.shards import ShardLimits
from simulator.engine.sink import RecordDistribution
from tests.streams import RecordingStream

START = 1_764_186_600.0
#: Shards a tenth of Kinesis's size keep these runs small: 4 of them take 400 records/s.
SMALL = ShardLimits(records_per_second=100, bytes_per_second=100 * 1024)


def _config(strategy, riders, duration):
    return SimulationConfig(
        fleet=FleetConfig(riders=riders),
        duration=duration,
        strategy=PartitionKeyStrategy(strategy),
        seed=3,
    )


def test_balanced_keys_are_dealt_again_when_the_on_demand_stream_splits():
    stream = RecordingStream(
        4,
        limits=SMALL,
        capacity=CapacityMode.ON_DEMAND,
        policy=OnDemandPolicy(scale_out_seconds=5),
    )
    # 250 records/s: a peak that asks for 5 shards (twice 250 over 100 a shard).
    simulation = Simulation(_config("balanced", 250, 40), stream, VirtualClock(START))
    result = simulation.run()
    assert result.stats.delivered == result.stats.generated == 250 * 40
    assert result.stats.dropped == 0
    assert len(stream.stream.scale_outs) == 1
    split_at = stream.stream.scale_outs[0][0]
    assert simulation.rekeyed == 1
    later = [(sid, r.rider) for sid, r, now in stream.accepted if now >= split_at + 5]
    open_ids = [s.shard_id for s in stream.describe().shards]
    assert len(open_ids) == 5
    per_shard = Counter(sid for sid, _ in later)
    assert set(per_shard) == set(open_ids)
    mean = len(later) / 5
    assert all(abs(count - mean) <= 0.05 * mean for count in per_shard.values())
    shards_of_rider: dict[int, set[str]] = {}
    for sid, rider in later:
        shards_of_rider.setdefault(rider, set()).add(sid)
    assert all(len(shards) == 1 for shards in shards_of_rider.values())


def test_records_throttled_before_a_split_are_delivered_after_it():
    stream = RecordingStream(
        4,
        limits=SMALL,
        capacity=CapacityMode.ON_DEMAND,
        policy=OnDemandPolicy(scale_out_seconds=3),
    )
    # 600 records/s at once on 400 records/s of shards: throttled until the stream splits.
    config = _config("random", 600, 30)
    result = Simulation(config, stream, VirtualClock(START)).run()
    assert result.stats.throttled > 0
    assert result.stats.delivered == result.stats.generated == 600 * 30
    assert stream.stream.scale_outs[-1][1] >= 12


def test_auto_sends_no_key_and_spreads_evenly_over_the_open_shards():
    stream = RecordingStream(
        4, capacity=CapacityMode.ON_DEMAND, distribution=RecordDistribution.AUTO
    )
    result = Simulation(_config("auto", 200, 20), stream, VirtualClock(START)).run()
    assert result.stats.delivered == result.stats.generated == 4000
    assert {key for _, _, key, _ in stream.rows()} == {""}
    per_shard = Counter(sid for sid, *_ in stream.rows())
    assert len(per_shard) == 4
    assert all(abs(count - 1000) <= 50 for count in per_shard.values())


def test_auto_needs_a_stream_that_spreads_records_itself():
    with pytest.raises(ValueError, match="on-demand"):
        Simulation(_config("auto", 10, 5), RecordingStream(4), VirtualClock(START))


@pytest.mark.parametrize("mode", ["kpl", "buffered:5"])
def test_auto_refuses_aggregation_and_buffering(mode):
    stream = RecordingStream(
        4, capacity=CapacityMode.ON_DEMAND, distribution=RecordDistribution.AUTO
    )
    with pytest.raises(ValueError, match="aggregated"):
        Simulation(
            _config("auto", 10, 5), stream, VirtualClock(START), batching=parse_batching(mode)
        )
