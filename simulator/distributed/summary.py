"""One run's summary from many workers: each worker's report, and their sum on the master.

Pure. A worker's report is its :meth:`~simulator.engine.counters.RunStats.summary` (the figures
``simulate --json`` prints) with its latency histogram and what it still holds; the master adds
the counts up, merges the latency histograms (exact percentiles again) and the shards, and
counts what a worker that died still held as ``lost``. So the fields are those of
``simulate --json``, and ``generated = delivered + dropped + lost`` over the whole run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from alleycat_rider.plural import counted
from simulator.engine.counters import LatencyHistogram, RunStats

#: Summary fields that are not counts to add up (they are recomputed or taken from one report).
NOT_SUMMED = frozenset({"mean_batch_records", "latency_ms", "shards"})


def worker_report(
    stats: RunStats, *, worker_index: int, pending: int, riders: int, final: bool
) -> dict[str, Any]:
    """What a worker tells the master: its figures so far, in msgpack-able values.

    Args:
        stats: the worker's run counters.
        worker_index: Locust's index of the worker.
        pending: records the worker holds (buffered or in flight), not yet delivered or dropped.
        riders: the most riders the worker carried at once.
        final: whether the worker's run is over (nothing pending any more).
    """
    return {
        "worker_index": worker_index,
        "final": final,
        "pending": pending,
        "riders": riders,
        "batch_records": stats.batch_records,
        "messages_delivered": stats.messages_delivered,
        "latency": sorted(stats.latency.counts.items()),
        "summary": stats.summary(),
    }


def merge_reports(reports: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The whole run's figures from each worker's last report.

    A worker whose last report is not final (it died, or never answered) counts what it still
    held as ``lost``; ``workers`` lists each worker's index, counts and whether it finished.
    """
    totals: dict[str, Any] = {}
    latency = LatencyHistogram()
    shards: dict[str, dict[str, int]] = {}
    batches = batch_records = messages = riders = lost = 0
    workers = []
    for report in sorted(reports, key=lambda r: int(r["worker_index"])):
        summary = report["summary"]
        for key, value in summary.items():
            if key in NOT_SUMMED or isinstance(value, bool) or not isinstance(value, int):
                continue
            totals[key] = totals.get(key, 0) + value
        counts = Counter({int(ms): int(n) for ms, n in report["latency"] if n})
        if counts:
            latency.add_counts(counts)
        for shard in summary["shards"]:
            merged = shards.setdefault(shard["shard_id"], {"shard_id": shard["shard_id"]})
            for key, value in shard.items():
                if key != "shard_id":
                    merged[key] = merged.get(key, 0) + value
        batches += summary["batches"]
        batch_records += report["batch_records"]
        messages += report["messages_delivered"]
        riders += report["riders"]
        held = 0 if report["final"] else int(report["pending"])
        lost += held
        workers.append(
            {
                "worker_index": report["worker_index"],
                "finished": bool(report["final"]),
                "riders": report["riders"],
                "generated": summary["generated"],
                "delivered": summary["delivered"],
                "dropped": summary["dropped"],
                "lost": held,
            }
        )
    totals.update(
        {
            "lost": lost,
            "mean_batch_records": round(batch_records / batches, 1) if batches else 0.0,
            "latency_ms": {
                "p50": round(latency.percentile(50), 1),
                "p95": round(latency.percentile(95), 1),
                "p99": round(latency.percentile(99), 1),
                "max": float(latency.max_ms),
            },
            "shards": [shards[sid] for sid in sorted(shards)],
            "messages_delivered": messages,
            "riders": riders,
            "workers": workers,
        }
    )
    return totals


def run_summary(
    reports: Iterable[dict[str, Any]],
    *,
    partition_key: str,
    batching: str,
    wall_seconds: float,
    build: str,
) -> dict[str, Any]:
    """The summary ``alleycat locust`` prints and writes: ``simulate --json``'s fields, summed.

    ``riders`` is the sum of each worker's most riders at once; ``duration`` and
    ``simulated_seconds`` are the test's wall-clock seconds (the riders ride in real time).
    """
    reports = list(reports)
    streams = [r["stream"] for r in reports if r.get("stream")]
    errors = [r["error"] for r in reports if r.get("error")]
    merged = merge_reports(reports)
    return {
        "stream": streams[0] if streams else None,
        "partition_key": partition_key,
        "riders": merged.pop("riders"),
        "duration": round(wall_seconds),
        "interrupted": False,
        "error": errors[0] if errors else None,
        "wall_seconds": round(wall_seconds, 3),
        "simulated_seconds": round(wall_seconds, 3),
        "build": build,
        **merged,
        "batching": batching,
    }


def workers_line(summary: dict[str, Any]) -> str:
    """The line under Locust's summary table: workers and messages delivered, and what was
    lost with workers that went missing, when some did."""
    workers = summary["workers"]
    line = (
        f"{counted(len(workers), 'worker')}; messages delivered: {summary['messages_delivered']:,}"
    )
    missing = sum(1 for w in workers if not w["finished"])
    if missing:
        line += f"; lost with {counted(missing, 'missing worker')}: {summary['lost']:,}"
    return line
