"""What the rider and the operator see: a compact panel on a terminal, JSON log lines otherwise.

The panel is a pure function of an :class:`AgentStatus` snapshot (:func:`render_panel`). rich is
imported only when a panel is shown: on a bike without a terminal it would cost ~5 MB for nothing.
A JSON log line is one object per event::

    {"timestamp": "2026-11-26T19:55:39.123Z", "level": "info", "service": "alleycat-rider",
     "message": "connected", "endpoint": "iot.example.com:8883"}
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Protocol

from alleycat_rider.core.standings import Standings
from alleycat_rider.plural import counted

if TYPE_CHECKING:
    from rich.console import RenderableType

#: A message sent this recently (seconds) and not yet acknowledged is in flight, not unacked:
#: a PUBACK takes a round trip, and the panel is drawn right after each publish.
IN_FLIGHT_SECONDS = 1.0
#: The ``service`` field of every log line.
SERVICE = "alleycat-rider"
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStatus:
    """A snapshot of the agent for display."""

    name: str
    racer_id: int
    class_id: int
    cadence: float | None = None
    resistance: float | None = None
    output: float | None = None
    race_id: int | None = None
    second: int | None = None
    race_seconds: int = 300
    connection: str = "connecting"
    """``connecting``, ``connected`` or ``offline``."""
    qos: int = 1
    spool_depth: int = 0
    in_memory: int = 0
    """Of ``spool_depth``, messages held in memory because the disk refuses writes."""
    sent: int = 0
    acked: int = 0
    dropped: int = 0
    standings: Standings | None = None
    lateness_p99_ms: float | None = None


class Reporter(Protocol):
    """Where the agent reports events and status."""

    def event(self, level: str, message: str, **fields: Any) -> None:
        """Report one event with its fields."""

    def update(self, snapshot: Callable[[], AgentStatus]) -> None:
        """Show the status, taking a snapshot only if it is going to be shown."""

    def close(self) -> None:
        """Finish reporting."""


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def standings_text(standings: Standings | None) -> str:
    """The rider's standing in a few words: ``2nd of 14 (leader 160.0)``."""
    if standings is None:
        return "no results yet"
    if standings.place is None:
        return f"not placed yet, {counted(standings.riders, 'rider')}"
    place = standings.place
    suffix = "th" if 10 <= place % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(place % 10, "th")
    return f"{place}{suffix} of {standings.riders} (leader {_fmt(standings.leader_output)})"


def spool_text(status: AgentStatus, in_flight: int = 0, *, stopped: bool = False) -> str:
    """What the spool holds: ``empty``, ``1 in flight``, ``17 unacked``, or both."""
    if status.qos != 1:
        return "QoS 0, not spooled"
    if stopped:
        kept = status.spool_depth
        return f"{kept} unacked, kept for the next ride" if kept else "empty, all acked"
    in_flight = min(in_flight, status.spool_depth)
    unacked = status.spool_depth - in_flight
    parts = [f"{unacked} unacked"] if unacked else []
    parts += [f"{in_flight} in flight"] if in_flight else []
    parts += [f"{status.in_memory} in memory, disk refused"] if status.in_memory else []
    return ", ".join(parts) or "empty"


def sent_text(status: AgentStatus, in_flight: int = 0) -> str:
    """``22 (21 acked, 1 in flight, 0 dropped)``."""
    flying = f", {in_flight} in flight" if in_flight else ""
    return f"{status.sent} ({status.acked} acked{flying}, {status.dropped} dropped)"


def render_panel(
    status: AgentStatus, *, in_flight: int = 0, stopped: bool = False
) -> RenderableType:
    """The rider's panel for one status snapshot.

    Args:
        status: the agent now.
        in_flight: messages sent under :data:`IN_FLIGHT_SECONDS` ago and not acknowledged
            yet: shown as in flight, not as unacked.
        stopped: the agent has stopped: the final state, with what the spool keeps.
    """
    from rich.panel import Panel
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style="bold")
    table.add_column()
    table.add_column(justify="right", style="bold")
    table.add_column()
    race = "-" if status.second is None else f"{status.second}/{status.race_seconds}"
    link = {"connected": "[green]connected[/]", "offline": "[red]offline[/]"}.get(
        status.connection, f"[yellow]{status.connection}[/]"
    )
    if stopped:
        link = "[dim]stopped[/]"
        in_flight = 0
    spool = spool_text(status, in_flight, stopped=stopped)
    table.add_row("cadence", f"{_fmt(status.cadence)} rpm", "race", f"{status.race_id or '-'}")
    table.add_row("resistance", _fmt(status.resistance), "second", race)
    table.add_row("output", _fmt(status.output), "link", link)
    table.add_row("place", standings_text(status.standings), "spool", spool)
    table.add_row("sent", sent_text(status, in_flight), "", "")
    title = f"Alleycat - {status.name} #{status.racer_id}, class {status.class_id}"
    return Panel(table, title=title, title_align="left", expand=False)


class JsonLogReporter:
    """One JSON object per line per event; a ``status`` line every ``status_interval`` seconds.

    Args:
        stream: Where lines go (flushed after each, so nothing is lost to a kill).
        level: The lowest level written.
        status_interval: Seconds between ``status`` lines; 0 for none.
        clock: Wall-clock seconds, for the timestamp.
        monotonic: Monotonic seconds, for the status interval.
    """

    def __init__(
        self,
        stream: IO[str],
        *,
        level: str = "info",
        status_interval: float = 60.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._threshold = LEVELS[level]
        self._status_interval = status_interval
        self._clock = clock
        self._monotonic = monotonic
        self._last_status: float | None = None

    def event(self, level: str, message: str, **fields: Any) -> None:
        """Write one log line if ``level`` is at or above the threshold."""
        if LEVELS[level] < self._threshold:
            return
        stamp = datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="milliseconds")
        line = {
            "timestamp": stamp.replace("+00:00", "Z"),
            "level": level,
            "service": SERVICE,
            "message": message,
        }
        line.update(fields)
        self._stream.write(json.dumps(line, default=str, separators=(",", ":")) + "\n")
        self._stream.flush()

    def update(self, snapshot: Callable[[], AgentStatus]) -> None:
        """Write a ``status`` line when the status interval has passed."""
        if self._status_interval <= 0:
            return
        now = self._monotonic()
        if self._last_status is None:
            self._last_status = now
        elif now - self._last_status >= self._status_interval:
            self._last_status = now
            status = snapshot()
            self.event(
                "info",
                "status",
                connection=status.connection,
                race_id=status.race_id,
                second=status.second,
                spool_depth=status.spool_depth,
                in_memory=status.in_memory,
                sent=status.sent,
                acked=status.acked,
                dropped=status.dropped,
                place=None if status.standings is None else status.standings.place,
                lateness_p99_ms=status.lateness_p99_ms,
            )

    def close(self) -> None:
        """Flush the stream."""
        self._stream.flush()


def in_flight(status: AgentStatus, sent_a_moment_ago: int) -> int:
    """Unacknowledged messages among those sent since ``sent_a_moment_ago`` was the count."""
    return max(0, min(status.sent - status.acked, status.sent - sent_a_moment_ago))


class PanelReporter:
    """A live rich panel on a terminal, with events printed above it.

    A message sent under :data:`IN_FLIGHT_SECONDS` ago is shown in flight, not unacked (the
    panel is redrawn right after each publish, before its PUBACK can be back); on
    :meth:`close` the panel is drawn once more, as the agent left things.

    Args:
        level: the lowest level of events printed.
        console: where to draw (a terminal's console by default).
        monotonic: seconds, for what counts as in flight.
    """

    def __init__(
        self,
        *,
        level: str = "info",
        console: Any = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        from rich.console import Console
        from rich.live import Live

        self._threshold = LEVELS[level]
        self._console = console if console is not None else Console()
        self._monotonic = monotonic
        #: (when, messages sent by then) of recent updates, oldest first.
        self._sent: list[tuple[float, int]] = []
        self._snapshot: Callable[[], AgentStatus] | None = None
        # Refreshed by update() once a second: no refresh thread waking up four times a second.
        self._live = Live(console=self._console, auto_refresh=False, transient=False)
        self._live.start()

    def event(self, level: str, message: str, **fields: Any) -> None:
        """Print one event line above the panel."""
        if LEVELS[level] < self._threshold:
            return
        details = " ".join(f"{key}={value}" for key, value in fields.items())
        stamp = time.strftime("%H:%M:%S")
        style = {"warning": "yellow", "error": "bold red"}.get(level, "dim")
        self._console.print(f"[{style}]{stamp} {message}[/] {details}", highlight=False)

    def update(self, snapshot: Callable[[], AgentStatus]) -> None:
        """Redraw the panel."""
        self._snapshot = snapshot
        status = snapshot()
        now = self._monotonic()
        recent = self._sent
        recent.append((now, status.sent))
        cutoff = now - IN_FLIGHT_SECONDS
        # Keep the latest update from before the cutoff, and every one since.
        while len(recent) > 1 and recent[1][0] <= cutoff:
            recent.pop(0)
        before = recent[0][1] if recent[0][0] <= cutoff else 0
        flying = in_flight(status, before)
        self._live.update(render_panel(status, in_flight=flying), refresh=True)

    def close(self) -> None:
        """Draw the final panel, as the agent left things, and leave it on screen."""
        if self._snapshot is not None:
            self._live.update(render_panel(self._snapshot(), stopped=True), refresh=True)
        self._live.stop()


def make_reporter(
    log_format: str, *, level: str, status_interval: float, stream: IO[str] | None = None
) -> Reporter:
    """A panel on a terminal (``auto``) or when asked (``panel``); JSON lines otherwise."""
    out = stream if stream is not None else sys.stdout
    if log_format == "panel" or (log_format == "auto" and out.isatty()):
        return PanelReporter(level=level)
    return JsonLogReporter(out, level=level, status_interval=status_interval)
