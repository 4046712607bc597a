"""How the benchmarks start ``alleycat``, and whether the simulator they run is compiled."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def alleycat_command() -> list[str]:
    """The ``alleycat`` command installed beside the Python running the benchmark.

    Its console script rather than ``python -m alleycat``: run from a checkout, ``-m`` would
    import the checkout's pure-Python modules ahead of a compiled install's.
    """
    script = Path(sys.executable).with_name("alleycat")
    return [str(script)] if script.exists() else [sys.executable, "-m", "alleycat"]


def simulator_build() -> str:
    """How the installed simulator runs: ``compiled`` or ``pure Python`` (see setup.py)."""
    return subprocess.run(
        [sys.executable, "-I", "-c", "import simulator; print(simulator.build())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@dataclass(frozen=True, slots=True)
class Measured:
    """What one run of a command printed and took."""

    stdout: str
    wall: float
    """Seconds, start to exit."""
    cpu: float
    """User and system CPU seconds of the command and its children."""
    max_rss_mib: float
    """The largest resident memory of any child this benchmark has run so far."""


def run_measured(command: list[str]) -> Measured:
    """Run ``command`` to completion, timing it; a failure raises."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(completed.stdout, wall, cpu, after.ru_maxrss / 1024)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> str:
    """The machine's 1, 5 and 15-minute load averages, as printed beside every figure."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())
