"""Capacity modes of the built-in stream: on-demand scaling by splits, its throttling, AUTO."""

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.engine.batching import Record
from simulator.engine.capacity import CapacityMode, OnDemandPolicy, split_shards
from simulator.engine.shards import HASH_SPACE_MAX, LocalStream, split_hash_space
from simulator.engine.sink import RecordDistribution

KIB = 1024


def _covers_once(shards):
    ordered = sorted(shards, key=lambda s: s.starting_hash_key)
    assert ordered[0].starting_hash_key == 0
    assert ordered[-1].ending_hash_key == HASH_SPACE_MAX
    for low, high in zip(ordered, ordered[1:], strict=False):
        assert high.starting_hash_key == low.ending_hash_key + 1
    assert all(s.starting_hash_key <= s.ending_hash_key for s in ordered)


@given(start=st.integers(1, 40), extra=st.integers(0, 60))
def test_a_split_covers_the_hash_space_exactly_once_with_new_ids_and_closed_parents(start, extra):
    before = split_hash_space(start)
    after, closed = split_shards(before, start + extra, start)
    _covers_once(after)
    assert len(after) == start + extra
    ids = [s.shard_id for s in after] + [s.shard_id for s in closed]
    assert len(set(ids)) == len(ids)
    old = {s.shard_id for s in before}
    for shard in after:
        if shard.shard_id not in old:
            assert shard.parent_shard_id in {c.shard_id for c in closed}
            assert int(shard.shard_id.rsplit("-", 1)[1]) >= start
    for parent in closed:
        children = [s for s in after if s.parent_shard_id == parent.shard_id]
        # A parent split again is closed too; its range is still covered by its descendants.
        assert len(children) <= 2


def _spread_records(count, size):
    """``count`` records at explicit hash keys spaced evenly over the hash space."""
    step = (HASH_SPACE_MAX + 1) // count
    return [Record(b"x" * (size - 1), "k", str(i * step + step // 2), 0.0) for i in range(count)]


def _second(stream, records, second):
    """Write ``records`` during ``second`` in 500-record requests; entries throttled."""
    throttled = 0
    for i in range(0, len(records), 500):
        outcome = stream.put_records(records[i : i + 500], second + i / len(records) / 2)
        throttled += outcome.failed_record_count
    return throttled


def test_an_on_demand_stream_starts_with_4_mib_per_second_on_4_shards_and_never_throttles_below():
    stream = LocalStream(1, capacity=CapacityMode.ON_DEMAND)
    assert len(stream.describe().shards) == 4
    records = _spread_records(3800, KIB)  # 3.7 MiB/s, 950 records/s per shard
    throttled = [_second(stream, records, 1000 + s) for s in range(200)]
    assert throttled == [0] * 200


def test_a_jump_to_three_times_the_peak_throttles_until_the_scale_out_then_stops():
    policy = OnDemandPolicy(scale_out_seconds=30)
    stream = LocalStream(4, capacity=CapacityMode.ON_DEMAND, policy=policy)
    steady = _spread_records(2000, 100)  # peak 2,000 records/s: 4 shards hold twice that
    for s in range(20):
        assert _second(stream, steady, 1000 + s) == 0
    jump = _spread_records(6000, 100)
    throttled = [_second(stream, jump, 1020 + s) for s in range(60)]
    # 4 shards take 4,000 of the 6,000; the next second shows that peak, and 30 s later the
    # stream splits to twice it (8 shards), which takes all 6,000.
    assert all(t == 2000 for t in throttled[:31])
    assert throttled[31:] == [0] * 29
    assert stream.scale_outs == [(1051, 8)]
    shards = stream.describe().shards
    assert len(shards) == 8
    _covers_once(shards)
    assert {s.shard_id for s in stream.closed} == {f"shardId-{i:012d}" for i in range(4)}
    assert {s.shard_id for s in shards} == {f"shardId-{i:012d}" for i in range(4, 12)}
    assert all(s.parent_shard_id is not None for s in shards)


def test_a_sequence_number_keeps_growing_on_each_new_shard():
    stream = LocalStream(
        4, capacity=CapacityMode.ON_DEMAND, policy=OnDemandPolicy(scale_out_seconds=0)
    )
    _second(stream, _spread_records(6000, 100), 0)
    outcome = stream.put_records(_spread_records(500, 100), 2.0)
    per_shard: dict[str | None, list[int]] = {}
    for sid, seq in zip(outcome.shard_ids, outcome.sequence_numbers, strict=True):
        per_shard.setdefault(sid, []).append(int(seq or -1))
    assert len(per_shard) == 8
    assert all(seqs == sorted(set(seqs)) for seqs in per_shard.values())


def test_one_hot_key_still_throttles_at_one_shards_limit_however_large_the_stream():
    stream = LocalStream(
        4, capacity=CapacityMode.ON_DEMAND, policy=OnDemandPolicy(scale_out_seconds=5)
    )
    hot = [Record(b"x" * 99, "class-1", None, 0.0) for _ in range(2000)]
    throttled = [_second(stream, hot, 1000 + s) for s in range(40)]
    assert throttled == [1000] * 40


def test_warm_throughput_is_capacity_from_the_start():
    policy = OnDemandPolicy(warm_throughput_mibps=20)
    stream = LocalStream(4, capacity=CapacityMode.ON_DEMAND_ADVANTAGE, policy=policy)
    assert len(stream.describe().shards) == 20
    records = _spread_records(19_000, 1000)
    assert [_second(stream, records, 1000 + s) for s in range(3)] == [0, 0, 0]


def test_a_provisioned_stream_never_splits():
    stream = LocalStream(4)
    throttled = [_second(stream, _spread_records(6000, 100), 1000 + s) for s in range(100)]
    assert throttled == [2000] * 100
    assert stream.scale_outs == [] and stream.closed == []


def test_auto_deals_records_evenly_over_the_open_shards_whatever_the_key():
    stream = LocalStream(4, capacity=CapacityMode.ON_DEMAND, distribution=RecordDistribution.AUTO)
    records = [Record(b"x" * 200, "", None, 0.0) for _ in range(3000)]
    outcome = stream.put_records(records, 1000.0)
    counts = Counter(outcome.shard_ids)
    assert outcome.failed_record_count == 0
    assert len(counts) == 4
    mean = 3000 / 4
    assert all(abs(c - mean) <= 0.05 * mean for c in counts.values())
    assert stream.describe().distribution is RecordDistribution.AUTO


def test_auto_is_refused_on_a_provisioned_stream():
    with pytest.raises(ValueError, match="on-demand"):
        LocalStream(4, distribution=RecordDistribution.AUTO)
