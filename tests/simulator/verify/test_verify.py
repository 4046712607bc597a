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

from alleycat_rider.core.message import RideEvent, RideMessage
from simulator.engine.keys import balanced_keys
from simulator.engine.kpl import KPL_MAGIC, AggregateError, deaggregate
from simulator.engine.shards import ShardRouter, split_hash_space
from simulator.sinks.kinesis import make_client
from simulator.verify.check import ShardRule, StreamRecord, StreamVerifier
from simulator.verify.cli import ShardReader, shard_rule_for, verify
from tests.servers.kinesis import create_stream

RACE = 5_880_622
SHARDS = split_hash_space(2)


def message(
    racer: int,
    second: int,
    *,
    race: int = RACE,
    uuid: str | None = None,
    started: int = 0,
    jitter_ms: int = 0,
) -> bytes:
    """A valid ride message of ``racer`` at ``second`` of a race begun ``started`` s into the
    window of ``race``, sent ``jitter_ms`` late."""
    return RideMessage(
        uuid=uuid or f"{race % 10**8:08d}-{started:04d}-4000-8000-{racer:06d}{second:06d}",
        event=RideEvent.UPDATE,
        device_timestamp=race * 300_000 + (started + second - 1) * 1000 + jitter_ms,
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


def two_races(racer: int, *, missing: dict[int, set[int]] | None = None, jitter: int = 0):
    """Two 60-second races of ``racer`` in one race window, less the ``missing`` seconds."""
    missing = missing or {}
    return [
        on_its_shard(
            message(racer, second, started=started, jitter_ms=jitter * (second % 3 - 1)),
            f"{started}-{second}",
        )
        for started in (0, 60)
        for second in range(1, 61)
        if second not in missing.get(started, set())
    ]


def test_a_second_lost_in_one_of_two_races_sharing_a_race_id_is_a_gap():
    report = verified(two_races(7, missing={60: {17}}))

    assert report.gaps == 1
    assert not report.ok
    (race,) = report.races
    assert (race.race_id, race.riders, race.rider_races, race.gaps) == (RACE, 1, 2, 1)
    assert report.gap_examples == (
        f"race {RACE} racer 7 from 2025-11-26T19:51:00.000Z: seconds 17",
    )


def test_two_whole_races_sharing_a_race_id_have_no_gaps():
    report = verified(two_races(7) + two_races(8))

    assert (report.messages, report.unique, report.gaps) == (240, 240, 0)
    assert report.ok
    (race,) = report.races
    assert (race.riders, race.rider_races) == (2, 4)


def test_a_real_bikes_jittering_send_times_keep_its_races_apart():
    report = verified(two_races(7, missing={0: {30}}, jitter=40))

    assert (report.gaps, report.races[0].rider_races) == (1, 2)


def test_a_race_whose_start_estimates_straddle_a_bucket_edge_is_one_race():
    # Estimates 1 ms either side of a multiple of the tolerance.
    records = [
        on_its_shard(message(7, second, jitter_ms=-1 if second % 2 else 1), str(second))
        for second in (1, 2, 3, 5)
    ]

    report = verified(records)

    assert (report.gaps, report.races[0].rider_races) == (1, 1)


def test_a_copy_of_a_message_is_a_duplicate_and_neither_fills_nor_opens_a_gap():
    races = two_races(7, missing={60: {17}})
    copy = StreamRecord(
        shard_id=races[5].shard_id, sequence_number="9", partition_key="x", data=races[5].data
    )
    # The same uuid as the lost second 17 of the second race, but a later resend of another
    # second: it is a duplicate, so it does not fill the gap.
    resent = on_its_shard(
        message(7, 17, started=60, uuid=RideMessage.from_json(races[16].data).uuid), "y"
    )

    report = verified([*races, copy, resent])

    assert (report.messages, report.unique, report.duplicates) == (121, 119, 2)
    assert report.gaps == 1
    assert report.races[0].duplicates == 2


def test_a_message_past_a_day_long_race_is_malformed():
    uuid = "00000000-0000-4000-8000-000000000000"
    report = verified([on_its_shard(message(7, 10**9, uuid=uuid), "k")])

    assert (report.malformed, report.messages) == (1, 0)
    assert "past a day-long race" in report.malformed_examples[0]


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


THREE = split_hash_space(3)


def dealt(racer: int, data: bytes, *, shards=THREE) -> StreamRecord:
    """A record of ``racer`` where ``--partition-key balanced`` writes it: its key and shard."""
    racers = list(range(100, 100 + 3 * len(shards) + 1))
    key, explicit = balanced_keys(racers, shards)[racers.index(racer)]
    shard = ShardRouter(shards).shard_for(key, explicit)
    return StreamRecord(shard_id=shard.shard_id, sequence_number="1", partition_key=key, data=data)


def check(records: list[StreamRecord], rule: ShardRule, **kwargs):
    verifier = StreamVerifier("rides", kwargs.pop("shards", THREE), shard_rule=rule, **kwargs)
    verifier.add_all(records)
    return verifier.report()


def test_balanced_records_on_the_shard_their_rider_was_dealt_are_not_off_shard():
    records = [dealt(racer, message(racer, 1)) for racer in range(100, 110)]
    by_md5 = sum(
        record.shard_id != ShardRouter(THREE).shard_for(record.partition_key).shard_id
        for record in records
    )

    assert by_md5 > 0  # the MD5 rule would have cried wolf
    for rule in (ShardRule.BALANCED, ShardRule.MD5_OR_BALANCED):
        report = check(records, rule)
        assert (report.off_shard, report.shard_unchecked) == (0, 0)
        assert report.shard_rule is rule
    assert check(records, ShardRule.MD5).off_shard == by_md5


def test_a_balanced_record_on_another_shard_than_its_rider_was_dealt_is_off_shard():
    right = dealt(104, message(104, 1))
    wrong_shard = next(s.shard_id for s in THREE if s.shard_id != right.shard_id)
    moved = StreamRecord(
        shard_id=wrong_shard, sequence_number="2", partition_key="104", data=message(104, 2)
    )

    assert check([right, moved], ShardRule.BALANCED).off_shard == 1


def test_balanced_packed_records_are_checked_message_by_message():
    on_one = dealt(100, b"\n".join([message(100, 1), message(103, 1)]))
    mixed = dealt(100, b"\n".join([message(100, 2), message(101, 2)]))

    assert check([on_one, mixed], ShardRule.BALANCED).off_shard == 1


def test_balanced_records_on_a_shard_closed_before_the_deal_are_not_checked():
    closed = StreamRecord(
        shard_id="shardId-000000000009", sequence_number="1", partition_key="100",
        data=message(100, 1),
    )  # fmt: skip
    parent = THREE[0].__class__("shardId-000000000009", 0, 2**128 - 1)

    report = check([closed], ShardRule.BALANCED, shards=[*THREE, parent], dealt_over=THREE)

    assert (report.off_shard, report.shard_unchecked) == (0, 1)


def test_a_record_neither_rule_puts_there_is_off_shard_when_the_strategy_is_unknown():
    right = dealt(104, message(104, 1))
    wrong = [s.shard_id for s in THREE if s.shard_id != right.shard_id]
    misplaced = [
        StreamRecord(shard_id=s, sequence_number="2", partition_key="104", data=message(104, 2))
        for s in wrong
        if s != ShardRouter(THREE).shard_for("104").shard_id
    ]

    report = check([right, *misplaced], ShardRule.MD5_OR_BALANCED)

    assert misplaced
    assert report.off_shard == len(misplaced)


def test_the_json_report_has_the_documented_fields():
    report = verified([on_its_shard(message(1, 1), "k")])

    document = json.loads(json.dumps(report.to_dict()))

    for name in ("records", "unique", "duplicates", "gaps", "malformed", "shards", "races"):
        assert name in document
    assert (document["off_shard"], document["shard_rule"], document["shard_unchecked"]) == (
        0,
        "md5",
        0,
    )
    assert {"shard_id", "records"} <= set(document["shards"][0])
    assert {"race_id", "riders", "rider_races", "gaps"} <= set(document["races"][0])


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


def test_verify_checks_balanced_records_by_the_deal_the_partition_key_option_names(
    kinesis_server, kinesis_client, stream_name
):
    create_stream(kinesis_client, stream_name, 3)
    racers = list(range(100, 130))
    entries = [
        {"PartitionKey": key, "ExplicitHashKey": explicit, "Data": message(racer, 1)}
        for racer, (key, explicit) in zip(racers, balanced_keys(racers, THREE), strict=True)
    ]
    assert (
        kinesis_client.put_records(StreamName=stream_name, Records=entries)["FailedRecordCount"]
        == 0
    )
    by_md5 = sum(
        ShardRouter(THREE).shard_for(key).shard_id
        != ShardRouter(THREE).shard_for(key, explicit).shard_id
        for key, explicit in balanced_keys(racers, THREE)
    )

    def off_shard(*strategy: str, exit_code: int = 0):
        result = CliRunner().invoke(
            verify,
            ["--stream", stream_name, "--endpoint-url", kinesis_server, "--json", *strategy],
        )
        assert result.exit_code == exit_code, result.output
        report = json.loads(result.stdout)
        return report["off_shard"], report["shard_rule"]

    assert off_shard("--partition-key", "balanced") == (0, "balanced")
    assert off_shard() == (0, "md5-or-balanced")
    # Most of them are off an MD5 shard: the wrong key rule, not success.
    assert off_shard("--partition-key", "racer", exit_code=1) == (by_md5, "md5")
    assert by_md5 * 2 > len(racers)


def test_most_records_off_their_shard_blame_the_key_rule_and_fail():
    records = [dealt(racer, message(racer, 1)) for racer in range(100, 110)]
    off_by_md5 = check(records, ShardRule.MD5).off_shard
    assert off_by_md5 * 2 > len(records)

    report = check(records, ShardRule.MD5)

    assert not report.ok
    assert report.key_rule_mismatch
    assert report.problems() == [
        f"{off_by_md5:,} of 10 records are off their shard (md5): the likely cause is the key "
        "rule; pass the --partition-key the stream was written with"
    ]
    assert report.to_dict()["ok"] is False
    assert check(records, ShardRule.BALANCED).ok


def test_a_few_records_off_their_shard_are_counted_but_do_not_fail():
    records = [on_its_shard(message(1, s), f"k{s}", s) for s in range(1, 5)]
    other = next(s.shard_id for s in SHARDS if s.shard_id != records[0].shard_id)
    moved = StreamRecord(
        shard_id=other, sequence_number="9", partition_key="k1", data=message(1, 5)
    )

    report = verified([*records, moved])

    assert (report.off_shard, report.ok, report.problems()) == (1, True, [])


def test_verify_of_a_stream_written_with_another_key_rule_exits_1_saying_so(
    kinesis_server, kinesis_client, stream_name
):
    create_stream(kinesis_client, stream_name, 3)
    racers = list(range(100, 130))
    entries = [
        {"PartitionKey": key, "ExplicitHashKey": explicit, "Data": message(racer, 1)}
        for racer, (key, explicit) in zip(racers, balanced_keys(racers, THREE), strict=True)
    ]
    kinesis_client.put_records(StreamName=stream_name, Records=entries)

    result = CliRunner().invoke(
        verify,
        ["--stream", stream_name, "--endpoint-url", kinesis_server, "--partition-key", "racer"],
    )

    assert result.exit_code == 1
    assert "records are off their shard (md5): the likely cause is the key rule" in result.stderr
    assert result.stderr.count("\n") == 1 + 3  # one error line after the three shard lines


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


def _keyless(shard: str, racer: int, second: int) -> StreamRecord:
    return StreamRecord(
        shard_id=shard, sequence_number=str(second), partition_key="", data=message(racer, second)
    )


def test_records_without_a_partition_key_are_read_and_never_called_off_shard():
    # A stream that spreads records itself (auto) puts a rider's seconds on any shard.
    records = [_keyless(SHARDS[s % len(SHARDS)].shard_id, 7, s) for s in range(1, 11)]
    for rule in (ShardRule.SERVICE, ShardRule.MD5):
        verifier = StreamVerifier("rides", SHARDS, shard_rule=rule)
        verifier.add_all(records)
        report = verifier.report()
        assert (report.messages, report.unique, report.gaps, report.malformed) == (10, 10, 0, 0)
        assert report.off_shard == 0
        assert report.shard_unchecked == 10
    assert shard_rule_for("auto") is ShardRule.SERVICE


def test_verify_reads_records_that_came_back_without_a_partition_key(aws_test_env):
    client = make_client(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    shard = split_hash_space(1)[0]
    with Stubber(client) as stub:
        stub.add_response("get_shard_iterator", {"ShardIterator": "it-1"})
        stub.add_response(
            "get_records",
            {"Records": [{"SequenceNumber": "1", "Data": message(3, 1)}],
             "NextShardIterator": "it-2", "MillisBehindLatest": 0},
        )  # fmt: skip
        stub.add_response("get_records", {"Records": [], "MillisBehindLatest": 0})
        read = list(ShardReader(client, "rides").records(shard))
    client.close()
    assert read == [
        StreamRecord(shard_id=shard.shard_id, sequence_number="1", partition_key="",
                     data=message(3, 1))
    ]  # fmt: skip
