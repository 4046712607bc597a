"""Records per second of ``alleycat simulate --fast`` on the built-in stream, on one core.

Runs the real command in a subprocess (10,000 riders for 60 s by default, enough shards that
nothing throttles) ``--rounds`` times and prints records/s of each run, from its own summary
and CPU time, then the median and best: a machine shared with other work varies between runs.

    .venv/bin/python -m benchmarks.simulate_fast [--riders N] [--duration S] [--shards N]
"""

from __future__ import annotations

import argparse
import json
import statistics

from benchmarks.command import alleycat_command, run_measured, simulator_build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--riders", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--partition-key", default="random")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"simulator: {simulator_build()}; riders {args.riders:,} x {args.duration} s, "
          f"{args.shards} shards, key {args.partition_key}")  # fmt: skip
    rates = sorted(_round(args) for _ in range(args.rounds))
    print(f"run loop over {args.rounds} rounds: median {statistics.median(rates):,.0f}, "
          f"best {rates[-1]:,.0f} records/s")  # fmt: skip


def _round(args: argparse.Namespace) -> float:
    """One run; prints its figures and returns the run loop's records/s."""
    command = [
        *alleycat_command(), "simulate", "--fast", "--json", "--seed", "1",
        "--riders", str(args.riders), "--duration", str(args.duration),
        "--shards", str(args.shards), "--partition-key", args.partition_key,
    ]  # fmt: skip
    measured = run_measured(command)
    wall, cpu = measured.wall, measured.cpu
    summary = json.loads(measured.stdout)
    run_wall = summary["wall_seconds"]
    print(f"generated {summary['generated']:,}  delivered {summary['delivered']:,}  "
          f"throttled {summary['throttled']:,}  dropped {summary['dropped']:,}")  # fmt: skip
    print(f"run loop: {run_wall:.2f} s wall -> {summary['generated'] / run_wall:,.0f} records/s")
    print(f"whole process: {wall:.2f} s wall, {cpu:.2f} s CPU "
          f"-> {summary['generated'] / wall:,.0f} records/s, peak RSS "
          f"{measured.max_rss_mib:.0f} MiB")  # fmt: skip
    return float(summary["generated"] / run_wall)


if __name__ == "__main__":
    main()
