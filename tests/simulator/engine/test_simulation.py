import hashlib
import json
import random
from collections import Counter, defaultdict

import pytest

from alleycat_rider.core.message import FIELDS, RideMessage
from simulator.engine.clock import VirtualClock
from simulator.engine.fleet import FleetConfig
from simulator.engine.keys import RANDOM_KEY_DIGITS, PartitionKeyStrategy, random_numeric_keys
from simulator.engine.producer import ProducerConfig
from simulator.engine.runner import Simulation, SimulationConfig
from simulator.engine.shards import LocalStream
from tests.streams import RecordingStream

START = 1_764_186_600.0  # a whole race window


def _run(strategy="random", riders=200, duration=20, shards=4, seed=7, spread=1000, **kw):
    stream = RecordingStream(shards)
    config = SimulationConfig(
        fleet=FleetConfig(riders=riders, phase_spread_ms=spread, race_seconds=kw.pop("race", 300)),
        duration=duration,
        strategy=PartitionKeyStrategy(strategy),
        seed=seed,
        **kw,
    )
    simulation = Simulation(config, stream, VirtualClock(START))
    result = simulation.run()
    return result, stream


def test_every_message_is_delivered_once_with_the_original_schema():
    result, stream = _run(riders=50, duration=10)
    assert result.stats.generated == result.stats.delivered == 500
    rows = [data for *_, data in stream.rows()]
    messages = [RideMessage.from_json(data) for data in rows]
    # Byte for byte what the rider agent's encoder writes for the same message.
    assert [m.to_json() for m in messages] == rows
    assert len({m.uuid for m in messages}) == 500
    per_rider = defaultdict(list)
    for m in messages:
        per_rider[m.racer_id].append(m.second)
    assert all(sorted(seconds) == list(range(1, 11)) for seconds in per_rider.values())
    assert {m.race_id for m in messages} == {int(START * 1000) // 300_000}
    assert list(json.loads(stream.rows()[0][3])) == list(FIELDS)


def test_the_last_second_of_a_race_is_final_and_a_new_race_follows():
    _, stream = _run(riders=3, duration=8, race=5)
    messages = [RideMessage.from_json(data) for *_, data in stream.rows()]
    finals = [m for m in messages if m.event == "final"]
    assert {m.second for m in finals} == {5} and len(finals) == 3
    assert {m.second for m in messages if m.device_timestamp >= (START + 5) * 1000} == {1, 2, 3}


def test_each_rider_sends_once_a_second_at_its_own_phase():
    _, stream = _run(riders=20, duration=5)
    stamps = defaultdict(list)
    for *_, data in stream.rows():
        m = RideMessage.from_json(data)
        stamps[m.racer_id].append(m.device_timestamp)
    phases = set()
    for times in stamps.values():
        times.sort()
        assert [b - a for a, b in zip(times, times[1:], strict=False)] == [1000] * 4
        phases.add(times[0] % 1000)
    assert len(phases) > 10


def test_a_seeded_run_is_identical_twice():
    first, a = _run(seed=11)
    second, b = _run(seed=11)
    assert a.rows() == b.rows()
    assert first.stats.summary() == second.stats.summary()
    _, c = _run(seed=12)
    assert c.rows() != a.rows()


def _shares(stream, shards):
    counts = Counter(shard for shard, *_ in stream.rows())
    total = sum(counts.values())
    return [counts.get(f"shardId-{i:012d}", 0) / total for i in range(shards)]


@pytest.mark.parametrize("strategy", ["random", "balanced"])
def test_random_and_balanced_keys_spread_evenly(strategy):
    _, stream = _run(strategy, riders=400, duration=10, shards=4)
    assert all(abs(share - 0.25) < 0.03 for share in _shares(stream, 4))


def test_balanced_keys_give_each_shard_the_same_number_of_riders():
    _, stream = _run("balanced", riders=402, duration=2, shards=4)
    riders_per_shard = Counter(shard for shard, rider in {(s, r) for s, r, *_ in stream.rows()})
    assert sorted(riders_per_shard.values()) == [100, 100, 101, 101]


@pytest.mark.parametrize("strategy", ["racer", "balanced", "class"])
def test_sticky_keys_keep_each_rider_on_one_shard(strategy):
    _, stream = _run(strategy, riders=100, duration=5, shards=8)
    shards_of_rider = defaultdict(set)
    for shard, rider, *_ in stream.rows():
        shards_of_rider[rider].add(shard)
    assert all(len(s) == 1 for s in shards_of_rider.values())


def test_random_keys_are_new_numbers_of_a_fixed_length_and_repeat_with_the_seed():
    keys = random_numeric_keys(random.Random(4), 5000)
    assert len(set(keys)) == 5000
    assert all(key.isdigit() and len(key) == RANDOM_KEY_DIGITS for key in keys)
    assert keys == random_numeric_keys(random.Random(4), 5000)
    # Every digit turns up about as often in every position.
    first = Counter(key[0] for key in keys)
    assert set(first) == set("0123456789") and max(first.values()) < 2 * min(first.values())


def test_random_keys_scatter_a_rider_over_shards():
    _, stream = _run("random", riders=10, duration=30, shards=4)
    shards_of_rider = defaultdict(set)
    for shard, rider, *_ in stream.rows():
        shards_of_rider[rider].add(shard)
    assert all(len(s) == 4 for s in shards_of_rider.values())


def test_class_keys_pin_each_class_to_one_shard():
    _, stream = _run("class", riders=120, duration=3, shards=16)
    shard_of_class = defaultdict(set)
    for shard, _, key, _ in stream.rows():
        shard_of_class[key].add(shard)
    assert sorted(shard_of_class) == ["1", "2", "3", "4", "5", "6"]
    assert all(len(s) == 1 for s in shard_of_class.values())


def test_time_keys_with_synchronised_riders_land_on_one_shard_a_second_and_throttle():
    result, stream = _run("time", riders=1500, duration=5, shards=4, spread=0)
    per_second = defaultdict(set)
    for shard, _, key, _ in stream.rows():
        per_second[key].add(shard)
    assert all(len(shards) == 1 for shards in per_second.values())
    assert result.stats.throttled > 0


def test_time_keys_are_the_device_timestamp():
    _, stream = _run("time", riders=5, duration=2)
    for _, _, key, data in stream.rows():
        assert key == str(RideMessage.from_json(data).device_timestamp)


def test_records_land_on_the_shard_md5_of_their_key_picks():
    _, stream = _run("racer", riders=64, duration=1, shards=5)
    step = 2**128 // 5
    for shard, _, key, _ in stream.rows():
        value = int.from_bytes(hashlib.md5(key.encode()).digest(), "big")
        assert shard == f"shardId-{min(value // step, 4):012d}"


def test_throttled_records_are_retried_until_delivered():
    result, _ = _run(riders=1200, duration=15, shards=1, seed=3)
    stats = result.stats
    assert stats.throttled > 0 and stats.retries > 0
    assert stats.delivered == stats.generated == 18_000
    assert stats.dropped == 0
    assert max(s.peak_records_per_s for s in stats.shards.values()) <= 1000
    # 200 records/s too many for 15 s: a queue drained in order waits about 3 s at most.
    assert stats.latency.max_ms < 6000


def test_a_stream_that_cannot_keep_up_slows_generation_within_the_buffer():
    seen = []
    config = SimulationConfig(
        fleet=FleetConfig(riders=3000),
        duration=10,
        seed=1,
        producer=ProducerConfig(max_buffered=2000),
    )
    simulation = Simulation(config, LocalStream(1), VirtualClock(START))
    result = simulation.run(on_pass=lambda sim: seen.append(sim.producer.pending))
    assert max(seen) <= 2000
    stats = result.stats
    assert stats.generated == 30_000
    assert stats.delivered + stats.dropped == stats.generated


def test_stopping_a_run_drains_and_counts_what_is_left():
    config = SimulationConfig(fleet=FleetConfig(riders=100), duration=300, seed=1)
    simulation = Simulation(config, LocalStream(2), VirtualClock(START))

    def stop_after_ten_seconds(sim):
        if sim.clock.now() > START + 10:
            sim.stop()

    result = simulation.run(on_pass=stop_after_ten_seconds)
    stats = result.stats
    assert result.interrupted
    assert 1000 <= stats.generated < 30_000
    assert stats.delivered + stats.dropped == stats.generated


def test_with_a_ramp_riders_join_over_it_and_each_sends_from_its_join_second_on():
    stream = RecordingStream(4)
    config = SimulationConfig(fleet=FleetConfig(riders=10, ramp_seconds=5), duration=8, seed=2)
    result = Simulation(config, stream, VirtualClock(START)).run()
    per_second = Counter(int(r.generated_at - START) for _, r, _ in stream.accepted)
    # Rider i of 10 joins in second i * 5 // 10: two riders more each second until second 4.
    assert [per_second[s] for s in range(8)] == [2, 4, 6, 8, 10, 10, 10, 10]
    assert result.stats.generated == result.stats.delivered == 60
    firsts: dict[int, float] = {}
    for _, record, _ in stream.accepted:
        firsts.setdefault(record.rider, record.generated_at)
    assert sorted(int(t - START) for t in firsts.values()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


class WallClockTime:
    """Simulation time that also passes while the stream answers, as the wall clock does at
    ``--speed 10``: each PutRecords takes ``put_seconds`` of simulation time."""

    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def sleep_until(self, deadline, wake=None):
        self.t = max(self.t, deadline)


class SlowStream:
    """The built-in stream, whose answers take time (wrapped: the compiled build does not let
    Python classes inherit from its classes)."""

    def __init__(self, shards: int, clock: WallClockTime, put_seconds: float) -> None:
        self.stream = LocalStream(shards)
        self.clock = clock
        self.put_seconds = put_seconds
        self.accepted_per_second: Counter[int] = Counter()

    def describe(self):
        return self.stream.describe()

    def close(self):
        self.stream.close()

    def put_records(self, records, now):
        outcome = self.stream.put_records(records, now)
        self.accepted_per_second[int(now)] += len(records) - outcome.failed_record_count
        self.clock.t += self.put_seconds  # the answer comes later
        return outcome


@pytest.mark.parametrize("put_seconds", [0.013, 0.13])
def test_a_shard_never_accepts_more_than_its_limit_in_a_second_however_long_requests_take(
    put_seconds,
):
    clock = WallClockTime(START)
    stream = SlowStream(1, clock, put_seconds)
    config = SimulationConfig(
        fleet=FleetConfig(riders=1200), duration=20, strategy=PartitionKeyStrategy("random"),
        seed=3,
    )  # fmt: skip
    result = Simulation(config, stream, clock).run()
    assert result.stats.throttled > 0  # 1,200 riders on one shard: over its limit
    assert max(stream.accepted_per_second.values()) == 1000
    [shard] = result.stats.shards.values()
    # The run's figures count each record in the second the stream took it.
    assert shard.peak_records_per_s == 1000
    assert result.stats.delivered == sum(stream.accepted_per_second.values())
