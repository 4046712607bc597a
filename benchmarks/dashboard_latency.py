"""Does the live dashboard slow the producer? p99 latency of ``simulate --speed 10`` with and
without it.

Runs the real command several times each way, 1,000 riders for 60 simulated seconds at ten
times real speed. With the dashboard, stderr is a pseudo-terminal of ``--columns`` × ``--lines``
(as a real one would be, read as fast as a terminal would), so the dashboard is drawn; without,
``--no-dashboard``. Latency is in simulated milliseconds, from a rider's timestamp to
acceptance, so any wall time the loop loses to drawing shows up multiplied by the speed.

    .venv/bin/python benchmarks/dashboard_latency.py [--runs N] [--speed X] [--riders N]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import statistics
import struct
import subprocess
import termios
import threading

from benchmarks.command import alleycat_command, simulator_build


def run(args: argparse.Namespace, *, dashboard: bool) -> dict[str, float]:
    """One run's latency figures (simulated ms)."""
    command = [
        *alleycat_command(), "simulate", "--json", "--seed", "1", "--speed", str(args.speed),
        "--riders", str(args.riders), "--duration", str(args.duration),
    ]  # fmt: skip
    if not dashboard:
        command.append("--no-dashboard")
        completed = subprocess.run(command, capture_output=True, text=True, check=True)
        return dict(json.loads(completed.stdout)["latency_ms"])
    controller, terminal = pty.openpty()
    size = struct.pack("HHHH", args.lines, args.columns, 0, 0)
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, size)
    drawn = bytearray()

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the command exited and closed its end
                return
            if not chunk:
                return
            drawn.extend(chunk[-64:])

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    env = {**os.environ, "COLUMNS": str(args.columns), "LINES": str(args.lines)}
    env.pop("NO_COLOR", None)
    try:
        completed = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=terminal, text=True, check=True, env=env
        )
    finally:
        os.close(terminal)
        reader.join(timeout=5)
        os.close(controller)
    return dict(json.loads(completed.stdout)["latency_ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs each way")
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--riders", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=60, help="simulated seconds")
    parser.add_argument("--columns", type=int, default=120)
    parser.add_argument("--lines", type=int, default=40)
    args = parser.parse_args()
    print(f"simulator: {simulator_build()}")
    print(
        f"{args.riders:,} riders × {args.duration} s at --speed {args.speed:g}, "
        f"{args.runs} runs each way; dashboard on a {args.columns}×{args.lines} pseudo-terminal"
    )
    p99: dict[bool, list[float]] = {True: [], False: []}
    # Interleaved, so a busy moment of the machine weighs on both ways alike.
    for _ in range(args.runs):
        for dashboard in (False, True):
            latency = run(args, dashboard=dashboard)
            p99[dashboard].append(latency["p99"])
            way = "with" if dashboard else "without"
            print(
                f"  {way:>7} dashboard: p50 {latency['p50']:,.0f} ms, p99 "
                f"{latency['p99']:,.0f} ms, max {latency['max']:,.0f} ms"
            )
    for dashboard in (False, True):
        runs = p99[dashboard]
        way = "with" if dashboard else "without"
        print(
            f"p99 {way} the dashboard: median {statistics.median(runs):,.0f} ms "
            f"(runs {', '.join(f'{ms:,.0f}' for ms in runs)})"
        )


if __name__ == "__main__":
    main()
