import io
import json
import threading

from click.testing import CliRunner
from rich.console import Console

import simulator.report.live as live
from alleycat.cli import cli
from simulator.engine.clock import VirtualClock
from simulator.engine.fleet import FleetConfig
from simulator.engine.runner import Simulation, SimulationConfig
from simulator.engine.shards import LocalStream
from simulator.report.dashboard import Dashboard
from simulator.report.live import ProgressLine, run_with_progress, wants_dashboard

START = 1_764_187_200.0


class Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def _simulation(riders=50, duration=4):
    config = SimulationConfig(fleet=FleetConfig(riders=riders), duration=duration, seed=2)
    return Simulation(config, LocalStream(2), VirtualClock(START))


def test_dashboard_is_drawn_only_on_a_terminal_and_when_not_turned_off():
    assert wants_dashboard(stdout=Stream(True), stderr=Stream(False))
    assert wants_dashboard(stdout=Stream(False), stderr=Stream(True))
    assert not wants_dashboard(stdout=Stream(False), stderr=Stream(False))
    assert not wants_dashboard(enabled=False, stdout=Stream(True), stderr=Stream(True))


def test_live_dashboard_ends_showing_the_whole_run():
    out = io.StringIO()
    console = Console(file=out, width=100, color_system=None, force_terminal=True)
    result = run_with_progress(_simulation(), console=console, batching="kpl")
    assert result.stats.delivered == 200
    text = out.getvalue()
    assert "alleycat simulate" in text
    assert "batching kpl" in text
    assert "delivered 200" in text
    assert "remaining 0:00" in text


def test_progress_line_is_printed_every_few_seconds_with_the_counts():
    ticks = iter([0.0, 1.0, 5.5, 6.0, 11.0])
    out = io.StringIO()
    simulation = _simulation()
    progress = ProgressLine(simulation, 5.0, clock=lambda: next(ticks), out=out)
    for _ in range(4):
        progress(simulation)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "generated 0/200" in lines[0]


def _simulate(*args):
    return CliRunner().invoke(
        cli, ["simulate", "--fast", "--riders", "40", "--duration", "3", "--seed", "1", *args]
    )


def test_without_a_terminal_no_live_view_is_drawn_and_json_stays_clean():
    result = _simulate("--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["delivered"] == 120
    assert "alleycat simulate" not in result.stderr


def test_on_a_terminal_the_dashboard_goes_to_stderr_when_json_is_asked(monkeypatch):
    monkeypatch.setattr(live, "_isatty", lambda stream: True)
    result = _simulate("--json", "--batching", "buffered:2")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dropped"] == 0
    assert (summary["batching"], summary["messages_delivered"]) == ("buffered:2", 120)
    assert "alleycat simulate" in result.stderr
    assert "batching buffered:2" in result.stderr


def test_no_dashboard_turns_the_live_view_off_on_a_terminal(monkeypatch):
    monkeypatch.setattr(live, "_isatty", lambda stream: True)
    result = _simulate("--no-dashboard")
    assert result.exit_code == 0, result.output
    assert "alleycat simulate" not in result.output
    assert "Run summary" in result.output


def test_the_dashboard_is_drawn_off_the_run_loops_thread(monkeypatch):
    simulation = _simulation(riders=2000, duration=30)
    drawn_during_the_run_on_the_loop_thread = []
    drawn = []
    original = Dashboard.__rich_console__

    def spy(self, console, options):
        on_loop = threading.current_thread() is threading.main_thread()
        running = 0 < simulation.stats.delivered < 60_000
        drawn.append(on_loop)
        if on_loop and running:
            drawn_during_the_run_on_the_loop_thread.append(simulation.stats.delivered)
        yield from original(self, console, options)

    monkeypatch.setattr(Dashboard, "__rich_console__", spy)
    out = io.StringIO()
    console = Console(file=out, width=100, height=40, color_system=None, force_terminal=True)

    result = run_with_progress(simulation, console=console)

    assert result.stats.delivered == 60_000
    assert drawn  # the final view at least
    assert drawn_during_the_run_on_the_loop_thread == []
    assert "delivered 60,000" in out.getvalue()
