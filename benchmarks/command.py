"""How the benchmarks start ``alleycat``, and whether the simulator they run is compiled."""

from __future__ import annotations

import subprocess
import sys
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
