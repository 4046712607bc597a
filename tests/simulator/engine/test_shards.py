import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.engine.batching import Record
from simulator.engine.shards import (
    HASH_SPACE_MAX,
    THROTTLED,
    LocalStream,
    ShardLimits,
    ShardRouter,
    split_hash_space,
)


@pytest.mark.parametrize("count", range(1, 65))
def test_hash_ranges_cover_the_space_without_gap_or_overlap_like_create_stream(count):
    shards = split_hash_space(count)
    step = 2**128 // count
    assert shards[0].starting_hash_key == 0
    assert shards[-1].ending_hash_key == HASH_SPACE_MAX
    for i, shard in enumerate(shards):
        assert shard.shard_id == f"shardId-{i:012d}"
        assert shard.starting_hash_key == i * step
        if i < count - 1:
            assert shard.ending_hash_key == (i + 1) * step - 1
            assert shards[i + 1].starting_hash_key == shard.ending_hash_key + 1


def test_three_shards_match_the_aws_cli_example():
    shards = split_hash_space(3)
    assert [(s.starting_hash_key, s.ending_hash_key) for s in shards] == [
        (0, 113427455640312821154458202477256070484),
        (113427455640312821154458202477256070485, 226854911280625642308916404954512140969),
        (226854911280625642308916404954512140970, 340282366920938463463374607431768211455),
    ]


@given(key=st.text(min_size=1, max_size=256), count=st.integers(1, 64))
def test_a_partition_key_lands_on_the_shard_its_md5_picks(key, count):
    shards = split_hash_space(count)
    value = int.from_bytes(hashlib.md5(key.encode("utf-8")).digest(), "big")
    expected = [s for s in shards if s.starting_hash_key <= value <= s.ending_hash_key]
    assert ShardRouter(shards).shard_for(key) == expected[0]


@given(value=st.integers(0, HASH_SPACE_MAX), count=st.integers(1, 64))
def test_an_explicit_hash_key_overrides_the_partition_key(value, count):
    shards = split_hash_space(count)
    router = ShardRouter(shards)
    shard = router.shard_for("ignored", str(value))
    assert shard.starting_hash_key <= value <= shard.ending_hash_key


def _records(count, key="k", size=100):
    return [Record(b"x" * size, key, None, 0.0) for _ in range(count)]


def test_a_shard_accepts_1000_records_a_second_and_throttles_the_rest():
    stream = LocalStream(1)
    first = stream.put_records(_records(500), now=10.1)
    second = stream.put_records(_records(500), now=10.5)
    third = stream.put_records(_records(10), now=10.9)
    assert first.failed_record_count == second.failed_record_count == 0
    assert third.failed_record_count == 10
    assert set(third.error_codes) == {THROTTLED}
    assert third.shard_ids == [None] * 10
    next_second = stream.put_records(_records(10), now=11.0)
    assert next_second.failed_record_count == 0


def test_a_shard_accepts_one_mib_a_second():
    stream = LocalStream(1)
    outcome = stream.put_records(_records(12, size=100_000), now=5.0)
    assert outcome.failed_record_count == 2  # 10 records of ~100 kB fill 1 MiB


def test_limits_are_configurable():
    stream = LocalStream(1, limits=ShardLimits(records_per_second=3))
    assert stream.put_records(_records(5), now=0.0).failed_record_count == 2


def test_sequence_numbers_grow_within_a_shard():
    stream = LocalStream(2)
    outcome = stream.put_records([Record(b"x", str(i), None, 0.0) for i in range(200)], now=1.0)
    by_shard: dict[str, list[int]] = {}
    for shard_id, sequence in zip(outcome.shard_ids, outcome.sequence_numbers, strict=True):
        assert shard_id is not None and sequence is not None
        by_shard.setdefault(shard_id, []).append(int(sequence))
    assert len(by_shard) == 2
    for numbers in by_shard.values():
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


def _md5_shard(shards, key):
    value = int.from_bytes(hashlib.md5(key.encode()).digest(), "big")
    return next(s for s in shards if s.starting_hash_key <= value <= s.ending_hash_key)


def test_the_router_stops_remembering_keys_that_never_come_back():
    shards = split_hash_space(4)
    router = ShardRouter(shards, cache_limit=1000)
    fresh = [str(n) for n in range(5000)]
    indices = router.indices_for([Record(b"x", key, None, 0.0) for key in fresh])
    assert not router.remembering
    # Still routed by MD5, remembered or not.
    assert [router.shards[i] for i in indices] == [_md5_shard(shards, key) for key in fresh]


def test_the_router_keeps_remembering_keys_that_repeat():
    router = ShardRouter(split_hash_space(4), cache_limit=1000)
    racers = [Record(b"x", str(100 + n), None, 0.0) for n in range(900)]
    for second in range(10):
        # A few one-off keys among them fill the cache now and then; the racers still repeat.
        one_off = [Record(b"x", f"once-{second}-{n}", None, 0.0) for n in range(50)]
        router.indices_for(racers + one_off)
    assert router.remembering


def test_a_time_before_the_current_second_never_gets_a_second_budget():
    stream = LocalStream(1)
    assert stream.put_records(_records(1000), now=12.5).failed_record_count == 0
    # An earlier second, asked for late: its budget is not whole again.
    assert stream.put_records(_records(5), now=11.9).failed_record_count == 5
    assert stream.put_records(_records(5), now=13.0).failed_record_count == 0
