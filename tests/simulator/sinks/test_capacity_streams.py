"""Real streams with capacity modes and service-managed distribution.

AWS itself cannot run here, and the local servers implement little of this (kinesalite has no
modes; moto makes 4-shard on-demand streams and keeps no distribution strategy): what they do
implement is tested against them, the rest at the seam where a request leaves, with botocore's
Stubber (the boto3 client) and a loopback HTTP server reading the bytes (the JSON wire).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner

from alleycat.cli import cli
from simulator.engine.batching import MIB, Record
from simulator.engine.capacity import CapacityMode, OnDemandPolicy
from simulator.engine.shards import split_hash_space
from simulator.engine.sink import RecordDistribution
from simulator.sinks import SinkOptions
from simulator.sinks.json_wire import PutRecordsWire
from simulator.sinks.kinesis import (
    KinesisSink,
    StreamOpener,
    create_stream_request,
    make_client,
    stream_mismatch,
)
from tests.servers.kinesis import create_stream
from tests.servers.moto import MOTO_REGION

AUTO = RecordDistribution.AUTO


def test_create_stream_asks_for_the_mode_distribution_warm_throughput_and_record_size():
    provisioned = SinkOptions(stream="rides", shards=3)
    assert create_stream_request("rides", provisioned) == {"StreamName": "rides", "ShardCount": 3}
    on_demand = SinkOptions(stream="rides", capacity=CapacityMode.ON_DEMAND, distribution=AUTO)
    assert create_stream_request("rides", on_demand) == {
        "StreamName": "rides",
        "StreamModeDetails": {"StreamMode": "ON_DEMAND"},
        "RecordDistributionStrategy": "AUTO",
    }
    advantage = SinkOptions(
        stream="rides",
        capacity=CapacityMode.ON_DEMAND_ADVANTAGE,
        policy=OnDemandPolicy(warm_throughput_mibps=50),
        max_record_size_kib=4096,
    )
    assert create_stream_request("rides", advantage) == {
        "StreamName": "rides",
        "StreamModeDetails": {"StreamMode": "ON_DEMAND"},
        "WarmThroughputMiBps": 50,
        "MaxRecordSizeInKiB": 4096,
    }


def test_the_create_request_leaves_as_botocore_validates_it(aws_test_env):
    client = make_client(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    options = SinkOptions(
        stream="rides",
        capacity=CapacityMode.ON_DEMAND_ADVANTAGE,
        distribution=AUTO,
        policy=OnDemandPolicy(warm_throughput_mibps=25),
        max_record_size_kib=2048,
    )
    request = create_stream_request("rides", options)
    progress = io.StringIO()
    with Stubber(client) as stub:
        stub.add_response("create_stream", {}, request)  # the model validates every parameter
        assert StreamOpener(client, "rides", progress=progress).create(request)
        stub.assert_no_pending_responses()
    client.close()
    assert progress.getvalue() == (
        "creating stream 'rides' with on-demand capacity, record distribution AUTO, "
        "warm throughput 25 MiB/s, records up to 2,048 KiB\n"
    )


def _summary(mode: str, **more: Any) -> dict[str, Any]:
    return {"StreamModeDetails": {"StreamMode": mode}, **more}


@pytest.mark.parametrize(
    ("summary", "options", "says"),
    [
        ({}, SinkOptions(distribution=AUTO), "stream 'rides' is provisioned: --partition-key "
         "auto needs an on-demand stream"),
        (_summary("ON_DEMAND"), SinkOptions(distribution=AUTO),
         "stream 'rides' places records by partition key (USER_PARTITION_KEY)"),
        (_summary("ON_DEMAND", RecordDistributionStrategy="AUTO"), SinkOptions(distribution=AUTO),
         None),
        (_summary("PROVISIONED"), SinkOptions(), None),
        (_summary("PROVISIONED"), SinkOptions(max_record_bytes=2 * MIB),
         "stream 'rides' takes records of at most 1,024 KiB, but this run may send records of "
         "2,048 KiB"),
        (_summary("PROVISIONED", MaxRecordSizeInKiB=4096), SinkOptions(max_record_bytes=2 * MIB),
         None),
    ],
)  # fmt: skip
def test_a_stream_that_cannot_take_the_run_is_named_in_one_line(summary, options, says):
    problem = stream_mismatch("rides", summary, options)
    if says is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(says)
        assert "\n" not in problem


def _keyless(count: int) -> list[Record]:
    return [Record(b'{"n":%d}' % i, "", None, 0.0) for i in range(count)]


def test_boto3_sends_records_without_a_key_with_no_partition_key(aws_test_env):
    client = make_client(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    sink = KinesisSink(client, "rides", split_hash_space(1), distribution=AUTO)
    with Stubber(client) as stub:
        stub.add_response(
            "put_records",
            # botocore's model has FailedRecordCount at least 1: an answer with no failure
            # leaves it out here.
            {"Records": [{"ShardId": "shardId-000000000000", "SequenceNumber": "1"}] * 2},
            {"StreamName": "rides", "Records": [{"Data": b'{"n":0}'}, {"Data": b'{"n":1}'}]},
        )  # fmt: skip
        outcome = sink.put_records(_keyless(2), now=0.0)
        stub.assert_no_pending_responses()
    sink.close()
    assert outcome.failed_record_count == 0
    assert sink.describe().distribution is AUTO


@pytest.fixture
def put_records_capture() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback endpoint that accepts every PutRecords entry and keeps each request body."""
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 (the http.server name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(body)
            results = [
                {"ShardId": "shardId-000000000000", "SequenceNumber": str(i)}
                for i in range(len(body["Records"]))
            ]
            answer = json.dumps({"FailedRecordCount": 0, "Records": results}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_json_wire_sends_records_without_a_key_with_no_partition_key(
    aws_test_env, put_records_capture
):
    url, bodies = put_records_capture
    client = make_client(endpoint_url=url, region="us-east-1")
    session = boto3.session.Session(aws_access_key_id="a", aws_secret_access_key="b")
    wire = PutRecordsWire(
        client, session.get_credentials(), "rides",
        connect_timeout=5, read_timeout=5, max_connections=2,
    )  # fmt: skip
    keyed = Record(b"k", "racer-1", None, 0.0)
    try:
        outcome = wire.put_records([*_keyless(2), keyed])
    finally:
        wire.close()
        client.close()
    assert outcome.failed_record_count == 0
    [body] = bodies
    assert [set(entry) for entry in body["Records"]] == [
        {"Data"},
        {"Data"},
        {"Data", "PartitionKey"},
    ]


def test_auto_against_a_provisioned_kinesalite_stream_is_one_line_before_the_run(
    kinesis_server, kinesis_client, stream_name
):
    create_stream(kinesis_client, stream_name, 2)
    result = CliRunner().invoke(
        cli,
        ["simulate", "--riders", "5", "--duration", "2", "--partition-key", "auto",
         "--stream", stream_name, "--endpoint-url", kinesis_server],
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"Error: stream '{stream_name}' is provisioned: --partition-key auto needs" in (
        result.output
    )
    assert "Traceback" not in result.output


def test_create_stream_on_demand_on_moto_makes_an_on_demand_stream_and_writes_to_it(
    moto_endpoint,
):
    result = CliRunner().invoke(
        cli,
        ["simulate", "--riders", "20", "--duration", "2", "--fast", "--stream", "od",
         "--create-stream", "--capacity", "on-demand", "--endpoint-url", moto_endpoint,
         "--json", "--no-dashboard"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["generated"] == summary["delivered"] == 40
    client = make_client(endpoint_url=moto_endpoint, region=MOTO_REGION)
    described = client.describe_stream_summary(StreamName="od")["StreamDescriptionSummary"]
    client.close()
    assert described["StreamModeDetails"]["StreamMode"] == "ON_DEMAND"
    assert described["OpenShardCount"] == 4


def test_auto_on_moto_which_keeps_no_distribution_strategy_is_refused_before_the_run(
    moto_endpoint,
):
    result = CliRunner().invoke(
        cli,
        ["simulate", "--riders", "5", "--duration", "2", "--stream", "auto-od",
         "--create-stream", "--capacity", "on-demand", "--partition-key", "auto",
         "--endpoint-url", moto_endpoint],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "places records by partition key (USER_PARTITION_KEY)" in result.output


def test_after_an_answer_names_a_new_shard_the_sink_lists_the_shards_again(aws_test_env):
    # An on-demand stream scales by resharding: the run asks for the new map (describe) when
    # an answer names a shard it does not know.
    client = make_client(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    sink = KinesisSink(client, "rides", split_hash_space(1))
    low, high = split_hash_space(2)

    def listed(shard_id, shard):
        return {
            "ShardId": shard_id,
            "HashKeyRange": {"StartingHashKey": str(shard.starting_hash_key),
                             "EndingHashKey": str(shard.ending_hash_key)},
            "SequenceNumberRange": {"StartingSequenceNumber": "1"},
        }  # fmt: skip

    with Stubber(client) as stub:
        stub.add_response(
            "put_records", {"Records": [{"ShardId": "shardId-000000000000", "SequenceNumber": "1"}]}
        )
        stub.add_response(
            "put_records", {"Records": [{"ShardId": "shardId-000000000002", "SequenceNumber": "2"}]}
        )
        stub.add_response(
            "list_shards",
            {"Shards": [listed("shardId-000000000001", low), listed("shardId-000000000002", high)]},
        )
        sink.put_records(_keyless(1), now=0.0)
        assert [s.shard_id for s in sink.describe().shards] == ["shardId-000000000000"]
        sink.put_records(_keyless(1), now=1.0)
        shards = sink.describe().shards
        assert [s.shard_id for s in shards] == ["shardId-000000000001", "shardId-000000000002"]
        assert [s.shard_id for s in sink.describe().shards] == [s.shard_id for s in shards]
        stub.assert_no_pending_responses()
    sink.close()
