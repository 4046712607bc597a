"""What ``--html`` costs ``alleycat simulate --fast``: run-loop speed, whole process, page size.

Runs the real command in a subprocess (10,000 riders for 60 s on 16 shards by default) with and
without ``--html``, in alternating rounds, and prints each run's run-loop records/s, the whole
process's wall and CPU time, and the page's size; then the medians. With ``--html`` the
run keeps each shard's records per second and samples the run once a simulated second, and the
process imports plotly and writes the page after the summary.

    .venv/bin/python -m benchmarks.html_report [--riders N] [--duration S] [--shards N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.command import alleycat_command, run_measured, simulator_build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--riders", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"simulator: {simulator_build()}; riders {args.riders:,} x {args.duration} s, "
          f"{args.shards} shards")  # fmt: skip
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "run.html"
        for _ in range(args.rounds):
            for html in (False, True):
                results[html].append(_round(args, page if html else None))
    _in_process(args)
    for html, runs in results.items():
        rates, walls = [r for r, _ in runs], [w for _, w in runs]
        print(f"{'with --html' if html else 'without   '}: run loop median "
              f"{statistics.median(rates):,.0f} records/s, process median "
              f"{statistics.median(walls):.2f} s wall")  # fmt: skip


def _round(args: argparse.Namespace, page: Path | None) -> tuple[float, float]:
    """One run; prints its figures and returns the run loop's records/s and the process's wall."""
    command = [
        *alleycat_command(), "simulate", "--fast", "--json", "--seed", "1",
        "--riders", str(args.riders), "--duration", str(args.duration),
        "--shards", str(args.shards),
    ]  # fmt: skip
    if page is not None:
        command += ["--html", str(page)]
    measured = run_measured(command)
    summary = json.loads(measured.stdout)
    rate = summary["generated"] / summary["wall_seconds"]
    size = f", page {page.stat().st_size / 1e6:.2f} MB" if page is not None else ""
    print(f"{'html ' if page else 'plain'}: run loop {rate:,.0f} records/s, process "
          f"{measured.wall:.2f} s wall, {measured.cpu:.2f} s CPU{size}")  # fmt: skip
    return float(rate), measured.wall


def _in_process(args: argparse.Namespace) -> None:
    """The same run in this process: the time spent in the timeline, and building the page."""
    from simulator.cli import _summary
    from simulator.engine.clock import VirtualClock
    from simulator.engine.fleet import FleetConfig
    from simulator.engine.runner import Simulation, SimulationConfig
    from simulator.engine.shards import LocalStream
    from simulator.report.html import simulate_page
    from simulator.report.timeline import RunTimeline

    fleet = FleetConfig(riders=args.riders)
    config = SimulationConfig(fleet=fleet, duration=args.duration, seed=1)
    simulation = Simulation(config, LocalStream(args.shards), VirtualClock(1_764_187_200.0))
    timeline = RunTimeline(simulation.stats, simulation.start)
    spent = [0.0, 0]

    def observe(running: Simulation) -> None:
        started = time.perf_counter()
        timeline(running)
        spent[0] += time.perf_counter() - started
        spent[1] += 1

    started = time.perf_counter()
    result = simulation.run(on_pass=observe)
    run = time.perf_counter() - started
    timeline.finish(result.stats, simulation.clock.now())
    started = time.perf_counter()
    page = simulate_page(_summary(simulation, result), timeline.to_dict())
    built = time.perf_counter() - started
    print(f"in process: run loop {run:.2f} s, {spent[1]:,} passes, the timeline "
          f"{spent[0] * 1000:.1f} ms ({spent[0] / run:.2%}); the page built in {built:.2f} s, "
          f"{len(page.encode()) / 1e6:.2f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
