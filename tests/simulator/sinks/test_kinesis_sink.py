"""The boto3 sink against a real Kinesis-compatible server (kinesalite)."""

from __future__ import annotations

import io
import json
import random
import threading

import pytest
from botocore.stub import Stubber
from click.testing import CliRunner

from simulator.cli import simulate
from simulator.engine.batching import Record
from simulator.engine.clock import ScaledClock
from simulator.engine.dispatch import ThreadedDispatcher
from simulator.engine.shards import ShardRouter, split_hash_space
from simulator.errors import FatalSinkError, RetryableSinkError
from simulator.sinks import SinkOptions
from simulator.sinks.json_wire import (
    MismatchedAnswer,
    error_from_answer,
    outcome_from_answer,
    outcome_from_body,
)
from simulator.sinks.kinesis import KinesisSink, list_shards, make_client
from simulator.verify.cli import ShardReader
from tests.servers.kinesis import create_stream
from tests.servers.throttle import throttling_proxy


def records(count: int, seed: int = 1) -> list[Record]:
    rng = random.Random(seed)
    return [Record(b'{"n":%d}' % i, str(rng.getrandbits(63)), None, 0.0) for i in range(count)]


def options(endpoint: str, stream: str, **kwargs) -> SinkOptions:
    return SinkOptions(stream=stream, endpoint_url=endpoint, **kwargs)


def test_an_existing_stream_is_described_with_its_real_shards(
    kinesis_server, kinesis_client, stream_name
):
    create_stream(kinesis_client, stream_name, 4)

    sink = KinesisSink.open(options(kinesis_server, stream_name))
    try:
        description = sink.describe()
    finally:
        sink.close()

    assert description.name == stream_name
    assert list(description.shards) == split_hash_space(4)


def test_create_stream_makes_the_stream_and_waits_until_it_is_active(
    kinesis_server, kinesis_client, stream_name
):
    progress = io.StringIO()

    sink = KinesisSink.open(
        options(kinesis_server, stream_name, create_stream=True, shards=3), progress=progress
    )
    sink.close()

    summary = kinesis_client.describe_stream_summary(StreamName=stream_name)
    assert summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 3
    assert f"creating stream '{stream_name}' with 3 shards" in progress.getvalue()
    assert len(sink.describe().shards) == 3


def test_create_stream_is_retried_after_a_500_and_after_a_lost_answer(
    kinesis_server, kinesis_client, stream_name
):
    progress = io.StringIO()
    faults = {"CreateStream": ["500", "reset"]}  # the second attempt creates it, unheard

    with throttling_proxy(kinesis_server, 10_000, faults) as proxy:
        sink = KinesisSink.open(
            options(proxy.url, stream_name, create_stream=True, shards=2), progress=progress
        )
        sink.close()

    summary = kinesis_client.describe_stream_summary(StreamName=stream_name)
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 2
    lines = progress.getvalue().splitlines()
    assert sum("trying again" in line for line in lines) == 2
    assert len(sink.describe().shards) == 2


def test_create_stream_keeps_an_existing_stream_and_its_shard_count(
    kinesis_server, kinesis_client, stream_name
):
    create_stream(kinesis_client, stream_name, 2)

    progress = io.StringIO()

    sink = KinesisSink.open(
        options(kinesis_server, stream_name, create_stream=True, shards=4), progress=progress
    )
    sink.close()

    assert len(sink.describe().shards) == 2
    assert f"stream '{stream_name}' already exists with 2 open shards" in progress.getvalue()


def test_records_land_on_the_shard_the_model_predicts(kinesis_server, kinesis_client, stream_name):
    create_stream(kinesis_client, stream_name, 4)
    batch = records(500)
    router = ShardRouter(split_hash_space(4))

    sink = KinesisSink.open(options(kinesis_server, stream_name))
    try:
        outcome = sink.put_records(batch, now=0.0)
    finally:
        sink.close()

    assert outcome.failed_record_count == 0
    assert outcome.error_codes == [None] * 500
    assert all(outcome.sequence_numbers)
    predicted = [router.shard_for(r.partition_key).shard_id for r in batch]
    assert outcome.shard_ids == predicted
    assert len(set(predicted)) == 4


def test_an_explicit_hash_key_overrides_the_partition_key(
    kinesis_server, kinesis_client, stream_name
):
    create_stream(kinesis_client, stream_name, 4)
    shards = split_hash_space(4)
    batch = [Record(b"{}", "same-key", str(shard.midpoint), 0.0) for shard in shards]

    sink = KinesisSink.open(options(kinesis_server, stream_name))
    try:
        outcome = sink.put_records(batch, now=0.0)
    finally:
        sink.close()

    assert outcome.shard_ids == [shard.shard_id for shard in shards]


def test_several_requests_are_in_flight_at_once(kinesis_server, kinesis_client, stream_name):
    create_stream(kinesis_client, stream_name, 2)
    sink = KinesisSink.open(options(kinesis_server, stream_name, max_in_flight=4))
    # Each request waits for the three others before it is sent: only four at once pass.
    together = threading.Barrier(4, timeout=10)

    class Gathered:
        def describe(self):
            return sink.describe()

        def put_records(self, batch, now):
            together.wait()
            return sink.put_records(batch, now)

        def close(self):
            sink.close()

    dispatcher = ThreadedDispatcher(Gathered(), ScaledClock(), max_in_flight=4)
    for i in range(4):
        dispatcher.submit(records(100, seed=i), now=0.0)
    assert not dispatcher.has_capacity
    dispatcher.close()
    done = dispatcher.completions()
    sink.close()

    assert [d.error for d in done] == [None] * 4
    assert sum(d.outcome.failed_record_count for d in done if d.outcome) == 0


def test_a_partly_failed_response_hands_back_each_failed_entry(aws_test_env):
    client = make_client(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    sink = KinesisSink(client, "rides", split_hash_space(1))
    throttled = "ProvisionedThroughputExceededException"
    with Stubber(client) as stub:
        stub.add_response(
            "put_records",
            {
                "FailedRecordCount": 2,
                "Records": [
                    {"ShardId": "shardId-000000000000", "SequenceNumber": "1"},
                    {"ErrorCode": throttled, "ErrorMessage": "Rate exceeded for shard"},
                    {"ErrorCode": "InternalFailure", "ErrorMessage": "Internal service failure."},
                ],
            },
        )
        outcome = sink.put_records(records(3), now=0.0)
    sink.close()

    assert outcome.failed_record_count == 2
    assert outcome.shard_ids == ["shardId-000000000000", None, None]
    assert outcome.sequence_numbers == ["1", None, None]
    assert outcome.error_codes == [None, throttled, "InternalFailure"]


def test_list_shards_follows_pages_and_leaves_out_closed_shards(aws_test_env):
    client = make_client(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    whole, (low, high) = split_hash_space(1)[0], split_hash_space(2)

    def shard(shard_id, start, end, closed=False):
        numbers = {"StartingSequenceNumber": "1"}
        if closed:
            numbers["EndingSequenceNumber"] = "9"
        return {
            "ShardId": shard_id,
            "HashKeyRange": {"StartingHashKey": str(start), "EndingHashKey": str(end)},
            "SequenceNumberRange": numbers,
        }

    parent = shard("shardId-000000000000", whole.starting_hash_key, whole.ending_hash_key, True)
    first = shard("shardId-000000000001", low.starting_hash_key, low.ending_hash_key)
    second = shard("shardId-000000000002", high.starting_hash_key, high.ending_hash_key)
    with Stubber(client) as stub:
        stub.add_response(
            "list_shards", {"Shards": [parent, second], "NextToken": "page-2"}, {"StreamName": "s"}
        )
        stub.add_response("list_shards", {"Shards": [first]}, {"NextToken": "page-2"})
        shards = list_shards(client, "s")
    client.close()

    assert [s.shard_id for s in shards] == ["shardId-000000000001", "shardId-000000000002"]
    assert shards[0].starting_hash_key == 0


def test_a_bug_in_a_sink_stops_the_run_instead_of_leaving_it_waiting():
    class Broken:
        def describe(self):
            raise NotImplementedError

        def put_records(self, batch, now):
            raise KeyError("ShardId")

        def close(self):
            pass

    dispatcher = ThreadedDispatcher(Broken(), ScaledClock(), max_in_flight=2)
    dispatcher.submit(records(3), now=0.0)
    dispatcher.close()
    [done] = dispatcher.completions()

    assert isinstance(done.error, FatalSinkError)
    assert "KeyError('ShardId')" in str(done.error)
    assert dispatcher.in_flight == 0


def test_records_whose_answer_comes_after_their_ttl_count_as_dropped_unknown_never_late(
    kinesis_server, kinesis_client, stream_name
):
    create_stream(kinesis_client, stream_name, 1)
    faults = {"PutRecords": ["delay:3"]}  # the first request is written, its answer is late
    with throttling_proxy(kinesis_server, 100_000, faults) as proxy:
        result = CliRunner().invoke(
            simulate,
            ["--riders", "20", "--duration", "4", "--stream", stream_name, "--endpoint-url",
             proxy.url, "--record-ttl", "2", "--flush-interval", "0.2", "--json"],
        )  # fmt: skip

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dropped_unknown"] > 0  # given up on at 2 s, although written
    assert summary["accepted_after_drop"] == summary["dropped_unknown"]
    assert summary["latency_ms"]["max"] <= 2000  # nothing counts as delivered past its TTL
    assert summary["generated"] == summary["delivered"] + summary["dropped"]
    reader = ShardReader(kinesis_client, stream_name)
    in_stream = [r for s in list_shards(kinesis_client, stream_name) for r in reader.records(s)]
    assert len(in_stream) == summary["delivered"] + summary["accepted_after_drop"]


def test_a_whole_putrecords_request_refused_with_a_500_is_retryable_through_the_wire(
    kinesis_server, kinesis_client, stream_name
):
    create_stream(kinesis_client, stream_name, 1)
    with throttling_proxy(kinesis_server, 10_000, {"PutRecords": ["500"]}) as proxy:
        sink = KinesisSink.open(options(proxy.url, stream_name))
        try:
            with pytest.raises(RetryableSinkError, match="InternalFailure: injected"):
                sink.put_records(records(3), now=0.0)
            outcome = sink.put_records(records(3), now=0.0)  # the next one goes through
        finally:
            sink.close()
    assert outcome.failed_record_count == 0 and len(outcome.shard_ids) == 3


@pytest.mark.parametrize(
    ("status", "body", "headers", "code", "message"),
    [
        (400, b'{"__type":"ResourceNotFoundException","message":"Stream x not found"}', {},
         "ResourceNotFoundException", "Stream x not found"),
        (400, b'{"__type":"com.amazon.coral.service#AccessDeniedException","Message":"no"}', {},
         "AccessDeniedException", "no"),
        (502, b"<html>Bad Gateway</html>", {}, "HTTP502", "<html>Bad Gateway</html>"),
        (400, b"", {"x-amzn-ErrorType": "ValidationException:http://internal"},
         "ValidationException", ""),
    ],
)  # fmt: skip
def test_an_error_answer_becomes_theerror_from_answer_botocore_would_raise(
    status, body, headers, code, message
):
    error = error_from_answer(status, body, headers)
    assert error.response["Error"] == {"Code": code, "Message": message}
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error.operation_name == "PutRecords"


@pytest.mark.parametrize("key", ["12345", "bike 1", 'a"b\\c', "élan", "\u2028"])
def test_every_partition_key_and_byte_arrives_as_sent(
    key, kinesis_server, kinesis_client, stream_name
):
    create_stream(kinesis_client, stream_name, 1)
    sent = [Record(bytes(range(256)), key, None, 0.0), Record(b"", key, str(2**127), 0.0)]
    sink = KinesisSink.open(options(kinesis_server, stream_name))
    try:
        outcome = sink.put_records(sent, now=0.0)
    finally:
        sink.close()
    assert outcome.failed_record_count == 0
    reader = ShardReader(kinesis_client, stream_name)
    read = [r for s in list_shards(kinesis_client, stream_name) for r in reader.records(s)]
    assert [(r.data, r.partition_key) for r in read] == [(s.data, key) for s in sent]


def test_an_answer_read_from_its_body_is_the_answer_the_json_module_reads():
    accepted = (
        b'{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1","ShardId":"shardId-1"},'
        b'{"ShardId":"shardId-2", "SequenceNumber" : "2"}]}'
    )
    outcome = outcome_from_body(accepted, 2)
    assert outcome == outcome_from_answer(json.loads(accepted), 2)
    assert outcome.shard_ids == ["shardId-1", "shardId-2"]
    assert outcome.sequence_numbers == ["1", "2"]

    partly = (
        b'{"FailedRecordCount":1,"Records":[{"SequenceNumber":"1","ShardId":"shardId-1"},'
        b'{"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded"}]}'
    )
    outcome = outcome_from_body(partly, 2)
    assert outcome.failed_record_count == 1
    assert outcome.error_codes == [None, "ProvisionedThroughputExceededException"]
    assert outcome.shard_ids == ["shardId-1", None]

    with pytest.raises(MismatchedAnswer):
        outcome_from_body(accepted, 3)


def test_creating_a_one_shard_stream_says_1_shard(kinesis_server, stream_name):
    progress = io.StringIO()
    KinesisSink.open(
        options(kinesis_server, stream_name, create_stream=True, shards=1), progress=progress
    ).close()
    assert f"creating stream '{stream_name}' with 1 shard\n" in progress.getvalue()
