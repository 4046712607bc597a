"""What the user sees while a simulation runs.

On a terminal, a rich ``Live`` dashboard (:func:`simulator.report.dashboard.render_dashboard`)
redrawn a few times a second from a fresh snapshot; otherwise (piped, CI, ``--no-dashboard``) a
plain progress line on stderr every few seconds. Either way stdout is left alone, so ``--json``
stays one clean JSON object.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console, RenderableType
from rich.live import Live

from simulator.engine.runner import RunResult, Simulation
from simulator.report.dashboard import render_dashboard

#: Dashboard redraws per second.
REFRESH_PER_SECOND = 4
#: Wall seconds between progress lines when there is no dashboard.
PROGRESS_EVERY = 5.0


def wants_dashboard(
    *, enabled: bool = True, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> bool:
    """True when a live dashboard should be drawn: enabled, and stdout or stderr is a terminal."""
    if not enabled:
        return False
    streams = (stdout or sys.stdout, stderr or sys.stderr)
    return any(_isatty(stream) for stream in streams)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def run_with_progress(
    simulation: Simulation,
    *,
    json_output: bool = False,
    dashboard: bool = True,
    batching: str = "per-second",
    console: Console | None = None,
) -> RunResult:
    """Run ``simulation`` with a live dashboard on a terminal, else with progress lines.

    Args:
        simulation: the run.
        json_output: stdout is reserved for the JSON summary; the dashboard then goes to
            stderr.
        dashboard: draw the dashboard when a terminal is there (``--no-dashboard`` turns it off).
        batching: the batching mode's name, shown on the dashboard.
        console: draw the dashboard on this console, terminal or not (tests).
    """
    # Records are short-lived and form no cycles: the cyclic collector only costs time here.
    gc.collect()
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(200_000, 50, 100)
    try:
        if console is not None or wants_dashboard(enabled=dashboard):
            if console is None:
                # With --json, or stdout piped, draw on stderr so stdout keeps only the summary.
                console = Console(stderr=json_output or not _isatty(sys.stdout))
            return _run_live(simulation, console, batching=batching)
        return simulation.run(on_pass=ProgressLine(simulation))
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _run_live(simulation: Simulation, console: Console, *, batching: str) -> RunResult:
    view = dashboard_view(simulation, batching=batching)
    # The view is redrawn from the run loop itself (on_pass), not from Live's refresh thread:
    # the snapshot then never reads the counters while the loop is changing them.
    with Live(view(), console=console, auto_refresh=False, transient=False) as live:
        redraw = Redraw(live, view)
        result = simulation.run(on_pass=redraw)
        live.update(view(), refresh=True)
    return result


class Redraw:
    """Redraws a ``Live`` view at most ``per_second`` times a wall second; called every pass."""

    def __init__(
        self,
        live: Live,
        view: Callable[[], RenderableType],
        per_second: float = REFRESH_PER_SECOND,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._live = live
        self._view = view
        self._every = 1 / per_second
        self._clock = clock
        self._next = clock()

    def __call__(self, simulation: Simulation) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._every
        self._live.update(self._view(), refresh=True)


def dashboard_view(simulation: Simulation, *, batching: str) -> Callable[[], RenderableType]:
    """A function that renders ``simulation`` as it is now (what ``Live`` calls to redraw)."""
    stream = simulation.stream
    total = simulation.config.fleet.riders * simulation.config.duration
    per_second = batching == "per-second"

    def view() -> RenderableType:
        return render_dashboard(
            simulation.snapshot(),
            strategy=simulation.config.strategy.value,
            stream=stream.name,
            shard_count=len(stream.shards),
            batching=batching,
            total_records=total if per_second else None,
            messages_delivered=None if per_second else simulation.stats.messages_delivered,
        )

    return view


class ProgressLine:
    """Prints one plain progress line to stderr every ``every`` wall seconds."""

    def __init__(
        self,
        simulation: Simulation,
        every: float = PROGRESS_EVERY,
        *,
        clock: Callable[[], float] = time.monotonic,
        out: TextIO | None = None,
    ) -> None:
        self._every = every
        self._clock = clock
        self._next = clock() + every
        self._out = out
        self._total = simulation.config.fleet.riders * simulation.config.duration

    def __call__(self, simulation: Simulation) -> None:
        wall = self._clock()
        if wall < self._next:
            return
        self._next = wall + self._every
        stats = simulation.stats
        elapsed = max(0.0, simulation.clock.now() - simulation.start)
        print(
            f"{elapsed:,.0f}/{simulation.config.duration:,} s  "
            f"generated {stats.generated:,}/{self._total:,}  delivered {stats.delivered:,}  "
            f"throttled {stats.throttled:,}  retries {stats.retries:,}  "
            f"dropped {stats.dropped:,}  buffered {simulation.producer.buffered:,}",
            file=self._out or sys.stderr,
            flush=True,
        )
