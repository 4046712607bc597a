"""1,200 riders on one shard for 60 s: throttling happens, and the default TTL drops nothing.

One shard takes 1,000 records/s, so 200 records/s queue up for the whole minute and drain
after it. Prints the run's figures from ``alleycat simulate --fast --json``.

    .venv/bin/python benchmarks/throttle_one_shard.py [--riders N] [--duration S]
"""

from __future__ import annotations

import argparse
import json
import subprocess

from benchmarks.command import alleycat_command, simulator_build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--riders", type=int, default=1200)
    parser.add_argument("--duration", type=int, default=60)
    args = parser.parse_args()
    command = [
        *alleycat_command(), "simulate", "--fast", "--json", "--seed", "1",
        "--shards", "1", "--riders", str(args.riders), "--duration", str(args.duration),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    s = json.loads(completed.stdout)
    latency = s["latency_ms"]
    print(f"simulator: {simulator_build()}")
    print(f"{args.riders:,} riders on 1 shard for {args.duration} s (record TTL 30 s)")
    print(f"generated {s['generated']:,}  delivered {s['delivered']:,}  "
          f"throttled {s['throttled']:,}  retries {s['retries']:,}  "
          f"dropped {s['dropped']:,}")  # fmt: skip
    print(f"peak shard rate {s['shards'][0]['peak_records_per_s']:,} records/s; latency "
          f"p50 {latency['p50']:,.0f} ms, p99 {latency['p99']:,.0f} ms, "
          f"max {latency['max']:,.0f} ms; drained {s['simulated_seconds'] - args.duration:.1f} s "
          f"after the last message")  # fmt: skip


if __name__ == "__main__":
    main()
