"""The end-of-run summary: a table for people, or one JSON object for machines."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table

from alleycat_rider.plural import counted
from simulator.engine.shards import SHARD_BYTES_PER_SECOND, SHARD_RECORDS_PER_SECOND


def _records(records: int, messages: int | None, summary: dict[str, Any]) -> str:
    """``1,152 records (30,000 ride messages, kpl)`` when records pack several messages."""
    batching = summary.get("batching", "per-second")
    if batching == "per-second" or messages is None:
        return f"{records:,}"
    return f"{counted(records, 'record')} ({counted(messages, 'ride message')}, {batching})"


def _ridden(summary: dict[str, Any]) -> str:
    """``1,000 × 300``, or ``1,000 × 39 of 300`` for a run that stopped before its end."""
    riders, duration = summary["riders"], summary["duration"]
    ridden = summary.get("ridden_seconds", duration)
    if ridden >= duration:
        return f"{riders:,} × {duration:,}"
    return f"{riders:,} × {ridden:,} of {duration:,}"


def _capacity(summary: dict[str, Any]) -> str:
    """``on-demand: split to 8 shards at 62 s`` when the stream scaled out."""
    splits = summary.get("scale_outs") or []
    if not splits:
        return str(summary["capacity"])
    steps = ", ".join(f"{s['open_shards']:,} at {s['at_second']:,} s" for s in splits)
    return f"{summary['capacity']}: split to {steps}"


def summary_table(summary: dict[str, Any]) -> RenderableType:
    """Render a run summary (:meth:`simulator.engine.counters.RunStats.summary` plus run facts)."""
    totals = Table(title="Run summary", show_header=False, title_justify="left")
    totals.add_column("figure")
    totals.add_column("value", justify="right")
    rows = [
        ("stream", f"{summary['stream']} ({counted(len(summary['shards']), 'shard')})"),
        ("partition key", summary["partition_key"]),
        ("riders × seconds", _ridden(summary)),
        ("batching", summary.get("batching", "per-second")),
        ("generated", _records(summary["generated"], summary.get("messages_generated"), summary)),
        ("delivered", _records(summary["delivered"], summary.get("messages_delivered"), summary)),
        ("throttled (attempts)", f"{summary['throttled']:,}"),
        ("retries", f"{summary['retries']:,}"),
        ("dropped", f"{summary['dropped']:,}"),
        ("failed requests", f"{summary['failed_requests']:,}"),
        ("PutRecords requests", f"{summary['batches']:,}"),
        ("mean records per request", f"{summary['mean_batch_records']:,}"),
        ("PUT payload units", f"{summary['put_payload_units']:,}"),
        (
            "latency p50 / p95 / p99",
            "{p50:,.0f} / {p95:,.0f} / {p99:,.0f} ms".format(**summary["latency_ms"]),
        ),
        ("elapsed (wall)", f"{summary['wall_seconds']:,.1f} s ({summary['build']})"),
    ]
    if "capacity" in summary:
        rows.insert(2, ("capacity", _capacity(summary)))
    if summary.get("order_kept") is False:
        rows.insert(3, ("per-rider order", "not kept: the stream spreads records itself"))
    rate = summary.get("records_per_wall_second")
    if rate is not None:  # how fast the simulator itself went: the figure of a --fast run
        rows.append(("records/s (wall)", f"{rate:,.0f}"))
    if summary.get("interrupted"):
        by = summary.get("stopped_by")  # SIGINT (Ctrl-C), SIGTERM, or None
        how = "Ctrl-C" if by == "SIGINT" else by
        rows.append(("stopped early", "yes" if how is None else f"yes ({how})"))
    for name, value in rows:
        totals.add_row(name, value)
    shards = Table(title="Shards", title_justify="left")
    shards.add_column("shard")
    shards.add_column("records", justify="right")
    shards.add_column("share", justify="right")
    shards.add_column("MiB", justify="right")
    shards.add_column("peak rec/s", justify="right")
    shards.add_column("of limit", justify="right")
    delivered = max(1, summary["delivered"])
    for shard in summary["shards"]:
        peak = shard["peak_records_per_s"]
        load = max(
            peak / SHARD_RECORDS_PER_SECOND, shard["peak_bytes_per_s"] / SHARD_BYTES_PER_SECOND
        )
        shards.add_row(
            shard["shard_id"],
            f"{shard['records']:,}",
            f"{shard['records'] / delivered:.1%}",
            f"{shard['bytes'] / 2**20:,.1f}",
            f"{peak:,}",
            f"{load:.0%}",
        )
    return Group(totals, shards)
