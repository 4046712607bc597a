from collections import Counter

from simulator.engine.batching import Record
from simulator.engine.counters import LatencyHistogram, RunStats


def test_latencies_added_in_bulk_count_like_one_at_a_time():
    one, bulk = LatencyHistogram(), LatencyHistogram()
    latencies = [0, 3, 3, 250, 7, -2, 3]
    for ms in latencies:
        one.add(ms)
    bulk.add_counts(Counter(latencies))
    assert bulk.counts == one.counts == {0: 2, 3: 3, 7: 1, 250: 1}
    assert (bulk.count, bulk.max_ms) == (one.count, one.max_ms) == (7, 250)
    assert bulk.percentile(50) == 3.0 and bulk.percentile(100) == 250.0


def test_delivered_records_are_counted_per_shard_with_their_bytes_and_payload_units():
    stats = RunStats(["shardId-000000000000", "shardId-000000000001"])
    records = [
        Record(b"x" * 99, "k", None, 10.0),
        Record(b"y" * 60_000, "k", None, 10.5),  # three started 25 KB units
        Record(b"z" * 9, "k", None, 10.9),
    ]
    first_id, second_id = "shardId-000000000000", "shardId-000000000001"
    shard_ids: list[str | None] = [first_id, second_id, first_id]
    stats.record_delivered(records, shard_ids, now=11.0)
    assert stats.delivered == stats.messages_delivered == 3
    assert stats.put_payload_units == 1 + 3 + 1
    first, second = stats.shards.values()
    assert (first.records, first.bytes) == (2, 100 + 10)
    assert (second.records, second.bytes) == (1, 60_001)
    assert stats.latency.counts == {1000: 1, 500: 1, 100: 1}


def test_a_runs_first_seconds_show_its_whole_rate_not_one_averaged_with_time_before_it():
    stats = RunStats(["shardId-000000000000"])
    for second in (1000, 1001):  # 200 riders, one message a second each
        stats.record_generated(second + 0.5, 200)
    early = stats.snapshot(now=1_002.2, start=1_000.0, duration=60, in_flight_requests=0,
                           buffered=0)  # fmt: skip
    assert early.generated_per_s == 200
    first = stats.snapshot(now=1_000.7, start=1_000.0, duration=60, in_flight_requests=0,
                           buffered=0)  # fmt: skip
    assert first.generated_per_s == 0  # no second complete yet
    for second in range(1002, 1010):
        stats.record_generated(second + 0.5, 200)
    later = stats.snapshot(now=1_010.0, start=1_000.0, duration=60, in_flight_requests=0,
                           buffered=0)  # fmt: skip
    assert later.generated_per_s == 200  # over the last 5 s
