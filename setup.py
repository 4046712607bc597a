"""Builds the simulator's hot path as C extensions with mypyc, when it can.

The modules below are ordinary, fully typed Python; mypyc compiles the same source into C,
which runs ``alleycat simulate --fast`` about twice as fast. Everything works without it:

- ``ALLEYCAT_PURE_PYTHON=1`` skips compiling;
- an editable install (``pip install -e``) never compiles, so an edit takes effect at once
  (a stale compiled module next to its source would otherwise shadow it);
- a machine without a C compiler, or where the build fails, gets a warning and pure Python.

The rider agent's own modules are not compiled, except the pure core it shares with the
simulator (the message and the rider model), which behaves the same either way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: The modules ``simulate --fast`` spends its time in; grouped so that the agent's two never
#: load the simulator's code.
COMPILED_GROUPS = {
    "alleycat_core": ["alleycat_rider/core/message.py", "alleycat_rider/core/physiology.py"],
    "alleycat_simulator": [
        "simulator/engine/batching.py",
        "simulator/engine/fleet.py",
        "simulator/engine/keys.py",
        "simulator/engine/shards.py",
        "simulator/engine/producer.py",
        "simulator/engine/counters.py",
        "simulator/engine/aggregation.py",
        "simulator/engine/runner.py",
    ],
}


class OptionalBuildExt(build_ext):
    """Builds the compiled modules all or nothing: on any failure, pure Python it is."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # a missing compiler shows up as several error types
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            self.warn(f"alleycat: compiled modules not built ({exc}); using pure Python")


def compiled_modules() -> list[Any]:
    """The extensions to build, or none when compiling is off or impossible here."""
    editable = {"develop", "editable_wheel"} & set(sys.argv)
    if os.environ.get("ALLEYCAT_PURE_PYTHON") or editable:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    groups: list[tuple[list[str], str | None]] = [
        (paths, name) for name, paths in COMPILED_GROUPS.items()
    ]
    try:
        return list(mypycify([p for paths, _ in groups for p in paths], separate=groups))
    except Exception as exc:  # type errors or an unexpected mypy: still installable
        print(f"alleycat: not compiling ({exc}); using pure Python", file=sys.stderr)
        return []


setup(ext_modules=compiled_modules(), cmdclass={"build_ext": OptionalBuildExt})
