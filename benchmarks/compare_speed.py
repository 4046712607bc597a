"""Wall time of ``alleycat compare`` for 4 strategies × 1,000 riders × 300 s (1.2 million messages).

Runs the real command in a subprocess, once in one process and once in two (``--jobs``), and
prints wall time, CPU time and messages per second for each, with the load average before the
run (other work on the machine slows it down: compare the CPU time too).

    .venv/bin/python benchmarks/compare_speed.py [--riders N] [--duration S] [--jobs 1,2]
"""

from __future__ import annotations

import argparse
import json
import os

from benchmarks.command import alleycat_command, run_measured, simulator_build

STRATEGIES = "random,time,class,balanced"


def run(riders: int, duration: int, shards: int, strategies: str, jobs: int) -> None:
    """Run ``alleycat compare`` once and print what it took."""
    command = [
        *alleycat_command(), "compare", "--format", "json",
        "--riders", str(riders), "--duration", str(duration), "--shards", str(shards),
        "--strategies", strategies, "--jobs", str(jobs),
    ]  # fmt: skip
    load = os.getloadavg()[0]
    measured = run_measured(command)
    wall, cpu = measured.wall, measured.cpu
    result = json.loads(measured.stdout)
    messages = sum(run["messages"] for run in result["runs"])
    print(
        f"{len(result['runs'])} strategies × {riders:,} riders × {duration} s "
        f"({messages:,} messages) in {result['processes']} process(es): "
        f"{wall:.2f} s wall, {cpu:.2f} s CPU, {messages / wall:,.0f} messages/s "
        f"(load average {load:.2f} before)"
    )


def main() -> None:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--riders", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=300)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--strategies", default=STRATEGIES)
    parser.add_argument("--jobs", default="1,2", help="comma list of process counts to try")
    args = parser.parse_args()
    print(f"simulator: {simulator_build()}")
    for jobs in (int(j) for j in args.jobs.split(",")):
        run(args.riders, args.duration, args.shards, args.strategies, jobs)


if __name__ == "__main__":
    main()
