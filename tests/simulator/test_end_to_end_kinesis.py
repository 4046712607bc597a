"""A simulated fleet into a real (local) Kinesis stream, proven complete by reading it back."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

from click.testing import CliRunner

from simulator.engine.batching import Record
from simulator.engine.clock import ScaledClock, VirtualClock
from simulator.engine.fleet import FleetConfig
from simulator.engine.runner import RunResult, Simulation, SimulationConfig
from simulator.engine.shards import THROTTLED, ShardRouter, split_hash_space
from simulator.engine.sink import PutRecordsOutcome, StreamDescription, StreamSink
from simulator.errors import RetryableSinkError
from simulator.sinks import SinkOptions, make_dispatcher, open_sink
from simulator.sinks.kinesis import make_client
from simulator.verify.cli import ShardReader, verify


def alleycat(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alleycat", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def verify_json(endpoint: str, stream: str) -> dict[str, Any]:
    result = CliRunner().invoke(verify, ["--stream", stream, "--endpoint-url", endpoint, "--json"])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_a_simulated_fleet_arrives_whole_and_on_the_predicted_shards(kinesis_server, stream_name):
    run = alleycat(
        "simulate",
        *("--stream", stream_name, "--create-stream", "--shards", "4"),
        *("--endpoint-url", kinesis_server),
        *("--riders", "300", "--duration", "20", "--speed", "10", "--seed", "3", "--json"),
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)

    checked = alleycat(
        "verify", "--stream", stream_name, "--endpoint-url", kinesis_server, "--json"
    )

    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert summary["generated"] == summary["delivered"] == 6000
    assert summary["dropped"] == 0
    assert report["records"] == report["unique"] == 6000
    assert (report["duplicates"], report["gaps"], report["malformed"]) == (0, 0, 0)
    assert report["shards"] == [
        {"shard_id": s["shard_id"], "records": s["records"]} for s in summary["shards"]
    ]
    # Every record sits on the shard the built-in model routes its key to.
    model = ShardRouter(split_hash_space(4))
    client = make_client(endpoint_url=kinesis_server)
    reader = ShardReader(client, stream_name)
    try:
        misplaced = [
            record
            for shard in split_hash_space(4)
            for record in reader.records(shard)
            if model.shard_for(record.partition_key).shard_id != record.shard_id
        ]
    finally:
        client.close()
    assert misplaced == []


class ThrottlingSink:
    """Rejects a share of entries as throttled, as a shard over its limit does; writes the rest."""

    def __init__(self, sink: StreamSink, share: float, seed: int = 1) -> None:
        self._sink = sink
        self._share = share
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.rejected = 0

    def describe(self) -> StreamDescription:
        return self._sink.describe()

    def put_records(self, records: Sequence[Record], now: float) -> PutRecordsOutcome:
        with self._lock:
            refused = [self._rng.random() < self._share for _ in records]
            self.rejected += sum(refused)
        sent = [r for r, no in zip(records, refused, strict=True) if not no]
        written = self._sink.put_records(sent, now) if sent else None
        shard_ids: list[str | None] = []
        sequence_numbers: list[str | None] = []
        error_codes: list[str | None] = []
        position = 0
        for no in refused:
            if no or written is None:
                shard_ids.append(None)
                sequence_numbers.append(None)
                error_codes.append(THROTTLED)
                continue
            shard_ids.append(written.shard_ids[position])
            sequence_numbers.append(written.sequence_numbers[position])
            error_codes.append(written.error_codes[position])
            position += 1
        return PutRecordsOutcome(
            failed_record_count=sum(code is not None for code in error_codes),
            shard_ids=shard_ids,
            sequence_numbers=sequence_numbers,
            error_codes=error_codes,
        )

    def close(self) -> None:
        self._sink.close()


class FailingRequestsSink:
    """Fails every ``every``-th request as a whole.

    With ``lose_response`` the request is written first and only its response is lost, as when
    a read times out: the retry then writes the same messages again.
    """

    def __init__(self, sink: StreamSink, every: int, *, lose_response: bool = False) -> None:
        self._sink = sink
        self._every = every
        self._lose_response = lose_response
        self._count = 0
        self._lock = threading.Lock()
        self.failed_records = 0

    def describe(self) -> StreamDescription:
        return self._sink.describe()

    def put_records(self, records: Sequence[Record], now: float) -> PutRecordsOutcome:
        with self._lock:
            self._count += 1
            fail = self._count % self._every == 0
            if fail:
                self.failed_records += len(records)
        if not fail:
            return self._sink.put_records(records, now)
        if self._lose_response:
            self._sink.put_records(records, now)
            raise RetryableSinkError("read timeout (injected)")
        raise RetryableSinkError("service unavailable (injected)")

    def close(self) -> None:
        self._sink.close()


def run_through(sink: StreamSink, options: SinkOptions) -> RunResult:
    clock = ScaledClock(speed=20)
    config = SimulationConfig(fleet=FleetConfig(riders=200), duration=20, seed=11)
    dispatcher = make_dispatcher(sink, clock, options)
    return Simulation(config, sink, clock, dispatcher=dispatcher).run()


def stream_options(endpoint: str, stream: str) -> SinkOptions:
    return SinkOptions(stream=stream, endpoint_url=endpoint, create_stream=True, shards=4)


def test_throttled_entries_are_retried_until_every_uuid_is_in_the_stream(
    kinesis_server, stream_name
):
    options = stream_options(kinesis_server, stream_name)
    sink = ThrottlingSink(open_sink(options), share=0.3)
    try:
        result = run_through(sink, options)
    finally:
        sink.close()

    report = verify_json(kinesis_server, stream_name)
    stats = result.stats
    assert result.error is None
    assert stats.generated == stats.delivered == 4000
    assert stats.throttled == sink.rejected > 0
    assert stats.retries >= stats.throttled
    assert report["records"] == report["unique"] == 4000
    assert (report["duplicates"], report["gaps"]) == (0, 0)


def test_failed_requests_are_sent_again_and_nothing_is_lost(kinesis_server, stream_name):
    options = stream_options(kinesis_server, stream_name)
    sink = FailingRequestsSink(open_sink(options), every=3)
    try:
        result = run_through(sink, options)
    finally:
        sink.close()

    report = verify_json(kinesis_server, stream_name)
    stats = result.stats
    assert stats.generated == stats.delivered == 4000
    assert stats.failed_requests > 0
    assert stats.retries >= sink.failed_records > 0
    assert report["records"] == report["unique"] == 4000
    assert (report["duplicates"], report["gaps"]) == (0, 0)


def test_a_lost_response_leaves_duplicates_that_verify_counts(kinesis_server, stream_name):
    options = stream_options(kinesis_server, stream_name)
    sink = FailingRequestsSink(open_sink(options), every=4, lose_response=True)
    try:
        result = run_through(sink, options)
    finally:
        sink.close()

    report = verify_json(kinesis_server, stream_name)
    assert result.stats.delivered == 4000
    assert report["unique"] == 4000
    assert report["duplicates"] == sink.failed_records > 0
    assert report["records"] == 4000 + sink.failed_records
    assert report["gaps"] == 0


def test_a_fast_run_into_a_real_stream_keeps_its_clock_to_the_ride(kinesis_server, stream_name):
    options = SinkOptions(
        stream=stream_name, endpoint_url=kinesis_server, create_stream=True, max_in_flight=4
    )
    sink = open_sink(options)
    clock = VirtualClock(1_764_186_600.0)
    config = SimulationConfig(fleet=FleetConfig(riders=300), duration=20, seed=5)
    try:
        simulation = Simulation(
            config, sink, clock, dispatcher=make_dispatcher(sink, clock, options)
        )
        result = simulation.run()
    finally:
        sink.close()

    # Waiting for responses takes no simulated time: the run ends when the ride does (plus the
    # last flush), and no record is counted as late by more than the ride lasted.
    assert result.stats.delivered == 6000
    assert clock.now() - simulation.start <= 20 + 2
    assert result.stats.latency.max_ms <= 22_000


def test_short_balanced_races_read_back_with_no_gaps_and_every_record_on_its_dealt_shard(
    kinesis_server, stream_name
):
    run = alleycat(
        "simulate",
        *("--stream", stream_name, "--create-stream", "--shards", "3"),
        *("--endpoint-url", kinesis_server, "--partition-key", "balanced"),
        *("--riders", "50", "--duration", "180", "--race-seconds", "60"),
        *("--speed", "30", "--seed", "8", "--json"),
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["delivered"] == 50 * 180

    checked = alleycat(
        "verify", "--stream", stream_name, "--endpoint-url", kinesis_server,
        "--partition-key", "balanced", "--json",
    )  # fmt: skip

    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["records"] == report["unique"] == 50 * 180
    assert (report["gaps"], report["duplicates"], report["malformed"]) == (0, 0, 0)
    assert (report["off_shard"], report["shard_unchecked"]) == (0, 0)
    # Three races per rider, in one or two 5-minute windows.
    assert sum(race["rider_races"] for race in report["races"]) == 50 * 3
    assert max(race["rider_races"] for race in report["races"]) > 50
