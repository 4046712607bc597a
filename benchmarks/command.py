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
    """``compiled`` when the installed simulator's hot path is mypyc-built, else ``pure Python``."""
    where = subprocess.run(
        [sys.executable, "-I", "-c", "import simulator.fleet as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return "compiled" if where.endswith(".so") else "pure Python"
