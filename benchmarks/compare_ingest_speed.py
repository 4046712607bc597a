"""``alleycat compare --ingest sdk,iot-rule`` on 1,000 riders × 300 s: how long it takes.

Runs the installed command (see ``benchmarks/command.py``) ``--rounds`` times and prints each
wall time, the median, and the CPU time.

    .venv/bin/python -m benchmarks.compare_ingest_speed [--riders N] [--duration S] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import statistics

from benchmarks.command import alleycat_command, run_measured, simulator_build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--riders", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    command = [
        *alleycat_command(), "compare", "--ingest", "sdk,iot-rule", "--riders", str(args.riders),
        "--duration", str(args.duration), "--format", "json",
    ]  # fmt: skip
    walls = []
    for _ in range(args.rounds):
        measured = run_measured(command)
        walls.append(measured.wall)
        report = json.loads(measured.stdout)
        print(
            f"wall {measured.wall:.2f} s, CPU {measured.cpu:.2f} s: "
            + ", ".join(f"{r['path']} {r['records']:,} records" for r in report["runs"])
        )
    print(f"simulator: {simulator_build()}")
    print(f"median wall {statistics.median(walls):.2f} s over {args.rounds} rounds (target < 10 s)")


if __name__ == "__main__":
    main()
