"""The live dashboard of ``alleycat simulate``: a pure function of a stats snapshot.

:func:`render_dashboard` turns a :class:`~simulator.engine.counters.StatsSnapshot` (and the recent
history of :mod:`simulator.report.history`) into a rich renderable that lays itself out for the
width it is given and, with ``fit_height``, the terminal's height: on 80×24 it folds the figures
into fewer columns, lists fewer shards and drops what does not fit (blank lines, then the long
sparklines, then leaderboard classes, then shards beyond the busiest), but never cuts a number;
on a wide terminal the bars and sparklines grow and shard ids are shown in full. Nothing here
reads the clock or the run: the same snapshot at the same size always renders the same view, so
tests render it into a fixed-size ``Console``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.text import Text

from simulator.engine.counters import ShardSnapshot, StatsSnapshot
from simulator.engine.shards import SHARD_BYTES_PER_SECOND, SHARD_RECORDS_PER_SECOND
from simulator.report.history import HISTORY_SECONDS, WINDOW_SECONDS, RecentHistory

#: Shards listed one per line at most; beyond this (or the height), the busiest are listed
#: and the rest summarised.
MAX_SHARD_ROWS = 8
#: Shards listed at least, however short the terminal.
MIN_SHARD_ROWS = 2
#: A shard at or above this share of a limit is ``hot``.
HOT_LOAD = 0.8
#: A shard at or above this share of a limit is ``at limit``: no headroom is left, and a
#: throttled shard's smoothed rate sits just under its limit.
AT_LIMIT_LOAD = 0.95
#: From this width on, shard ids are shown in full (``shardId-000000000001``).
FULL_SHARD_IDS_WIDTH = 120
#: Cells between columns of figures.
FIGURE_GAP = 3
MIB = 1024 * 1024
SPARKS = "▁▂▃▄▅▆▇█"


def render_dashboard(
    snapshot: StatsSnapshot,
    *,
    strategy: str,
    stream: str,
    shard_count: int,
    batching: str = "per-second",
    total_records: int | None = None,
    messages_delivered: int | None = None,
    max_shard_rows: int | None = None,
    history: RecentHistory | None = None,
    window_seconds: int = WINDOW_SECONDS,
    fit_height: bool = False,
) -> RenderableType:
    """The whole dashboard for one moment of a run, laid out when it is drawn.

    Args:
        snapshot: the run's figures now (shard rates smoothed over ``window_seconds``).
        strategy: the partition-key strategy's name.
        stream: the target stream's name.
        shard_count: the stream's open shards.
        batching: the batching mode's name.
        total_records: messages the whole run will generate, if known.
        messages_delivered: ride messages inside the delivered records, when records pack
            several (buffered and KPL batching).
        max_shard_rows: shards listed one per line before the rest are summarised; default
            :data:`MAX_SHARD_ROWS`, or with ``fit_height`` as many as the height leaves room for.
        history: the last seconds' records accepted, throttles and p99, for sparklines.
        window_seconds: the seconds the shard rates were averaged over.
        fit_height: lay out for the console's height too (the live view), not only its width.
    """
    return Dashboard(
        snapshot=snapshot,
        strategy=strategy,
        stream=stream,
        shard_count=shard_count,
        batching=batching,
        total_records=total_records,
        messages_delivered=messages_delivered,
        max_shard_rows=max_shard_rows,
        history=history or RecentHistory(),
        window_seconds=window_seconds,
        fit_height=fit_height,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """What one drawing shows, chosen for the space there is."""

    shard_rows: int
    leaderboard_classes: int
    sparklines: int
    """0, 1 (all three on one line) or 3 (one line each)."""
    blank_lines: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Dashboard:
    """The dashboard's content; it lays itself out for the console it is drawn on."""

    snapshot: StatsSnapshot
    strategy: str
    stream: str
    shard_count: int
    batching: str
    total_records: int | None
    messages_delivered: int | None
    max_shard_rows: int | None
    history: RecentHistory
    window_seconds: int
    fit_height: bool

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = (options.height or console.height) if self.fit_height else None
        yield self.laid_out(options.max_width, height)

    def laid_out(self, width: int, height: int | None = None) -> RenderableType:
        """The dashboard for a ``width`` × ``height`` area (any height when None)."""
        inner = max(20, width - 4)  # the panel's borders and padding
        header = self._header(inner)
        figures = figure_grid(self._figures(), inner)
        fixed = len(header) + 1 + len(figures) + 2  # + progress, + shard title and head
        layout = choose_layout(
            shards=len(self.snapshot.shards),
            classes=max(1, len(self.snapshot.leaderboard)),  # "no riders yet" takes a line
            max_shard_rows=self.max_shard_rows,
            room=None if height is None else height - 2 - fixed,
        )
        parts: list[RenderableType] = [*header, progress_line(self.snapshot, inner)]
        gap: list[RenderableType] = [Text("")] if layout.blank_lines else []
        parts += [*gap, *figures]
        if layout.sparklines:
            parts += sparklines(self.history, inner, lines=layout.sparklines)
        parts += gap
        title = f"Shards: the last {self.window_seconds} s against 1,000 records/s and 1 MiB/s"
        parts.append(Text(title if len(title) <= inner else "Shards", "bold"))
        full_ids = width >= FULL_SHARD_IDS_WIDTH
        parts += shard_table(self.snapshot.shards, layout.shard_rows, inner, full_ids)
        if layout.leaderboard_classes:
            parts += gap
            title = "Leaderboard: best output this race, per class (the backend's view)"
            classes = len(self.snapshot.leaderboard)
            if layout.leaderboard_classes < classes:
                title = f"Leaderboard: best output this race, {layout.leaderboard_classes} of "
                title += f"{classes} classes"
            parts.append(Text(title if len(title) <= inner else "Leaderboard", "bold"))
            parts += leaderboard_table(self.snapshot.leaderboard, inner, layout.leaderboard_classes)
        return Panel(Group(*parts), title="alleycat simulate", title_align="left", box=box.ROUNDED)

    def _header(self, inner: int) -> list[Text]:
        s = "s" if self.shard_count != 1 else ""
        where = Text.assemble(
            ("strategy ", "dim"),
            (self.strategy, "bold"),
            ("  stream ", "dim"),
            (self.stream, "bold"),
            (f" ({self.shard_count} shard{s})", ""),
        )
        how = Text.assemble(("batching ", "dim"), (self.batching, "bold"))
        if where.cell_len + 2 + how.cell_len <= inner:
            return [Text.assemble(where, "  ", how)]
        return [where, how]

    def _figures(self) -> list[Text]:
        # Ordered so that three columns of them fit in 80 columns, even with a run's millions.
        s = self.snapshot
        of_total = f" / {self.total_records:,}" if self.total_records else ""
        figures = [
            figure("generated/s", f"{s.generated_per_s:,.0f}"),
            figure("accepted/s", f"{s.delivered_per_s:,.0f}"),
            figure("requests", f"{s.batches:,}"),
            figure("generated", f"{s.generated:,}{of_total}"),
            figure("delivered", f"{s.delivered:,}"),
            figure("in flight", f"{s.in_flight_requests:,} req"),
            figure("throttled", f"{s.throttled:,}", alert=s.throttled > 0),
            figure("retried", f"{s.retries:,}"),
            figure("dropped", f"{s.dropped:,}", alert=s.dropped > 0),
            figure("failed requests", f"{s.failed_requests:,}"),
            figure("buffered", f"{s.buffered:,}"),
            figure("rec/req", f"{s.batch_fill:,.0f}"),
            figure("latency p50", f"{s.latency_p50_ms:,.0f} ms"),
            figure("p95", f"{s.latency_p95_ms:,.0f} ms"),
            figure("p99", f"{s.latency_p99_ms:,.0f} ms"),
        ]
        if self.messages_delivered is not None:
            figures.append(figure("ride messages delivered", f"{self.messages_delivered:,}"))
        return figures


def choose_layout(
    *, shards: int, classes: int, max_shard_rows: int | None, room: int | None
) -> Layout:
    """The richest layout whose optional lines fit in ``room`` lines (None: no limit).

    What goes first when lines are short: blank lines, the sparklines' own lines (folded into
    one), leaderboard classes, shards beyond :data:`MIN_SHARD_ROWS`, and then the sparklines.
    Without ``max_shard_rows``, shards beyond :data:`MAX_SHARD_ROWS` are listed in whatever
    room is left over.
    """
    listed = min(shards, MAX_SHARD_ROWS if max_shard_rows is None else max_shard_rows)

    def lines(layout: Layout) -> int:
        summary = 1 if layout.shard_rows < shards else 0
        board = 1 + layout.leaderboard_classes if layout.leaderboard_classes else 0
        blanks = (3 if board else 2) if layout.blank_lines else 0
        return layout.shard_rows + summary + board + layout.sparklines + blanks

    full = Layout(shard_rows=listed, leaderboard_classes=classes, sparklines=3, blank_lines=True)
    if room is None:
        return full
    least = min(listed, MIN_SHARD_ROWS)
    candidates: Iterator[Layout] = (
        Layout(shard_rows=rows, leaderboard_classes=board, sparklines=spark, blank_lines=blank)
        for spark, blank, rows, board in [
            (3, True, listed, classes),
            (3, False, listed, classes),
            (1, False, listed, classes),
            *((1, False, listed, board) for board in range(classes - 1, -1, -1)),
            *((1, False, rows, 0) for rows in range(listed - 1, least - 1, -1)),
            (0, False, least, 0),
        ]
    )
    for layout in candidates:
        if lines(layout) <= room:
            if max_shard_rows is None and layout == full:
                more = min(shards - listed, room - lines(layout))
                more -= 1 if more == shards - listed else 0  # the summary line goes too
                if more > 0:
                    return dataclasses.replace(layout, shard_rows=listed + more)
            return layout
    return Layout(shard_rows=least, leaderboard_classes=0, sparklines=0, blank_lines=False)


def figure(name: str, value: str, *, alert: bool = False) -> Text:
    """A named figure: the name dim, the value bold (red when it is bad news)."""
    return Text.assemble((f"{name} ", "dim"), (value, "bold red" if alert else "bold"))


def row(cells: Sequence[Text], widths: Sequence[int], gap: int = 1) -> Text:
    """Cells side by side, each padded to its width (a right-aligned cell has a negative
    width); the cells are never cut, so the widths must hold them."""
    line = Text(no_wrap=True)
    for i, (cell, width) in enumerate(zip(cells, widths, strict=False)):
        pad = " " * max(0, abs(width) - cell.cell_len)
        if width < 0:
            line.append(pad)
        line.append_text(cell)
        if width >= 0 and i < len(cells) - 1:
            line.append(pad)
        if i < len(cells) - 1:
            line.append(" " * gap)
    line.rstrip()
    return line


def figure_grid(figures: Sequence[Text], width: int) -> list[Text]:
    """The figures row by row in as many columns as fit in ``width``, none of them cut."""
    count = len(figures)
    widths: list[int] = []
    for columns in range(min(count, 6), 0, -1):
        widths = [max(f.cell_len for f in figures[start::columns]) for start in range(columns)]
        if sum(widths) + FIGURE_GAP * (columns - 1) <= width:
            break
    columns = len(widths)
    return [
        row(figures[start : start + columns], widths, FIGURE_GAP)
        for start in range(0, count, columns)
    ]


def bar(fraction: float, width: int) -> Text:
    """A bar ``width`` cells wide, filled to ``fraction`` (capped at full), coloured by load."""
    filled = round(min(max(fraction, 0.0), 1.0) * width)
    style = "red" if fraction >= HOT_LOAD else "yellow" if fraction >= 0.5 else "green"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"))


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a number of seconds."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(snapshot: StatsSnapshot, width: int = 96) -> Text:
    """Elapsed and remaining simulation time, with a bar as wide as ``width`` leaves room for."""
    duration = max(snapshot.duration, 1e-9)
    elapsed = min(snapshot.elapsed, snapshot.duration)
    done = elapsed / duration
    start = Text.assemble("elapsed ", (clock(elapsed), "bold"), f" / {clock(snapshot.duration)}  ")
    end = Text.assemble(f" {done:4.0%}  remaining ", (clock(snapshot.duration - elapsed), "bold"))
    room = width - start.cell_len - end.cell_len
    line = Text.assemble(start)
    if room >= 5:
        line.append_text(bar(done, min(room, 60)))
    line.append_text(end)
    return line


def sparkline(values: Sequence[float], width: int) -> Text:
    """The last ``width`` values as bars scaled to their largest (all low when all are 0)."""
    width = min(width, HISTORY_SECONDS)
    shown = list(values)[-width:] if width > 0 else []
    top = max(shown, default=0)
    cells = "".join(
        SPARKS[min(len(SPARKS) - 1, int(value / top * (len(SPARKS) - 1) + 0.5))]
        if top
        else SPARKS[0]
        for value in shown
    )
    return Text(cells.rjust(max(width, 0), " "), "cyan")


def sparklines(history: RecentHistory, width: int, *, lines: int) -> list[Text]:
    """Records accepted, throttles and p99 latency per second: one line each, or all on one."""
    last_p99 = history.p99_ms[-1] if history.p99_ms else 0.0
    series = [
        ("accepted/s", history.accepted, f"{history.accepted[-1] if history.accepted else 0:,}"),
        (
            "throttled/s",
            history.throttled,
            f"{history.throttled[-1] if history.throttled else 0:,}",
        ),
        ("p99", history.p99_ms, f"{last_p99:,.0f} ms"),
    ]
    if lines >= 3:
        label = max(len(name) for name, _, _ in series) + 1
        value = max(len(text) for _, _, text in series) + 1
        room = width - label - value
        return [
            Text.assemble((name.ljust(label), "dim"), sparkline(data, room), (f" {text}", "bold"))
            for name, data, text in series
        ]
    fixed = sum(len(name) + len(text) + 2 for name, _, text in series) + 2 * (len(series) - 1)
    room = max(0, (width - fixed) // len(series))
    line = Text()
    for i, (name, data, text) in enumerate(series):
        line.append_text(
            Text.assemble(("  " if i else "", ""), (f"{name} ", "dim"), sparkline(data, room))
        )
        line.append(f" {text}", "bold")
    return [line]


def shard_load(shard: ShardSnapshot) -> float:
    """The shard's recent load: the larger share of its record and byte limits."""
    return max(
        shard.records_per_s / SHARD_RECORDS_PER_SECOND, shard.bytes_per_s / SHARD_BYTES_PER_SECOND
    )


def shard_label(shard_id: str, full: bool) -> str:
    """``shardId-000000000012`` in full, or as ``12`` where space is short."""
    if full:
        return shard_id
    digits = shard_id.removeprefix("shardId-")
    return str(int(digits)) if digits.isdigit() else digits


def shard_mark(load: float, busiest: bool) -> Text:
    """``◀ at limit``, ``◀ hot``, ``◀ busiest`` or nothing."""
    if load >= AT_LIMIT_LOAD:
        return Text("◀ at limit", "bold red")
    if load >= HOT_LOAD:
        return Text("◀ hot", "bold red")
    return Text("◀ busiest", "bold") if busiest and load > 0 else Text("")


def _percent(share: float) -> str:
    """A whole percentage that reads 100% only at the limit itself (995/s is 99%)."""
    return f"{share if share >= 1 else min(share, 0.99):.0%}"


def shard_table(
    shards: tuple[ShardSnapshot, ...],
    max_rows: int = MAX_SHARD_ROWS,
    width: int = 96,
    full_ids: bool = False,
) -> list[Text]:
    """One bar per shard against both limits, the bars as wide as ``width`` allows; the
    busiest marked; shards beyond ``max_rows`` summarised, busiest first. A line each."""
    if not shards:
        return [Text("shard", "bold")]
    hottest = max(shards, key=shard_load)
    shown, rest = list(shards), []
    if len(shards) > max_rows:
        ranked = sorted(shards, key=shard_load, reverse=True)
        shown, rest = ranked[: max(1, max_rows)], ranked[max(1, max_rows) :]
    rows = []
    for shard in shown:
        records_share = shard.records_per_s / SHARD_RECORDS_PER_SECOND
        bytes_share = shard.bytes_per_s / SHARD_BYTES_PER_SECOND
        rows.append(
            (
                shard_label(shard.shard_id, full_ids),
                records_share,
                f"{shard.records_per_s:,} ({_percent(records_share)})",
                bytes_share,
                f"{shard.bytes_per_s / MIB:.2f} ({_percent(bytes_share)})",
                shard_mark(shard_load(shard), shard is hottest),
            )
        )
    cells = [
        max([len("shard"), len(f"+{len(rest)} more")] + [len(r[0]) for r in rows]),
        max([len("records/s")] + [len(r[2]) for r in rows]),
        max([len("MiB/s")] + [len(r[4]) for r in rows]),
        max(r[5].cell_len for r in rows),
    ]
    spare = width - sum(cells) - 5  # one space between six columns
    records_bar = min(40, max(0, spare * 2 // 3))
    bytes_bar = min(20, max(0, spare - records_bar - 1))
    if records_bar < 4:
        records_bar = bytes_bar = 0
    elif bytes_bar < 4:
        bytes_bar = 0
    widths = [cells[0]]
    head = [Text("shard", "bold")]
    if records_bar:
        widths.append(records_bar)
        head.append(Text("records/s", "bold"))
    widths.append(-cells[1])
    head.append(Text("" if records_bar else "records/s", "bold"))
    if bytes_bar:
        widths.append(bytes_bar)
        head.append(Text("MiB/s", "bold"))
    widths += [-cells[2], cells[3]]
    head += [Text("" if bytes_bar else "MiB/s", "bold"), Text("")]
    lines = [row(head, widths)]
    for label, records_share, records, bytes_share, size, mark in rows:
        line: list[Text] = [Text(label, "bold" if mark.plain else "")]
        if records_bar:
            line.append(bar(records_share, records_bar))
        line.append(Text(records))
        if bytes_bar:
            line.append(bar(bytes_share, bytes_bar))
        line += [Text(size), mark]
        lines.append(row(line, widths))
    if rest:
        rates = [s.records_per_s for s in rest]
        summary = f"mean {sum(rates) / len(rates):,.0f}/s, max {max(rates):,}/s"
        lines.append(row([Text(f"+{len(rest)} more"), Text(summary)], widths[:1] + [0]))
        lines[-1].stylize("dim")
    return lines


def leaderboard_table(
    board: dict[int, list[tuple[str, int, float]]], width: int = 96, max_classes: int = 6
) -> list[Text]:
    """The top riders of the current race by best output: a line per class, as many riders
    as ``width`` holds (best first), for the first ``max_classes`` classes."""
    if not board:
        return [Text("no riders yet", "dim")]
    classes = sorted(board)[:max_classes]
    label = max(len(f"class {c}") for c in classes)
    cell = max(
        len(name) + 1 + len(f"{output:.1f}") for c in classes for name, _, output in board[c]
    )
    depth = max(len(board[c]) for c in classes)
    ranks = max(1, min(depth, (width - label) // (cell + 2)))
    lines = []
    for class_id in classes:
        cells = [Text(f"class {class_id}", "dim")]
        cells += [
            Text.assemble(name, " ", (f"{output:.1f}", "bold"))
            for name, _, output in board[class_id][:ranks]
        ]
        lines.append(row(cells, [label] + [cell] * ranks, gap=2))
    return lines
