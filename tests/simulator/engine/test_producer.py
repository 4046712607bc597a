import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.engine.batching import BatchLimits, Record
from simulator.engine.counters import RunStats
from simulator.engine.producer import Backoff, Producer, ProducerConfig
from simulator.engine.shards import THROTTLED
from simulator.engine.sink import PutRecordsOutcome


def _producer(**config):
    return Producer(ProducerConfig(**config), RunStats(["shardId-000000000000"]), random.Random(1))


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 4000), min_size=1, max_size=1500),
    max_records=st.integers(1, 500),
    max_request_bytes=st.integers(4000, 60_000),
)
def test_batches_never_break_the_putrecords_limits(sizes, max_records, max_request_bytes):
    limits = BatchLimits(
        max_records=max_records, max_request_bytes=max_request_bytes, max_record_bytes=4000
    )
    producer = _producer(limits=limits, max_buffered=10_000, flush_interval=0.0)
    records = [Record(b"x" * (size - 1), "k", None, 0.0) for size in sizes]
    producer.add_many(records, now=0.0)
    sent = []
    while (batch := producer.take_batch(1.0, drain=True)) is not None:
        assert 1 <= len(batch) <= max_records
        assert sum(r.size for r in batch) <= max_request_bytes
        sent.extend(batch)
    assert sent == records  # every record once, in order


def test_a_record_larger_than_the_limit_is_dropped_and_counted():
    producer = _producer(limits=BatchLimits(max_record_bytes=100))
    producer.add_many([Record(b"x" * 200, "k", None, 0.0), Record(b"y", "k", None, 0.0)], 0.0)
    batch = producer.take_batch(5.0, drain=True)
    assert batch is not None and [r.data for r in batch] == [b"y"]
    assert producer.stats.dropped_oversized == 1
    assert producer.stats.generated == 2


def test_a_partly_filled_batch_waits_for_the_flush_interval():
    producer = _producer(flush_interval=1.0)
    producer.add_many([Record(b"x", "k", None, 0.0) for _ in range(10)], now=0.0)
    assert producer.take_batch(0.5) is None
    assert producer.next_deadline() == 1.0
    batch = producer.take_batch(1.0)
    assert batch is not None and len(batch) == 10


def test_a_full_batch_goes_at_once():
    producer = _producer(flush_interval=10.0)
    producer.add_many([Record(b"x", "k", None, 0.0) for _ in range(501)], now=0.0)
    batch = producer.take_batch(0.0)
    assert batch is not None and len(batch) == 500


def _throttle_all(batch):
    n = len(batch)
    return PutRecordsOutcome(
        failed_record_count=n,
        shard_ids=[None] * n,
        sequence_numbers=[None] * n,
        error_codes=[THROTTLED] * n,
    )


def test_only_failed_entries_are_retried_after_a_backoff():
    producer = _producer(flush_interval=0.0, backoff=Backoff(base=0.1, cap=1.0))
    producer.add_many([Record(b"x", str(i), None, 0.0) for i in range(4)], now=0.0)
    batch = producer.take_batch(0.0)
    assert batch is not None
    outcome = PutRecordsOutcome(
        failed_record_count=1,
        shard_ids=["shardId-000000000000", None, "shardId-000000000000", "shardId-000000000000"],
        sequence_numbers=["1", None, "2", "3"],
        error_codes=[None, THROTTLED, None, None],
    )
    producer.settle(batch, outcome, now=0.05)
    assert producer.stats.delivered == 3 and producer.stats.throttled == 1
    retry_at = producer.next_deadline()
    assert retry_at is not None and 0.05 <= retry_at <= 0.25
    retry = producer.take_batch(retry_at)
    assert retry is not None and [r.partition_key for r in retry] == ["1"]
    assert retry[0].attempts == 2 and producer.stats.retries == 1


def test_a_record_never_accepted_is_dropped_after_its_ttl_and_counted():
    producer = _producer(flush_interval=0.0, record_ttl=3.0)
    producer.add_many([Record(b"x", "k", None, 0.0) for _ in range(5)], now=0.0)
    now = 0.0
    while producer.pending:
        batch = producer.take_batch(now)
        if batch:
            producer.settle(batch, _throttle_all(batch), now)
        now += 0.05
        assert now < 10, "records must not be retried past their TTL"
    stats = producer.stats
    assert stats.dropped_expired == 5 and stats.delivered == 0 and stats.throttled >= 5
    assert now <= 3.2


def test_a_failed_request_retries_every_entry():
    producer = _producer(flush_interval=0.0)
    producer.add_many([Record(b"x", "k", None, 0.0) for _ in range(3)], now=0.0)
    batch = producer.take_batch(0.0)
    assert batch is not None
    producer.fail_request(batch, now=0.0)
    assert producer.stats.failed_requests == 1
    assert producer.pending == 3 and producer.in_flight == 0


def test_the_buffer_is_bounded():
    producer = _producer(max_buffered=600)
    assert producer.room() == 600
    producer.add_many([Record(b"x", "k", None, 0.0) for _ in range(600)], now=0.0)
    assert producer.room() == 0


def _router(shards):
    from simulator.engine.shards import ShardRouter, split_hash_space

    return ShardRouter(split_hash_space(shards))


def _keys_for_shard(router, index, count):
    keys = (str(i) for i in itertools.count())
    return list(itertools.islice((k for k in keys if router.index_for(k) == index), count))


def test_a_throttled_shard_does_not_hold_back_the_others():
    router = _router(2)
    producer = Producer(
        ProducerConfig(flush_interval=0.0), RunStats([]), random.Random(1), router=router
    )
    hot, cold = _keys_for_shard(router, 0, 5), _keys_for_shard(router, 1, 5)
    producer.add_many([Record(b"x", k, None, 0.0) for k in hot], now=0.0)
    batch = producer.take_batch(0.0)
    assert batch is not None
    producer.settle(batch, _throttle_all(batch), now=0.0)
    producer.add_many([Record(b"x", k, None, 0.0) for k in hot + cold], now=0.001)
    batch = producer.take_batch(0.001)
    assert batch is not None
    assert {r.partition_key for r in batch} == set(cold)
    assert producer.buffered == 10  # the hot shard's five retries and five new records wait


def test_an_overloaded_shard_drains_its_backlog_oldest_first():
    router = _router(1)
    producer = Producer(
        ProducerConfig(flush_interval=0.0), RunStats([]), random.Random(1), router=router
    )
    first = [Record(b"x", str(i), None, 0.0) for i in range(3)]
    producer.add_many(first, now=0.0)
    batch = producer.take_batch(0.0)
    assert batch is not None
    producer.settle(batch, _throttle_all(batch), now=0.0)
    later = [Record(b"x", "later", None, 0.5, enqueued_at=0.5)]
    producer.add_many(later, now=0.5)
    sent = []
    now = 0.5
    while producer.pending and now < 5:
        if (batch := producer.take_batch(now)) is not None:
            sent.extend(batch)
            producer.settle(
                batch,
                PutRecordsOutcome(
                    failed_record_count=0,
                    shard_ids=["shardId-000000000000"] * len(batch),
                    sequence_numbers=[str(i) for i in range(len(batch))],
                    error_codes=[None] * len(batch),
                ),
                now,
            )
        now += 0.01
    assert sent == first + later
    assert producer.stats.retries == 3 and producer.stats.delivered == 4


def _accept_all(batch):
    n = len(batch)
    return PutRecordsOutcome(
        failed_record_count=0,
        shard_ids=["shardId-000000000000"] * n,
        sequence_numbers=[str(i) for i in range(n)],
        error_codes=[None] * n,
    )


def _adds_up(stats):
    return stats.generated == stats.delivered + stats.dropped


def test_a_record_in_flight_at_its_ttl_is_dropped_then_as_unknown_and_never_delivered_late():
    producer = _producer(flush_interval=0.0, record_ttl=3.0)
    old = [Record(b"x", "old", None, 0.0) for _ in range(2)]
    producer.add_many(old, now=0.0)
    producer.settle(producer.take_batch(0.0), _throttle_all(old), now=0.0)
    young = [Record(b"y", "young", None, 2.0, enqueued_at=2.0) for _ in range(3)]
    producer.add_many(young, now=2.0)
    batch = producer.take_batch(2.5)  # the two retries and the three fresh ones
    assert batch is not None and len(batch) == 5
    assert producer.next_deadline() == 3.0  # when the oldest in flight runs out of time

    producer.expire(3.1)  # still no answer: the old two are given up on, in flight
    stats = producer.stats
    assert stats.dropped_unknown == 2 and stats.dropped_expired == 0
    assert producer.in_flight == 3 and _adds_up_pending(producer)

    producer.settle(batch, _accept_all(batch), now=4.0)  # the answer comes late
    assert stats.delivered == 3  # only the young ones, within their TTL
    assert stats.accepted_after_drop == 2  # in the stream, although counted as dropped
    assert stats.latency.max_ms <= 3000
    assert producer.pending == 0 and _adds_up(stats)


def _adds_up_pending(producer):
    stats = producer.stats
    return stats.generated == stats.delivered + stats.dropped + producer.pending


def test_records_whose_request_got_no_answer_are_dropped_as_unknown_refused_ones_as_expired():
    producer = _producer(flush_interval=0.0, record_ttl=1.0)
    lost = [Record(b"x", "lost", None, 0.0) for _ in range(2)]
    refused = [Record(b"y", "refused", None, 0.0) for _ in range(3)]
    producer.add_many(lost, now=0.0)
    producer.fail_request(producer.take_batch(0.0), now=0.5, outcome_unknown=True)
    producer.add_many(refused, now=0.0)
    now = 0.5
    while producer.pending:
        batch = producer.take_batch(now)
        if batch:
            producer.settle(batch, _throttle_all(batch), now)
        now += 0.05
        assert now < 5
    stats = producer.stats
    assert stats.dropped_unknown == 2 and stats.dropped_expired == 3
    assert _adds_up(stats)


def test_records_still_in_flight_when_the_run_gives_up_may_be_in_the_stream():
    producer = _producer(flush_interval=0.0)
    producer.add_many([Record(b"x", "k", None, 0.0) for _ in range(4)], now=0.0)
    producer.take_batch(0.0)
    assert producer.abandon_in_flight() == 4
    assert producer.stats.dropped_unknown == 4 and producer.stats.dropped_interrupted == 0
    assert _adds_up(producer.stats)
