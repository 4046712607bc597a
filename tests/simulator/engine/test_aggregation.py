import base64
import json
import pickle
import subprocess
import sys

import boto3
import pytest
from aws_kinesis_agg.deaggregator import deaggregate_records
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.engine.aggregation import (
    DEFAULT_BATCHING_MODES,
    PER_SECOND,
    BatchingKind,
    BatchingMode,
    BatchingStage,
    parse_batching,
    unpack,
)
from simulator.engine.batching import Record
from simulator.engine.clock import VirtualClock
from simulator.engine.fleet import FleetConfig
from simulator.engine.keys import PartitionKeyStrategy
from simulator.engine.producer import ProducerConfig
from simulator.engine.runner import Simulation, SimulationConfig
from simulator.engine.shards import LocalStream, ShardRouter
from simulator.sinks.kinesis import list_shards
from simulator.verify.check import StreamRecord, StreamVerifier
from simulator.verify.cli import ShardReader
from tests.streams import RecordingStream

START = 1_764_187_200.0


def _run(mode, *, strategy="racer", riders=120, duration=12, shards=4):
    stream = RecordingStream(shards)
    config = SimulationConfig(
        fleet=FleetConfig(riders=riders),
        duration=duration,
        strategy=PartitionKeyStrategy(strategy),
        seed=3,
    )
    simulation = Simulation(config, stream, VirtualClock(START), batching=mode)
    stage = simulation.batching
    result = simulation.run()
    return stream, result, stage


@pytest.mark.parametrize(
    ("text", "kind", "hold"),
    [
        ("per-second", BatchingKind.PER_SECOND, 0.0),
        ("buffered", BatchingKind.BUFFERED, 5.0),
        ("buffered:2.5", BatchingKind.BUFFERED, 2.5),
        ("kpl", BatchingKind.KPL, 0.1),
        ("KPL:1", BatchingKind.KPL, 1.0),
    ],
)
def test_batching_modes_parse_as_the_command_line_spells_them(text, kind, hold):
    mode = parse_batching(text)
    assert (mode.kind, mode.hold_seconds) == (kind, hold)


@pytest.mark.parametrize("text", ["hourly", "buffered:0", "buffered:-1", "per-second:3", "kpl:99"])
def test_unknown_batching_modes_are_refused(text):
    with pytest.raises(ValueError):
        parse_batching(text)


def test_per_second_sends_each_message_as_its_own_record():
    stream, result, _ = _run(PER_SECOND)
    assert len(stream.accepted) == 120 * 12
    assert all(record.messages == 1 for _, record, _ in stream.accepted)
    assert result.stats.messages_delivered == 120 * 12


def test_buffered_records_split_into_every_message_once_on_its_own_shard():
    stream, result, stage = _run(parse_batching("buffered:3"))
    messages = [m for _, record, _ in stream.accepted for m in unpack(record.data)]
    uuids = [json.loads(m)["uuid"] for m in messages]
    assert len(uuids) == len(set(uuids)) == 120 * 12
    assert result.stats.messages_delivered == 120 * 12
    assert len(stream.accepted) < 120 * 12 / 10
    # Racer keys pin each rider to a shard; packing keeps every message on its rider's shard.
    route = stream.router.shard_for
    for shard_id, record, _ in stream.accepted:
        for message in unpack(record.data):
            assert route(str(json.loads(message)["racerId"])).shard_id == shard_id
    # No message waits longer than the hold time (plus one loop tick) in the client.
    assert stage.hold.percentile(100) <= 3000 + 100


def test_kpl_records_deaggregate_to_the_original_messages_and_keys():
    stream, result, _ = _run(parse_batching("kpl"))
    assert result.stats.messages_delivered == 120 * 12
    lambda_event = [
        {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": record.partition_key,
                "sequenceNumber": "1",
                "approximateArrivalTimestamp": now,
                "data": base64.b64encode(record.data).decode(),
            }
        }
        for _, record, now in stream.accepted
    ]
    users = deaggregate_records(lambda_event)
    assert len(users) == 120 * 12
    keys_and_racers = set()
    for user in users:
        message = json.loads(base64.b64decode(user["kinesis"]["data"]))
        keys_and_racers.add((user["kinesis"]["partitionKey"], str(message["racerId"])))
    # Each user record keeps its own partition key: the racer id under the racer strategy.
    assert all(key == racer for key, racer in keys_and_racers)
    assert len(keys_and_racers) == 120
    assert all(record.size <= 25 * 1024 for _, record, _ in stream.accepted)


def test_unpack_reads_a_plain_message_as_itself():
    assert unpack(b'{"uuid":"x"}') == [b'{"uuid":"x"}']


def test_a_packed_record_never_exceeds_its_size_limit():
    mode = BatchingMode(kind=BatchingKind.BUFFERED, hold_seconds=5, max_record_bytes=4096)
    stream, result, _ = _run(mode, strategy="class", riders=200, duration=6)
    assert result.stats.messages_delivered == 200 * 6
    assert max(record.size for _, record, _ in stream.accepted) <= 4096


@pytest.mark.parametrize("text", ["per-second", "buffered:2", "kpl"])
def test_verify_reads_every_message_back_whatever_the_batching_mode(text):
    stream, _, _ = _run(parse_batching(text), riders=60, duration=6)
    verifier = StreamVerifier("built-in", stream.router.shards)
    verifier.add_all(
        StreamRecord(
            shard_id=shard_id,
            sequence_number=str(i),
            partition_key=record.partition_key,
            data=record.data,
        )
        for i, (shard_id, record, _) in enumerate(stream.accepted)
    )
    report = verifier.report()
    assert (report.unique, report.duplicates, report.gaps, report.malformed) == (360, 0, 0, 0)
    assert report.off_shard == 0


def test_a_hold_longer_than_the_record_ttl_still_delivers_everything():
    stream = RecordingStream(2)
    config = SimulationConfig(
        fleet=FleetConfig(riders=20),
        duration=50,
        seed=3,
        producer=ProducerConfig(record_ttl=10.0),
    )
    simulation = Simulation(
        config, stream, VirtualClock(START), batching=parse_batching("buffered:20")
    )
    result = simulation.run()
    assert result.stats.dropped == 0
    assert result.stats.messages_delivered == 20 * 50


@pytest.mark.parametrize("mode", ["buffered:2", "kpl"])
def test_packed_records_written_to_a_kinesis_server_read_back_whole(
    mode, kinesis_server, stream_name
):
    def alleycat(*args):
        command = [sys.executable, "-m", "alleycat", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    run = alleycat(
        "simulate",
        *("--stream", stream_name, "--create-stream", "--shards", "2"),
        *("--endpoint-url", kinesis_server, "--batching", mode, "--partition-key", "balanced"),
        *("--riders", "200", "--duration", "10", "--speed", "10", "--seed", "4", "--json"),
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["dropped"] == 0
    assert summary["delivered"] < 200 * 10 / 10

    checked = alleycat(
        "verify", "--stream", stream_name, "--endpoint-url", kinesis_server, "--json"
    )
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["records"] == summary["delivered"]
    assert report["messages"] == report["unique"] == 2000
    assert (report["duplicates"], report["gaps"], report["malformed"]) == (0, 0, 0)

    # At --speed 10 the loop takes a quarter second of messages at a time; a record still
    # holds no more than the mode's hold time of them.
    hold_ms = parse_batching(mode).hold_seconds * 1000
    client = boto3.client("kinesis", endpoint_url=kinesis_server, region_name="us-east-1")
    reader = ShardReader(client, stream_name)
    spans = []
    for shard in list_shards(client, stream_name):
        for record in reader.records(shard):
            times = [json.loads(m)["deviceTimestamp"] for m in unpack(record.data)]
            spans.append(max(times) - min(times))
    client.close()
    assert len(spans) == summary["delivered"]
    assert max(spans) <= hold_ms
    assert max(spans) > hold_ms / 2  # records do fill up to the hold time


class ListSource:
    """A fleet stand-in: the given records, all due at their own times."""

    def __init__(self, records):
        self.records = records
        self.cursor = 0

    @property
    def done(self):
        return self.cursor >= len(self.records)

    @property
    def next_due(self):
        return None if self.done else self.records[self.cursor].generated_at

    def emit_until(self, now, out, limit):
        start = self.cursor
        while self.cursor < len(self.records) and self.records[self.cursor].generated_at <= now:
            out.append(self.records[self.cursor])
            self.cursor += 1
        return self.cursor - start

    def flush(self, now, out):
        pass

    def leaderboard(self, per_class=5):
        return {}


# Ride messages are one-line JSON objects; anything else is not a message.
message_bodies = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n\r"),
                         max_size=300).map(lambda t: json.dumps({"m": t}).encode())  # fmt: skip
messages = st.lists(
    st.tuples(message_bodies, st.integers(min_value=0, max_value=40)), min_size=1, max_size=60
)


@settings(max_examples=60, deadline=None)
@given(messages=messages, kind=st.sampled_from([BatchingKind.BUFFERED, BatchingKind.KPL]))
def test_packing_keeps_every_message_in_order_within_the_size_limit(messages, kind):
    shards = LocalStream(3).describe().shards
    records = [
        Record(data, f"rider-{key}", None, START + i / 10, rider=key)
        for i, (data, key) in enumerate(messages)
    ]
    mode = BatchingMode(kind=kind, hold_seconds=1.0, max_record_bytes=2048)
    stage = BatchingStage(ListSource(records), mode, shards)
    out: list[Record] = []
    now = START
    while not stage.done:
        now += 0.25
        stage.emit_until(now, out, 10_000)
    router = ShardRouter(shards)
    assert sum(record.messages for record in out) == len(messages)
    for record in out:
        assert record.size <= 2048
        unpacked = unpack(record.data)
        assert len(unpacked) == record.messages
    # Per shard, the messages come out in the order they went in.
    by_shard: dict[int, list[bytes]] = {}
    for data, key in messages:
        by_shard.setdefault(router.index_for(f"rider-{key}"), []).append(data)
    unpacked_by_shard: dict[int, list[bytes]] = {}
    for record in out:
        shard = router.index_for(record.partition_key)
        unpacked_by_shard.setdefault(shard, []).extend(unpack(record.data))
    assert unpacked_by_shard == by_shard


def test_stopping_a_buffered_run_sends_the_held_messages_too():
    config = SimulationConfig(fleet=FleetConfig(riders=30), duration=300, seed=3)
    simulation = Simulation(
        config, RecordingStream(2), VirtualClock(START), batching=parse_batching("buffered:5")
    )

    def stop_mid_hold(sim):
        if sim.clock.now() > START + 7.5:
            sim.stop()

    result = simulation.run(on_pass=stop_mid_hold)
    assert result.interrupted and result.stats.dropped == 0
    taken = simulation.batching.messages
    assert 30 * 7 <= taken < 30 * 300
    assert result.stats.messages_delivered == taken


@pytest.mark.parametrize("mode", DEFAULT_BATCHING_MODES, ids=lambda mode: mode.label)
def test_a_batching_mode_survives_pickling_for_compare_workers(mode):
    assert pickle.loads(pickle.dumps(mode)) == mode
