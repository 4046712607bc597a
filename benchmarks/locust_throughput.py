"""Records/s per Locust worker process into an endpoint that accepts everything at once.

Starts :mod:`benchmarks.accept_all_kinesis` as its own process, then measures:

- a bare boto3 loop: ``put_records`` of 500 prepared records (the fleet's own messages), one
  request after another, for ``--seconds``;
- the same loop through the simulator's sink (:mod:`simulator.sinks.json_wire`);
- ``alleycat locust --headless --processes N`` for N = 1 and 2, offered ``--riders`` riders per
  worker (more than a worker can carry, so generation waits on the producer and the rate is the
  worker's capacity), ``--riders-per-user`` riders per Locust user, for ``--seconds`` and for
  twice as long: the steady rate is the difference of delivered records over the difference of
  wall time (what both runs share, users spawning and the final drain, cancels out); the whole
  short test's rate (delivered over wall time) is printed too.

Prints each rate, records/s per worker, the two-worker speed-up and the ratio to the AWS
sample's reported ~15,000 events/s per core. Usage::

    .venv/bin/python -m benchmarks.locust_throughput [--seconds 20] [--riders 150000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from benchmarks.command import alleycat_command, free_port, simulator_build
from simulator.engine.batching import Record
from simulator.engine.clock import VirtualClock
from simulator.engine.fleet import FleetConfig
from simulator.engine.runner import Simulation, SimulationConfig
from simulator.engine.shards import LocalStream
from simulator.sinks.kinesis import KinesisSink
from simulator.sinks.options import SinkOptions
from tests.servers.ports import wait_for_port

#: The AWS Kinesis Locust sample's reported rate per core (about 15,000 events/s on 4 vCPUs).
AWS_SAMPLE_PER_CORE = 15_000
ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}


def fleet_records(count: int) -> list[Record]:
    """``count`` ride messages as the simulator makes them."""
    config = SimulationConfig(fleet=FleetConfig(riders=count), duration=1, seed=1)
    simulation = Simulation(config, LocalStream(4), VirtualClock(1_800_000_000.0))
    records: list[Record] = []
    simulation.fleet.emit_until(1_800_000_002.0, records, count)
    return records


def bare_loop(endpoint: str, seconds: float) -> float:
    """Records/s of back-to-back 500-record ``put_records`` calls."""
    client = boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"total_max_attempts": 1}),
    )
    entries = [{"Data": r.data, "PartitionKey": r.partition_key} for r in fleet_records(500)]
    sent = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        response = client.put_records(StreamName="bench", Records=entries)
        sent += len(response["Records"]) - response["FailedRecordCount"]
    rate = sent / (time.perf_counter() - started)
    client.close()
    return rate


def wire_loop(endpoint: str, seconds: float) -> float:
    """Records/s of the same calls through the simulator's sink (its PutRecords wire)."""
    os.environ.update(ENV)
    sink = KinesisSink.open(SinkOptions(stream="bench", endpoint_url=endpoint))
    records = fleet_records(500)
    sent = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        outcome = sink.put_records(records, 0.0)
        sent += len(records) - outcome.failed_record_count
    rate = sent / (time.perf_counter() - started)
    sink.close()
    return rate


def locust_run(
    endpoint: str, processes: int, riders: int, per_user: int, seconds: int
) -> dict[str, Any]:
    """One headless ``alleycat locust`` run; its summary."""
    users = processes * riders // per_user
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "summary.json"
        subprocess.run(
            [
                *alleycat_command(),
                "locust",
                *("--headless", "--processes", str(processes), "--only-summary"),
                *("-u", str(users), "-r", str(users), "-t", f"{seconds}s"),
                *("--stream", "bench", "--endpoint-url", endpoint),
                *("--riders-per-user", str(per_user), "--summary-json", str(summary)),
            ],
            env={**os.environ, **ENV},
            capture_output=True,
            check=True,
            timeout=seconds + 120,
        )
        result: dict[str, Any] = json.loads(summary.read_text())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--riders", type=int, default=150_000, help="riders offered per worker")
    parser.add_argument("--riders-per-user", type=int, default=500)
    args = parser.parse_args()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.accept_all_kinesis", "--port", str(port)]
    )
    try:
        wait_for_port(port)
        print(f"simulator build: {simulator_build()}")
        bare = bare_loop(endpoint, args.seconds)
        print(f"bare boto3 loop, 500 records a request: {bare:,.0f} records/s")
        wire = wire_loop(endpoint, args.seconds)
        print(
            f"the sink's PutRecords wire, the same loop: {wire:,.0f} records/s "
            f"({wire / bare:.2f}x the bare loop)"
        )
        rates = {}
        for processes in (1, 2):
            s = locust_run(endpoint, processes, args.riders, args.riders_per_user, args.seconds)
            rate = s["delivered"] / s["wall_seconds"]
            # Twice as long: the difference is the steady rate, without the start (users
            # spawning, riders made) and the end (the drain) that both runs share.
            longer = locust_run(
                endpoint, processes, args.riders, args.riders_per_user, 2 * args.seconds
            )
            steady = (longer["delivered"] - s["delivered"]) / (
                longer["wall_seconds"] - s["wall_seconds"]
            )
            rates[processes] = steady
            print(
                f"alleycat locust --processes {processes}: steady {steady:,.0f} records/s "
                f"({steady / processes:,.0f} per worker; {steady / processes / bare:.2f}x the "
                f"bare loop, {steady / processes / AWS_SAMPLE_PER_CORE:.1f}x the AWS sample per "
                f"core); over a whole {args.seconds} s test {rate:,.0f} records/s; generated "
                f"{s['generated']:,}, delivered {s['delivered']:,}, dropped {s['dropped']:,}, "
                f"{s['riders']:,} riders, latency p50 {s['latency_ms']['p50']:,.0f} ms; "
                f"{2 * args.seconds} s test: dropped {longer['dropped']:,}"
            )
        print(f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
