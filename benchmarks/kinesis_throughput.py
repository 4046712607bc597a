"""Records/s into a local Kinesis server: the simulator next to a bare boto3 PutRecords loop.

Starts kinesalite on 127.0.0.1 (installed by ``scripts/test``), then, on the same data (the
same riders, seed and start time, so the same messages and keys):

- a bare loop: ``put_records`` of 500 records at a time, one request after another, on a
  default boto3 client, with the request entries built before the clock starts;
- ``alleycat simulate --fast --stream ...`` (a subprocess, generating its messages as it goes)
  with 1 and with several PutRecords requests in flight; its rate is delivered records over the
  run loop's wall time, from its own ``--json`` summary.

Each is run ``--repeat`` times into a fresh 4-shard stream, alternating, and the median and
the best of each are printed with their ratio to the bare loop's (a shared machine is noisy).

Usage::

    .venv/bin/python -m benchmarks.kinesis_throughput [--riders N] [--duration S] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from typing import Any

import boto3

from benchmarks.command import alleycat_command
from simulator.engine.batching import Record
from simulator.engine.clock import VirtualClock
from simulator.engine.fleet import FleetConfig
from simulator.engine.runner import Simulation, SimulationConfig
from simulator.engine.shards import LocalStream
from tests.servers.kinesis import TEST_AWS_ENV, create_stream, running_kinesalite

SHARDS = 4
SEED = 1


def same_data(riders: int, duration: int, start: float) -> list[Record]:
    """The records ``alleycat simulate --seed 1 --start-time START`` produces, in order."""
    config = SimulationConfig(fleet=FleetConfig(riders=riders), duration=duration, seed=SEED)
    simulation = Simulation(config, LocalStream(SHARDS), VirtualClock(start))
    records: list[Record] = []
    simulation.fleet.emit_until(start + duration + 1, records, riders * duration)
    return records


def bare_loop(client: Any, stream: str, records: list[Record]) -> float:
    """Records/s of sequential 500-record put_records calls."""
    batches = [
        [{"Data": r.data, "PartitionKey": r.partition_key} for r in records[i : i + 500]]
        for i in range(0, len(records), 500)
    ]
    started = time.perf_counter()
    for entries in batches:
        response = client.put_records(StreamName=stream, Records=entries)
        if response["FailedRecordCount"]:
            raise RuntimeError("the server rejected records; this benchmark expects none")
    return len(records) / (time.perf_counter() - started)


def simulator_run(
    endpoint: str, stream: str, riders: int, duration: int, start: float, in_flight: int
) -> tuple[float, dict[str, Any]]:
    """Records/s delivered by ``alleycat simulate --fast`` and its summary."""
    command = [
        *alleycat_command(), "simulate", "--fast", "--json",
        "--stream", stream, "--endpoint-url", endpoint,
        "--riders", str(riders), "--duration", str(duration),
        "--seed", str(SEED), "--start-time", str(start), "--max-in-flight", str(in_flight),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    summary: dict[str, Any] = json.loads(completed.stdout)
    if summary["delivered"] != riders * duration:
        raise RuntimeError(f"the simulator delivered {summary['delivered']:,} records")
    return summary["delivered"] / summary["wall_seconds"], summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--riders", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--in-flight", type=int, default=4, help="the 'several' in flight")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    os.environ.update(TEST_AWS_ENV)  # a local server takes any credentials
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    start = float(int(time.time()))
    records = same_data(args.riders, args.duration, start)
    rates: dict[str, list[float]] = {"bare": [], "one": [], "several": []}
    with running_kinesalite() as endpoint:
        # The bare loop's client is boto3's default one, as a user would write it.
        client = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1")
        try:
            # kinesalite runs slowly until Node's JIT has warmed up: one untimed pass first.
            create_stream(client, "bench-warm-up", SHARDS)
            bare_loop(client, "bench-warm-up", records)
            for round_ in range(args.repeat):
                for label, found in rates.items():
                    stream = f"bench-{label}-{round_}"
                    create_stream(client, stream, SHARDS)
                    if label == "bare":
                        rate = bare_loop(client, stream, records)
                    else:
                        in_flight = 1 if label == "one" else args.in_flight
                        rate, _ = simulator_run(
                            endpoint, stream, args.riders, args.duration, start, in_flight
                        )
                    found.append(rate)
                    print(f"round {round_ + 1} {label:8} {rate:10,.0f} records/s", flush=True)
        finally:
            client.close()
    print(
        f"\n{len(records):,} records ({args.riders:,} riders x {args.duration} s), "
        f"{SHARDS} shards, kinesalite on 127.0.0.1, {args.repeat} rounds (median, best)"
    )
    medians = {label: statistics.median(found) for label, found in rates.items()}
    bests = {label: max(found) for label, found in rates.items()}
    names = {
        "bare": "bare boto3 loop, 1 in flight",
        "one": "simulator, 1 in flight",
        "several": f"simulator, {args.in_flight} in flight",
    }
    for label, name in names.items():
        print(
            f"{name:30} median {medians[label]:8,.0f} records/s "
            f"({medians[label] / medians['bare']:.2f}x)   best {bests[label]:8,.0f} "
            f"({bests[label] / bests['bare']:.2f}x)"
        )


if __name__ == "__main__":
    main()
