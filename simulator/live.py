"""What the user sees while a simulation runs: a progress line on stderr every few seconds."""

from __future__ import annotations

import gc
import sys
import time

from simulator.runner import RunResult, Simulation


def run_with_progress(simulation: Simulation, *, json_output: bool = False) -> RunResult:
    """Run ``simulation``, printing a progress line on stderr every few seconds.

    Args:
        simulation: the run.
        json_output: stdout is reserved for the JSON summary.
    """
    progress = ProgressLine(simulation)
    # Records are short-lived and form no cycles: the cyclic collector only costs time here.
    gc.collect()
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(200_000, 50, 100)
    try:
        return simulation.run(on_pass=progress)
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


class ProgressLine:
    """Prints one plain progress line to stderr every ``every`` wall seconds."""

    def __init__(self, simulation: Simulation, every: float = 5.0) -> None:
        self._every = every
        self._next = time.monotonic() + every
        self._total = simulation.fleet.total

    def __call__(self, simulation: Simulation) -> None:
        wall = time.monotonic()
        if wall < self._next:
            return
        self._next = wall + self._every
        stats = simulation.stats
        print(
            f"generated {stats.generated:,}/{self._total:,}  delivered {stats.delivered:,}  "
            f"throttled {stats.throttled:,}  retries {stats.retries:,}  "
            f"dropped {stats.dropped:,}  buffered {simulation.producer.buffered:,}",
            file=sys.stderr,
            flush=True,
        )
