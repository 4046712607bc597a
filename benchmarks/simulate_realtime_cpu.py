"""CPU use of ``alleycat simulate`` in real time: 1,000 riders on the built-in stream.

Starts the real command, skips the first seconds (imports and start-up), then samples the
process's CPU time over a window and prints it as a share of one core.

    .venv/bin/python benchmarks/simulate_realtime_cpu.py [--riders N] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import psutil

from benchmarks.command import alleycat_command, simulator_build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--riders", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=60, help="measured window")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    duration = args.warmup + args.seconds + 2
    command = [
        *alleycat_command(), "simulate", "--json", "--seed", "1",
        "--riders", str(args.riders), "--duration", str(duration),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        watched = psutil.Process(process.pid)
        time.sleep(args.warmup)
        before, wall_before = watched.cpu_times(), time.monotonic()
        rss_peak = 0
        while time.monotonic() - wall_before < args.seconds:
            time.sleep(1)
            rss_peak = max(rss_peak, watched.memory_info().rss)
        after, wall_after = watched.cpu_times(), time.monotonic()
        stdout, _ = process.communicate(timeout=duration + 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    cpu = (after.user - before.user) + (after.system - before.system)
    wall = wall_after - wall_before
    summary = json.loads(stdout)
    print(f"simulator: {simulator_build()}")
    print(f"{args.riders:,} riders in real time, measured over {wall:.1f} s after "
          f"{args.warmup} s of start-up")  # fmt: skip
    print(f"CPU {cpu:.2f} s over {wall:.1f} s wall = {100 * cpu / wall:.2f}% of one core "
          f"(target < 2%)")  # fmt: skip
    print(f"resident memory peak {rss_peak / 2**20:.1f} MiB")
    p50 = summary["latency_ms"]["p50"]
    print(f"run: generated {summary['generated']:,}, delivered {summary['delivered']:,}, "
          f"dropped {summary['dropped']:,}, latency p50 {p50:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
