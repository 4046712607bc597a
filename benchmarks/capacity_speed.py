"""Capacity modes: how long ``compare --capacity`` takes, and what on-demand costs ``--fast``.

1. ``alleycat compare --capacity provisioned:4,on-demand,on-demand-advantage`` on 1,000 riders
   × 300 s: wall time of each round and the median (target: under 10 s).
2. ``alleycat simulate --fast`` on the same load, provisioned and on-demand (and on-demand with
   ``--partition-key auto``), rounds interleaved: the run loop's records/s of each and the
   median's ratio to provisioned (target: on-demand within 10%). The on-demand stream starts
   with as many shards as the provisioned one and splits during the run (a short
   ``--scale-out-seconds``), so its splits are in the figure and nothing throttles.

    .venv/bin/python -m benchmarks.capacity_speed [--rounds R] [--riders N] [--duration S]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from benchmarks.command import alleycat_command, run_measured, simulator_build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-rounds", type=int, default=None, help="default: --rounds")
    parser.add_argument("--riders", type=int, default=10_000, help="simulate --fast riders")
    parser.add_argument("--duration", type=int, default=60, help="simulate --fast seconds")
    parser.add_argument("--shards", type=int, default=16)
    args = parser.parse_args()
    print(f"installed simulator: {simulator_build()}; load average {_load()}")
    _compare(args.rounds if args.compare_rounds is None else args.compare_rounds)
    _simulate(args)
    print(f"load average at the end {_load()}")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _compare(rounds: int) -> None:
    if rounds == 0:
        return
    command = [
        *alleycat_command(), "compare", "--capacity", "provisioned:4,on-demand,on-demand-advantage",
        "--riders", "1000", "--duration", "300", "--format", "json",
    ]  # fmt: skip
    walls = []
    for _ in range(rounds):
        measured = run_measured(command)
        walls.append(measured.wall)
        report = json.loads(measured.stdout)
        rows = ", ".join(f"{r['stream']}/{r['strategy']} {r['records']:,}" for r in report["runs"])
        print(f"compare --capacity: wall {measured.wall:.2f} s, CPU {measured.cpu:.2f} s "
              f"({report['processes']} processes): {rows}")  # fmt: skip
    print(f"compare --capacity 1,000 riders x 300 s: median wall {statistics.median(walls):.2f} s "
          f"over {rounds} rounds (target < 10 s)")  # fmt: skip


def _simulate(args: argparse.Namespace) -> None:
    base = [
        *alleycat_command(), "simulate", "--fast", "--json", "--seed", "1",
        "--riders", str(args.riders), "--duration", str(args.duration),
    ]  # fmt: skip
    on_demand = ["--capacity", "on-demand", "--on-demand-shards", str(args.shards),
                 "--scale-out-seconds", "10"]  # fmt: skip
    variants = {
        "provisioned": ["--shards", str(args.shards)],
        "on-demand": on_demand,
        "on-demand auto": [*on_demand, "--partition-key", "auto"],
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, extra in variants.items():
            summary = json.loads(run_measured([*base, *extra]).stdout)
            rate = summary["generated"] / summary["wall_seconds"]
            rates[name].append(rate)
            splits = [s["open_shards"] for s in summary.get("scale_outs") or []]
            print(f"simulate --fast {name} ({summary['build']}): {rate:,.0f} records/s, throttled "
                  f"{summary['throttled']:,}, splits to {splits}")  # fmt: skip
    reference = statistics.median(rates["provisioned"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"simulate --fast {args.riders:,} riders x {args.duration} s, {name}: median "
              f"{median:,.0f} records/s ({median / reference:.1%} of provisioned)")  # fmt: skip


if __name__ == "__main__":
    main()
