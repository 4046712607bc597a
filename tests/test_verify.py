"""Reading a stream back: duplicates, gaps, malformed and aggregated records, per race."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import pytest
from aws_kinesis_agg.aggregator import AggRecord
from botocore.stub import Stubber
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from alleycat_rider.message import RideEvent, RideMessage
from simulator.kpl import KPL_MAGIC, AggregateError, deaggregate
from simulator.shards import split_hash_space
from simulator.sinks.kinesis import make_client
from simulator.verify import StreamRecord, StreamVerifier
from simulator.verify_cli import ShardReader, verify
from tests.servers.kinesis import create_stream

RACE = 5_880_622
SHARDS = split_hash_space(2)


def message(racer: int, second: int, *, race: int = RACE, uuid: str | None = None) -> bytes:
    """A valid ride message of ``racer`` at ``second``."""
    return RideMessage(
        uuid=uuid or f"00000000-{race % 10000:04d}-4000-8000-{racer:06d}{second:06d}",
        event=RideEvent.UPDATE,
        device_timestamp=1_764_186_600_000 + second * 1000,
        second=second,
        race_id=race,
        name="Ada",
        racer_id=racer,
        class_id=1,
        cadence=70.0,
        resistance=40.0,
    ).to_json()


def on_its_shard(data: bytes, key: str, sequence: int = 1) -> StreamRecord:
    """A record of ``data`` under ``key``, on the shard ``key`` hashes to."""
    value = int.from_bytes(hashlib.md5(key.encode()).digest(), "big")
    shard = next(s for s in SHARDS if s.starting_hash_key <= value <= s.ending_hash_key)
    return StreamRecord(
        shard_id=shard.shard_id, sequence_number=str(sequence), partition_key=key, data=data
    )


def aggregate(parts: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """A KPL aggregate of ``parts``: its partition key and bytes."""
    record = AggRecord()
    for key, data in parts:
        assert record.add_user_record(key, data)
    key, _explicit, data = record.get_contents()
    return key, data


def verified(records: list[StreamRecord]):
    verifier = StreamVerifier("rides", SHARDS)
    verifier.add_all(records)
    return verifier.report()


def test_a_complete_stream_has_every_uuid_once_and_no_gaps():
    records = [on_its_shard(message(r, s), str(r * 100 + s)) for r in (1, 2) for s in (1, 2, 3)]

    report = verified(records)

    assert (report.records, report.messages, report.unique) == (6, 6, 6)
    assert (report.duplicates, report.gaps, report.malformed, report.off_shard) == (0, 0, 0, 0)
    assert report.ok
    assert sum(s.records for s in report.shards) == 6
    assert [s.shard_id for s in report.shards] == [s.shard_id for s in SHARDS]


def test_a_uuid_written_twice_is_a_duplicate_not_a_loss():
    first = message(1, 1)
    records = [on_its_shard(first, "a"), on_its_shard(first, "a", 2)]

    report = verified(records)

    assert (report.messages, report.unique, report.duplicates) == (2, 1, 1)
    assert report.ok
    assert report.races[0].duplicates == 1


def test_a_missing_second_between_a_riders_first_and_last_is_a_gap():
    records = [on_its_shard(message(7, s), f"k{s}") for s in (1, 2, 5)]

    report = verified(records)

    assert report.gaps == 2
    assert not report.ok
    assert report.gap_examples == (f"race {RACE} racer 7: seconds 3, 4",)


def test_gaps_and_duplicates_are_reported_per_race():
    records = [
        on_its_shard(message(1, 1, race=RACE), "a"),
        on_its_shard(message(1, 3, race=RACE), "b"),
        on_its_shard(message(1, 1, race=RACE + 1), "c"),
        on_its_shard(message(1, 1, race=RACE + 1), "c", 2),
    ]

    races = {r.race_id: r for r in verified(records).races}

    assert (races[RACE].messages, races[RACE].gaps, races[RACE].duplicates) == (2, 1, 0)
    assert (races[RACE + 1].messages, races[RACE + 1].unique) == (2, 1)
    assert races[RACE + 1].duplicates == 1


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[1, 2]", b'{"uuid": "x"}', message(1, 1).replace(b'"second":1', b'"second":0')],
)
def test_records_that_are_not_ride_messages_are_malformed(data):
    report = verified([on_its_shard(data, "k")])

    assert report.malformed == 1
    assert report.messages == 0
    assert not report.ok
    assert report.malformed_examples[0].startswith("shardId-")


def test_kpl_aggregates_are_unpacked_into_their_messages():
    key, data = aggregate([(f"r{s}", message(3, s)) for s in range(1, 11)])

    report = verified([on_its_shard(data, key)])

    assert (report.records, report.aggregated, report.messages, report.unique) == (1, 1, 10, 10)
    assert report.ok


def test_newline_delimited_messages_in_one_record_are_each_checked():
    data = b"\n".join([message(2, 1), message(2, 2), b"oops", message(2, 4)]) + b"\n"

    report = verified([on_its_shard(data, "k")])

    assert (report.records, report.messages, report.malformed, report.gaps) == (1, 3, 1, 1)


def test_an_aggregate_with_a_wrong_digest_is_malformed():
    key, data = aggregate([("a", message(1, 1)), ("b", message(1, 2))])
    broken = data[:-1] + bytes([data[-1] ^ 0xFF])

    with pytest.raises(AggregateError, match="MD5"):
        deaggregate(broken)
    report = verified([on_its_shard(broken, key)])
    assert (report.malformed, report.messages) == (1, 0)


def test_a_plain_record_is_not_mistaken_for_an_aggregate():
    assert deaggregate(message(1, 1)) is None
    assert deaggregate(KPL_MAGIC + b"short") is None


def test_a_record_on_a_shard_its_key_does_not_hash_to_is_counted():
    good = on_its_shard(message(1, 1), "k")
    other = next(s.shard_id for s in SHARDS if s.shard_id != good.shard_id)
    moved = StreamRecord(shard_id=other, sequence_number="2", partition_key="k", data=message(1, 2))

    report = verified([good, moved])

    assert report.off_shard == 1


def test_the_json_report_has_the_documented_fields():
    report = verified([on_its_shard(message(1, 1), "k")])

    document = json.loads(json.dumps(report.to_dict()))

    for name in ("records", "unique", "duplicates", "gaps", "malformed", "shards", "races"):
        assert name in document
    assert {"shard_id", "records"} <= set(document["shards"][0])


def put(client, stream: str, payloads: list[tuple[str, bytes]]) -> None:
    entries = [{"PartitionKey": key, "Data": data} for key, data in payloads]
    response = client.put_records(StreamName=stream, Records=entries)
    assert response["FailedRecordCount"] == 0


def test_verify_reads_every_shard_of_a_real_stream(kinesis_server, kinesis_client, stream_name):
    create_stream(kinesis_client, stream_name, 3)
    put(kinesis_client, stream_name, [(f"key-{s}", message(9, s)) for s in range(1, 301)])

    result = CliRunner().invoke(
        verify, ["--stream", stream_name, "--endpoint-url", kinesis_server, "--json"]
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["records"], report["unique"], report["gaps"], report["malformed"]) == (
        300,
        300,
        0,
        0,
    )
    assert len(report["shards"]) == 3
    assert sum(s["records"] for s in report["shards"]) == 300
    assert all(s["records"] > 0 for s in report["shards"])


def test_verify_exits_1_naming_the_gaps_and_malformed_records(
    kinesis_server, kinesis_client, stream_name
):
    create_stream(kinesis_client, stream_name, 1)
    put(kinesis_client, stream_name, [("a", message(4, 1)), ("b", message(4, 3)), ("c", b"??")])

    result = CliRunner().invoke(verify, ["--stream", stream_name, "--endpoint-url", kinesis_server])

    assert result.exit_code == 1
    assert "1 missing seconds and 1 malformed records" in result.stderr
    assert "racer 4: seconds 2" in result.stdout


def test_verify_since_skips_records_that_arrived_before(
    kinesis_server, kinesis_client, stream_name
):
    create_stream(kinesis_client, stream_name, 1)
    put(kinesis_client, stream_name, [("a", message(5, 1))])
    time.sleep(0.05)  # arrival times have millisecond resolution
    since = time.time()
    time.sleep(0.05)
    put(kinesis_client, stream_name, [("b", message(5, 2))])

    result = CliRunner().invoke(
        verify,
        [
            "--stream",
            stream_name,
            "--endpoint-url",
            kinesis_server,
            "--json",
            "--since",
            str(since),
        ],
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["records"] == 1


def test_verify_since_in_the_future_is_a_usage_error(kinesis_server):
    result = CliRunner().invoke(verify, ["--stream", "s", "--since", "4e9"])

    assert result.exit_code == 2
    assert "in the future" in result.stderr


def test_verify_of_a_missing_stream_says_what_to_do(kinesis_server):
    result = CliRunner().invoke(
        verify, ["--stream", "no-such-stream", "--endpoint-url", kinesis_server]
    )

    assert result.exit_code == 1
    assert "stream 'no-such-stream' not found" in result.stderr
    assert "Traceback" not in result.output


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=20), st.binary(min_size=0, max_size=200)),
        min_size=1,
        max_size=30,
    )
)
def test_any_kpl_aggregate_unpacks_to_what_was_packed(parts):
    _key, data = aggregate(parts)

    assert deaggregate(data) == parts


def test_reading_goes_on_past_empty_pages_while_the_shard_is_behind(aws_test_env):
    client = make_client(endpoint_url="http://127.0.0.1:9")
    pauses: list[float] = []
    reader = ShardReader(client, "rides", sleep=pauses.append)
    record = {"SequenceNumber": "1", "PartitionKey": "k", "Data": message(1, 1)}
    with Stubber(client) as stub:
        stub.add_response("get_shard_iterator", {"ShardIterator": "i0"})
        stub.add_response("get_records", {"Records": [], "NextShardIterator": "i1",
                                          "MillisBehindLatest": 60_000})  # fmt: skip
        stub.add_response("get_records", {"Records": [record], "NextShardIterator": "i2",
                                          "MillisBehindLatest": 0})  # fmt: skip
        stub.add_response("get_records", {"Records": [], "NextShardIterator": "i3",
                                          "MillisBehindLatest": 0})  # fmt: skip
        found = list(reader.records(SHARDS[0]))
        stub.assert_no_pending_responses()
    client.close()

    assert [r.data for r in found] == [message(1, 1)]
    assert pauses == [0.2]


def test_an_aggregate_whose_body_is_not_a_kpl_message_is_malformed():
    body = b"\x1a\x05ab"  # a records field promising 5 bytes and holding 2
    data = KPL_MAGIC + body + hashlib.md5(body).digest()

    with pytest.raises(AggregateError, match="bad body"):
        deaggregate(data)


def test_verify_unpacks_kpl_aggregates_in_a_fresh_process(
    kinesis_server, kinesis_client, stream_name
):
    create_stream(kinesis_client, stream_name, 1)
    put(kinesis_client, stream_name, [aggregate([(f"r{s}", message(6, s)) for s in range(1, 6)])])

    checked = subprocess.run(
        [sys.executable, "-m", "alleycat", "verify", "--stream", stream_name,
         "--endpoint-url", kinesis_server, "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert (report["records"], report["aggregated"], report["messages"]) == (1, 1, 5)
    assert (report["unique"], report["malformed"]) == (5, 0)
