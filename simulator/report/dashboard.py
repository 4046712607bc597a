"""The live dashboard of ``alleycat simulate``: a pure function of a stats snapshot.

:func:`render_dashboard` turns a :class:`~simulator.report.stats.StatsSnapshot` into a rich
renderable; rich's ``Live`` calls it a few times a second (see :mod:`simulator.report.live`).
Nothing here reads the clock or the run: the same snapshot always renders the same view, so tests
render it into a fixed-width ``Console``.
"""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from simulator.engine.shards import SHARD_BYTES_PER_SECOND, SHARD_RECORDS_PER_SECOND
from simulator.report.stats import ShardSnapshot, StatsSnapshot

#: Shards listed one per line; beyond this, the hottest are listed and the rest summarised.
MAX_SHARD_ROWS = 8
#: A shard at or above this share of a limit is shown in red.
HOT_LOAD = 0.8
MIB = 1024 * 1024


def render_dashboard(
    snapshot: StatsSnapshot,
    *,
    strategy: str,
    stream: str,
    shard_count: int,
    batching: str = "per-second",
    total_records: int | None = None,
    messages_delivered: int | None = None,
    max_shard_rows: int = MAX_SHARD_ROWS,
) -> RenderableType:
    """The whole dashboard for one moment of a run.

    Args:
        snapshot: the run's figures now.
        strategy: the partition-key strategy's name.
        stream: the target stream's name.
        shard_count: the stream's open shards.
        batching: the batching mode's name.
        total_records: messages the whole run will generate, if known.
        messages_delivered: ride messages inside the delivered records, when records pack
            several (buffered and KPL batching).
        max_shard_rows: shards listed one per line before the rest are summarised.
    """
    header = Text.assemble(
        ("strategy ", "dim"),
        (strategy, "bold"),
        ("  stream ", "dim"),
        (stream, "bold"),
        (f" ({shard_count} shard{'s' if shard_count != 1 else ''})", ""),
        ("  batching ", "dim"),
        (batching, "bold"),
    )
    body = Group(
        header,
        progress_line(snapshot),
        Text(""),
        throughput_table(snapshot, total_records, messages_delivered),
        Text(""),
        Text("Shards: the last second against 1,000 records/s and 1 MiB/s", "bold"),
        shard_table(snapshot.shards, max_shard_rows),
        Text(""),
        Text("Leaderboard: best output this race, per class (the backend's view)", "bold"),
        leaderboard_table(snapshot.leaderboard),
    )
    return Panel(body, title="alleycat simulate", title_align="left", box=box.ROUNDED)


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


def progress_line(snapshot: StatsSnapshot) -> Text:
    """Elapsed and remaining simulation time, with a bar."""
    duration = max(snapshot.duration, 1e-9)
    elapsed = min(snapshot.elapsed, snapshot.duration)
    done = elapsed / duration
    line = Text("elapsed ")
    line.append(clock(elapsed), "bold")
    line.append(f" / {clock(snapshot.duration)}  ")
    line.append_text(bar(done, 40))
    line.append(f" {done:4.0%}  remaining ")
    line.append(clock(snapshot.duration - elapsed), "bold")
    return line


def throughput_table(
    snapshot: StatsSnapshot, total_records: int | None, messages_delivered: int | None = None
) -> Table:
    """Rates, totals, failures, the producer's state and latency."""
    table = Table.grid(padding=(0, 3))
    for _ in range(4):
        table.add_column()
    of_total = f" / {total_records:,}" if total_records else ""
    table.add_row(
        _figure("generated/s", f"{snapshot.generated_per_s:,.0f}"),
        _figure("accepted/s", f"{snapshot.delivered_per_s:,.0f}"),
        _figure("generated", f"{snapshot.generated:,}{of_total}"),
        _figure("delivered", f"{snapshot.delivered:,}")
        if messages_delivered is None
        else _figure("delivered", f"{snapshot.delivered:,} ({messages_delivered:,} msgs)"),
    )
    table.add_row(
        _figure("throttled", f"{snapshot.throttled:,}", alert=snapshot.throttled > 0),
        _figure("retried", f"{snapshot.retries:,}"),
        _figure("dropped", f"{snapshot.dropped:,}", alert=snapshot.dropped > 0),
        _figure("failed requests", f"{snapshot.failed_requests:,}"),
    )
    table.add_row(
        _figure("in flight", f"{snapshot.in_flight_requests:,} req"),
        _figure("buffered", f"{snapshot.buffered:,}"),
        _figure("batch fill", f"{snapshot.batch_fill:,.0f} rec/req"),
        _figure("requests", f"{snapshot.batches:,}"),
    )
    table.add_row(
        _figure("latency p50", f"{snapshot.latency_p50_ms:,.0f} ms"),
        _figure("p95", f"{snapshot.latency_p95_ms:,.0f} ms"),
        _figure("p99", f"{snapshot.latency_p99_ms:,.0f} ms"),
        Text("generation → acceptance", "dim"),
    )
    return table


def _figure(name: str, value: str, *, alert: bool = False) -> Text:
    return Text.assemble((f"{name} ", "dim"), (value, "bold red" if alert else "bold"))


def shard_load(shard: ShardSnapshot) -> float:
    """The shard's last-second load: the larger share of its record and byte limits."""
    return max(
        shard.records_per_s / SHARD_RECORDS_PER_SECOND, shard.bytes_per_s / SHARD_BYTES_PER_SECOND
    )


def shard_table(shards: tuple[ShardSnapshot, ...], max_rows: int = MAX_SHARD_ROWS) -> Table:
    """One bar per shard against both limits; the hottest marked, many shards summarised."""
    table = Table(
        box=None,
        pad_edge=False,
        padding=(0, 1),
    )
    table.add_column("shard", no_wrap=True)
    table.add_column("records/s", no_wrap=True)
    table.add_column("", justify="right", no_wrap=True)
    table.add_column("MiB/s", no_wrap=True)
    table.add_column("", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    if not shards:
        return table
    hottest = max(shards, key=shard_load)
    shown, rest = list(shards), []
    if len(shards) > max_rows:
        ranked = sorted(shards, key=shard_load, reverse=True)
        shown, rest = ranked[: max_rows - 1], ranked[max_rows - 1 :]
    for shard in shown:
        records_share = shard.records_per_s / SHARD_RECORDS_PER_SECOND
        bytes_share = shard.bytes_per_s / SHARD_BYTES_PER_SECOND
        hot = shard is hottest and shard_load(shard) > 0
        load = shard_load(shard)
        label = "◀ at limit" if load >= 1 else "◀ hot" if load >= HOT_LOAD else "◀ busiest"
        mark = Text(label, "bold red" if load >= HOT_LOAD else "bold")
        table.add_row(
            Text(shard.shard_id.removeprefix("shardId-"), "bold" if hot else ""),
            bar(records_share, 24),
            f"{shard.records_per_s:,} ({records_share:.0%})",
            bar(bytes_share, 12),
            f"{shard.bytes_per_s / MIB:.2f} ({bytes_share:.0%})",
            mark if hot else "",
        )
    if rest:
        rates = [s.records_per_s for s in rest]
        table.add_row(
            Text(f"+{len(rest)} more", "dim"),
            Text(f"mean {sum(rates) / len(rates):,.0f}/s, max {max(rates):,}/s", "dim"),
        )
    return table


def leaderboard_table(board: dict[int, list[tuple[str, int, float]]]) -> Table:
    """The top riders of the current race by best output, two columns (name, output) a class."""
    table = Table(
        box=None,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )
    if not board:
        table.add_column("")
        table.add_row(Text("no riders yet", "dim"))
        return table
    classes = sorted(board)
    for class_id in classes:
        table.add_column(f"class {class_id}", no_wrap=True, min_width=8)
        table.add_column("", justify="right", no_wrap=True)
    depth = max(len(rows) for rows in board.values())
    for rank in range(depth):
        cells: list[Text] = []
        for class_id in classes:
            rows = board[class_id]
            if rank < len(rows):
                name, _, output = rows[rank]
                cells += [Text(name), Text(f"{output:.1f} ", "bold")]
            else:
                cells += [Text(""), Text("")]
        table.add_row(*cells)
    return table
