"""What goes wrong with a real stream, and the one line the user reads about it."""

from __future__ import annotations

import io
import itertools
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from botocore.stub import Stubber
from click.testing import CliRunner

from simulator.cli import simulate
from simulator.engine.batching import Record
from simulator.engine.clock import ScaledClock
from simulator.engine.fleet import FleetConfig
from simulator.engine.runner import Simulation, SimulationConfig
from simulator.engine.shards import split_hash_space
from simulator.errors import FatalSinkError, RetryableSinkError
from simulator.sinks import SinkOptions, make_dispatcher
from simulator.sinks.kinesis import KinesisSink, StreamOpener, make_client
from simulator.sinks.kinesis_errors import CREDENTIAL_CODES, RETRYABLE_CODES, translate_error
from tests.servers.ports import free_port

URL = "http://127.0.0.1:4567"


def client_error(
    code: str, status: int = 400, message: str = "it failed", operation: str = "PutRecords"
) -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


@pytest.mark.parametrize("code", sorted(RETRYABLE_CODES))
def test_whole_request_throttling_and_server_trouble_are_retried(code):
    error = translate_error(client_error(code), stream="rides", endpoint=URL)

    assert isinstance(error, RetryableSinkError)
    assert code in str(error)


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url=URL),
        ConnectTimeoutError(endpoint_url=URL),
        ReadTimeoutError(endpoint_url=URL),
        ConnectionClosedError(endpoint_url=URL),
        client_error("SomethingNew", status=503),
    ],
    ids=type,
)
def test_timeouts_connection_errors_and_5xx_are_retried(exc):
    assert isinstance(translate_error(exc, stream="rides", endpoint=URL), RetryableSinkError)


@pytest.mark.parametrize(
    ("exc", "unknown"),
    [
        (EndpointConnectionError(endpoint_url=URL), False),  # never left this machine
        (ConnectTimeoutError(endpoint_url=URL), False),
        (ReadTimeoutError(endpoint_url=URL), True),  # sent, no answer: may be written
        (ConnectionClosedError(endpoint_url=URL), True),
        (client_error("InternalFailure", status=500), False),  # answered: not written
    ],
    ids=type,
)
def test_a_request_that_lost_its_answer_is_told_from_one_that_never_left(exc, unknown):
    error = translate_error(exc, stream="rides", endpoint=URL)

    assert isinstance(error, RetryableSinkError) and error.outcome_unknown is unknown


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (client_error("ResourceNotFoundException"), "stream 'rides' no longer exists at " + URL),
        (
            client_error("ResourceNotFoundException", operation="DescribeStreamSummary"),
            "stream 'rides' not found at " + URL,
        ),
        (client_error("AccessDeniedException"), "grant the credentials kinesis:PutRecords"),
        (client_error("ValidationException", message="key too long"), "invalid: key too long"),
        (client_error("InvalidArgumentException"), "Kinesis rejected PutRecords as invalid"),
        (client_error("KMSDisabledException"), "KMS key of stream 'rides' cannot be used"),
        (client_error("SomethingNew"), "SomethingNew: it failed"),
        (NoCredentialsError(), "no AWS credentials found: set AWS_PROFILE"),
        (PartialCredentialsError(provider="env", cred_var="key"), "no AWS credentials found"),
        (ProfileNotFound(profile="race"), "check --profile or AWS_PROFILE"),
        (NoRegionError(), "pass --region or set AWS_REGION"),
    ]
    + [(client_error(code), "AWS refused the credentials") for code in sorted(CREDENTIAL_CODES)],
    ids=itertools.count(),
)
def test_failures_retrying_cannot_fix_stop_the_run_with_what_to_do(exc, says):
    error = translate_error(exc, stream="rides", endpoint=URL)

    assert isinstance(error, FatalSinkError)
    assert says in str(error)
    assert "\n" not in str(error)


def test_a_long_server_message_is_cut_to_one_short_line():
    error = translate_error(client_error("ValidationException", message="k" * 5000), stream="s")

    assert len(str(error)) < 400


def run(*args: str):
    return CliRunner().invoke(
        simulate, ["--riders", "5", "--duration", "2", "--fast", "--json", *args]
    )


def test_a_missing_stream_stops_simulate_with_one_line(kinesis_server):
    result = run("--stream", "no-such-stream", "--endpoint-url", kinesis_server)

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: stream 'no-such-stream' not found at {kinesis_server}: create it "
        "(or pass --create-stream), or check --region and --endpoint-url"
    )


def test_an_unreachable_endpoint_is_named(aws_test_env):
    endpoint = f"http://127.0.0.1:{free_port()}"

    result = run("--stream", "rides", "--endpoint-url", endpoint)

    assert result.exit_code == 1
    assert f"cannot reach Kinesis at {endpoint}" in result.stderr
    assert "check --endpoint-url" in result.stderr


def test_missing_credentials_say_how_to_provide_them(aws_test_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    # Not this machine: the request is signed (and refused for want of credentials) before any
    # connection is made, so nothing leaves 127.0.0.1.
    result = run("--stream", "rides", "--endpoint-url", "https://kinesis.example.invalid")

    assert result.exit_code == 1
    assert "no AWS credentials found: set AWS_PROFILE or run `aws configure`" in result.stderr


def test_a_server_on_this_machine_needs_no_credentials(kinesis_server, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    result = run("--stream", "no-such-stream", "--endpoint-url", kinesis_server)

    assert result.exit_code == 1  # it got as far as asking the server about the stream
    assert "stream 'no-such-stream' not found" in result.stderr


def test_an_unknown_profile_is_named(kinesis_server, monkeypatch):
    result = run("--stream", "rides", "--endpoint-url", kinesis_server, "--profile", "nobody")

    assert result.exit_code == 1
    assert "The config profile (nobody) could not be found" in result.stderr


def test_a_stream_still_creating_is_waited_for(kinesis_server, kinesis_client, stream_name):
    kinesis_client.create_stream(StreamName=stream_name, ShardCount=2)

    sink = KinesisSink.open(SinkOptions(stream=stream_name, endpoint_url=kinesis_server))
    sink.close()

    summary = kinesis_client.describe_stream_summary(StreamName=stream_name)
    assert summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
    assert len(sink.describe().shards) == 2


def summary(status: str) -> dict[str, Any]:
    return {
        "StreamDescriptionSummary": {
            "StreamName": "rides",
            "StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/rides",
            "StreamStatus": status,
            "RetentionPeriodHours": 24,
            "StreamCreationTimestamp": 0,
            "EnhancedMonitoring": [],
            "OpenShardCount": 1,
        }
    }


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_waiting_for_a_creating_stream_is_reported_until_it_is_active(aws_test_env):
    client = make_client(endpoint_url=URL)
    progress, clock = io.StringIO(), FakeTime()
    opener = StreamOpener(
        client, "rides", progress=progress, sleep=clock.sleep, monotonic=lambda: clock.now
    )
    with Stubber(client) as stub:
        for status in ("CREATING", "CREATING", "ACTIVE"):
            stub.add_response("describe_stream_summary", summary(status), {"StreamName": "rides"})
        opener.wait_until_active()
        stub.assert_no_pending_responses()
    client.close()

    lines = progress.getvalue().splitlines()
    assert lines[0].startswith("stream 'rides' is CREATING; waiting until it is ACTIVE")
    assert lines[-1] == "stream 'rides' is ACTIVE"


def test_a_stream_creating_for_too_long_stops_with_a_message(aws_test_env):
    client = make_client(endpoint_url=URL)
    clock = FakeTime()
    opener = StreamOpener(
        client,
        "rides",
        progress=io.StringIO(),
        timeout=5,
        sleep=clock.sleep,
        monotonic=lambda: clock.now,
    )
    with Stubber(client) as stub:
        for _ in range(20):
            stub.add_response("describe_stream_summary", summary("CREATING"))
        with pytest.raises(FatalSinkError, match="still CREATING after 5 s: try again once"):
            opener.wait_until_active()
    client.close()


def test_a_stream_being_deleted_is_not_waited_for(aws_test_env):
    client = make_client(endpoint_url=URL)
    opener = StreamOpener(client, "rides", progress=io.StringIO())
    with Stubber(client) as stub:
        stub.add_response("describe_stream_summary", summary("DELETING"))
        with pytest.raises(FatalSinkError, match="is being deleted"):
            opener.wait_until_active()
    client.close()


def test_access_denied_on_put_records_stops_the_run(aws_test_env):
    client = make_client(endpoint_url=URL)
    sink = KinesisSink(client, "rides", split_hash_space(1))
    with Stubber(client) as stub:
        stub.add_client_error(
            "put_records",
            service_error_code="AccessDeniedException",
            service_message="User is not authorized to perform: kinesis:PutRecords",
        )
        with pytest.raises(FatalSinkError, match="access denied to stream 'rides'"):
            sink.put_records([Record(b"{}", "k", None, 0.0)], now=0.0)
    sink.close()


def test_a_record_kinesis_rejects_as_invalid_stops_the_run(
    kinesis_server, kinesis_client, stream_name
):
    kinesis_client.create_stream(StreamName=stream_name, ShardCount=1)
    sink = KinesisSink.open(SinkOptions(stream=stream_name, endpoint_url=kinesis_server))

    with pytest.raises(FatalSinkError, match="Kinesis rejected PutRecords as invalid"):
        sink.put_records([Record(b"{}", "k" * 300, None, 0.0)], now=0.0)
    sink.close()


def test_creating_a_stream_over_the_shard_limit_says_what_to_do(kinesis_server, stream_name):
    result = run("--stream", stream_name, "--endpoint-url", kinesis_server, "--create-stream",
                 "--shards", "500")  # fmt: skip

    assert result.exit_code == 1
    assert f"cannot create stream '{stream_name}' with 500 shards" in result.stderr
    assert "ask for fewer --shards or a higher shard quota" in result.stderr


def test_a_stream_deleted_during_the_run_stops_it_with_one_line(
    kinesis_server, kinesis_client, stream_name
):
    options = SinkOptions(stream=stream_name, endpoint_url=kinesis_server, create_stream=True)
    sink = KinesisSink.open(options, progress=io.StringIO())
    put_records = sink.put_records
    sent = itertools.count()

    def deleting_after_the_first_request(records, now):
        if next(sent) == 1:
            kinesis_client.delete_stream(StreamName=stream_name)
            kinesis_client.get_waiter("stream_not_exists").wait(
                StreamName=stream_name, WaiterConfig={"Delay": 0.05, "MaxAttempts": 100}
            )
        return put_records(records, now)

    sink.put_records = deleting_after_the_first_request  # type: ignore[method-assign]
    clock = ScaledClock(speed=20)
    config = SimulationConfig(fleet=FleetConfig(riders=100), duration=10, seed=2)
    try:
        result = Simulation(
            config, sink, clock, dispatcher=make_dispatcher(sink, clock, options)
        ).run()
    finally:
        sink.close()

    assert str(result.error) == (
        f"stream '{stream_name}' no longer exists at {kinesis_server}: "
        "it was deleted during the run"
    )
    stats = result.stats
    assert stats.delivered > 0
    assert stats.delivered + stats.dropped == stats.generated
