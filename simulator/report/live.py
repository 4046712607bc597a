"""What the user sees while a simulation runs.

On a terminal, a rich ``Live`` dashboard (:func:`simulator.report.dashboard.render_dashboard`)
redrawn twice a second from a fresh snapshot, drawn on Live's own thread so that the run loop
only pays for the snapshot; otherwise (piped, CI, ``--no-dashboard``) a
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
from rich.text import Text

from simulator.engine.fleet import fleet_messages
from simulator.engine.runner import RunResult, Simulation
from simulator.report.dashboard import render_dashboard
from simulator.report.history import RunHistory

#: Dashboard redraws (and snapshots of the run) per wall second.
REFRESH_PER_SECOND = 2
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
    observe: Callable[[Simulation], None] | None = None,
) -> RunResult:
    """Run ``simulation`` with a live dashboard on a terminal, else with progress lines.

    Args:
        simulation: the run.
        json_output: stdout is reserved for the JSON summary; the dashboard then goes to
            stderr.
        dashboard: draw the dashboard when a terminal is there (``--no-dashboard`` turns it off).
        batching: the batching mode's name, shown on the dashboard.
        console: draw the dashboard on this console, terminal or not (tests).
        observe: also called on every pass of the run loop (the HTML report's timeline).
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
            return _run_live(simulation, console, batching=batching, observe=observe)
        return simulation.run(on_pass=_also(ProgressLine(simulation), observe))
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _also(
    on_pass: Callable[[Simulation], None], observe: Callable[[Simulation], None] | None
) -> Callable[[Simulation], None]:
    """``on_pass``, and ``observe`` after it when there is one."""
    if observe is None:
        return on_pass

    def both(simulation: Simulation) -> None:
        on_pass(simulation)
        observe(simulation)

    return both


def _run_live(
    simulation: Simulation,
    console: Console,
    *,
    batching: str,
    observe: Callable[[Simulation], None] | None = None,
) -> RunResult:
    sampler = DashboardSampler(simulation, batching=batching)
    # The run loop only takes snapshots (on its own thread, so they never read counters the
    # loop is changing); Live's refresh thread lays them out and writes them to the terminal,
    # so drawing never holds up a request.
    with Live(
        get_renderable=sampler.view,
        console=console,
        auto_refresh=True,
        refresh_per_second=REFRESH_PER_SECOND,
        transient=False,
    ) as live:
        result = simulation.run(on_pass=_also(sampler, observe))
        sampler.take(simulation)
        live.refresh()
    return result


class DashboardSampler:
    """Called on every pass of the run loop: samples the run's history each simulated second
    and takes a fresh snapshot at most ``per_second`` times a wall second; :meth:`view`
    renders the latest snapshot (from any thread).

    Args:
        simulation: the run.
        batching: the batching mode's name, shown on the dashboard.
        per_second: snapshots a wall second.
        clock: wall time (injectable for tests).
    """

    def __init__(
        self,
        simulation: Simulation,
        *,
        batching: str,
        per_second: float = REFRESH_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._history = RunHistory()
        self._every = 1 / per_second
        self._clock = clock
        self._next = clock()
        config = simulation.config
        self._batching = batching
        self._per_record = batching == "per-second"
        messages = fleet_messages(config.fleet.riders, config.duration, config.fleet.ramp_seconds)
        self._total = messages if self._per_record else None
        self._latest: RenderableType = Text("")
        self.take(simulation)

    def __call__(self, simulation: Simulation) -> None:
        self._history.sample(simulation.stats, simulation.clock.now())
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._every
        self.take(simulation)

    def take(self, simulation: Simulation) -> None:
        """Snapshot the run now (on the run loop's thread)."""
        history = self._history
        history.sample(simulation.stats, simulation.clock.now())
        # One assignment: the refresh thread sees the old view or the new one, never half.
        self._latest = render_dashboard(
            history.smoothed(simulation.snapshot()),
            strategy=simulation.config.strategy.value,
            stream=simulation.stream.name,
            shard_count=len(simulation.stream.shards),
            batching=self._batching,
            total_records=self._total,
            messages_delivered=None if self._per_record else simulation.stats.messages_delivered,
            history=history.recent(),
            window_seconds=history.window_seconds,
            fit_height=True,
        )

    def view(self) -> RenderableType:
        """The dashboard as of the latest snapshot; laid out when Live draws it."""
        return self._latest


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
        config = simulation.config
        self._total = fleet_messages(
            config.fleet.riders, config.duration, config.fleet.ramp_seconds
        )

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
