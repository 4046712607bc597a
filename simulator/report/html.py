"""Reports as one self-contained HTML page, for a team to open and pass around.

Pure: each page is a function of a run's figures (the very object ``--json`` prints) and, where
there is one, its time series. The charts are drawn by plotly (the ``report`` extra); its
JavaScript is written into the page once, so the page opens offline, with no request to any
server. Every figure shown in a table carries ``data-key``, the path of its value in the JSON
(``latency_ms.p99``, ``runs.2.throttled``), and the whole JSON object is in the page too
(``<script id="alleycat-figures">``), so what a page says can be checked against ``--json``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from simulator.engine.shards import SHARD_RECORDS_PER_SECOND
from simulator.report.timeline import PERCENTILES

#: How to get the charts' library, for the one line a missing extra gets.
INSTALL_HINT = "pip install 'alleycat[report]'"
#: A heat-map cell's colour by its records/s over the shard's limit: green, yellow, red at it.
HEAT_COLOURS = [[0.0, "#f4f9f4"], [0.25, "#a8dab5"], [0.5, "#5cb270"], [0.8, "#f2c14e"],
                [0.95, "#e4572e"], [1.0, "#a4161a"]]  # fmt: skip
#: Plotly's settings for every chart: no logo link, no mode bar, fits its box.
CHART_CONFIG = {"displaylogo": False, "displayModeBar": False, "responsive": True}

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1d2327; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.8em; }
p.facts { color: #555; margin-top: 0; }
p.recommendation { background: #eef6ee; border-left: 4px solid #5cb270; padding: 0.6em 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e2e4e7; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.verdict { font-style: italic; color: #444; }
.chart { min-height: 360px; }
"""


class MissingPlotting(ImportError):
    """The ``report`` extra (plotly) is not installed."""


def check_plotting() -> None:
    """Raise :class:`MissingPlotting` unless plotly can be imported: say so before a long run."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise MissingPlotting(f"--html needs plotly: {INSTALL_HINT}") from None


# -- the page ------------------------------------------------------------------------------------


def page(title: str, facts: str, body: Sequence[str], figures: dict[str, Any]) -> str:
    """One whole HTML document: plotly's script inlined once, ``body`` and the JSON figures."""
    from plotly.offline import get_plotlyjs

    data = json.dumps(figures).replace("</", "<\\/")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{STYLE}</style>",
            f'<script type="text/javascript">{get_plotlyjs()}</script>',
            "</head>",
            "<body>",
            f"<h1>{html.escape(title)}</h1>",
            f'<p class="facts">{html.escape(facts)}</p>',
            *body,
            f'<script type="application/json" id="alleycat-figures">{data}</script>',
            "</body>",
            "</html>",
            "",
        ]
    )


def chart(figure: Any, chart_id: str) -> str:
    """A plotly figure as a ``<div>`` and the script that draws it (no library, no network)."""
    import plotly.io as pio

    drawn: str = pio.to_html(
        figure, full_html=False, include_plotlyjs=False, div_id=chart_id, config=CHART_CONFIG
    )
    return f'<div class="chart" data-chart="{chart_id}">{drawn}</div>'


def number(value: Any) -> str:
    """A figure as the tables show it: thousands separated, as the terminal does."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,}"  # Python's shortest repr: the JSON's digits, no more, no fewer
    return html.escape(str(value))


def cell(figures: dict[str, Any], key: str, css: str = "n") -> str:
    """A table cell holding the value at ``key`` (a dotted path) of ``figures``."""
    value: Any = figures
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return f'<td class="{css}" data-key="{html.escape(key)}">{number(value)}</td>'


def figure_table(figures: dict[str, Any], rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table: a label and the figure at each key that ``figures`` has."""
    lines = ["<table>"]
    for label, key in rows:
        if _has(figures, key):
            lines.append(f"<tr><th>{html.escape(label)}</th>{cell(figures, key)}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _has(figures: dict[str, Any], key: str) -> bool:
    value: Any = figures
    for part in key.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False
    return value is not None


def shard_table(figures: dict[str, Any], prefix: str = "shards") -> str:
    """One row per shard: records, bytes and peaks, each a figure of the JSON."""
    columns = ("records", "bytes", "peak_records_per_s", "peak_bytes_per_s")
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in ("shard", *columns))
    lines = ["<table>", f"<tr>{head}</tr>"]
    for i, _ in enumerate(figures[prefix]):
        cells = cell(figures, f"{prefix}.{i}.shard_id", css="id")
        cells += "".join(cell(figures, f"{prefix}.{i}.{c}") for c in columns)
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def heat_map(
    shards: Sequence[str], seconds: Sequence[int], rows: Sequence[Sequence[int]], what: str
) -> Any:
    """A plotly heat map trace: shard × second, coloured against the shard's 1,000 records/s."""
    import plotly.graph_objects as go

    return go.Heatmap(
        x=list(seconds),
        y=list(shards),
        z=[list(row) for row in rows],
        zmin=0,
        zmax=SHARD_RECORDS_PER_SECOND,
        colorscale=HEAT_COLOURS,
        coloraxis="coloraxis",
        hovertemplate=f"%{{y}}<br>second %{{x}}<br>{what}: %{{z:,}}/s<extra></extra>",
    )


def heat_height(shards: int) -> int:
    """Pixels for a heat map of ``shards`` rows: a row a line, up to a screen's height."""
    return min(900, max(340, 140 + 22 * shards))


def heat_layout(title: str) -> dict[str, Any]:
    """The layout every heat map shares: the colour bar names the limit."""
    return {
        "title": {"text": title},
        "coloraxis": {
            "cmin": 0,
            "cmax": SHARD_RECORDS_PER_SECOND,
            "colorscale": HEAT_COLOURS,
            "colorbar": {"title": {"text": f"records/s<br>(limit {SHARD_RECORDS_PER_SECOND:,})"}},
        },
        "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
        "template": "plotly_white",
    }


def latency_figure(
    curves: Sequence[tuple[str, Sequence[float]]], percentiles: Sequence[int]
) -> Any:
    """Latency distributions: the share of records accepted within each latency, one per run."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for name, curve in curves:
        figure.add_trace(
            go.Scatter(
                x=list(curve),
                y=list(percentiles),
                name=name,
                mode="lines",
                line={"shape": "hv"},
                hovertemplate=f"{html.escape(name)}: %{{y}}% within %{{x:,}} ms<extra></extra>",
            )
        )
    figure.update_layout(
        title={"text": "Latency distribution: records accepted within a latency"},
        xaxis={"title": {"text": "latency from the rider's timestamp to acceptance (ms)"}},
        yaxis={"title": {"text": "% of records"}, "range": [0, 100]},
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    return figure


# -- alleycat simulate --------------------------------------------------------------------------


SIMULATE_ROWS = (
    ("stream", "stream"),
    ("partition key", "partition_key"),
    ("riders", "riders"),
    ("duration (s)", "duration"),
    ("ridden seconds", "ridden_seconds"),
    ("batching", "batching"),
    ("generated", "generated"),
    ("delivered", "delivered"),
    ("ride messages generated", "messages_generated"),
    ("ride messages delivered", "messages_delivered"),
    ("throttled (attempts)", "throttled"),
    ("retries", "retries"),
    ("dropped", "dropped"),
    ("dropped at the TTL", "dropped_expired"),
    ("dropped, outcome unknown", "dropped_unknown"),
    ("dropped at a stop", "dropped_interrupted"),
    ("dropped, too large", "dropped_oversized"),
    ("lost with missing workers", "lost"),
    ("failed requests", "failed_requests"),
    ("PutRecords requests", "batches"),
    ("mean records per request", "mean_batch_records"),
    ("PUT payload units", "put_payload_units"),
    ("latency p50 (ms)", "latency_ms.p50"),
    ("latency p95 (ms)", "latency_ms.p95"),
    ("latency p99 (ms)", "latency_ms.p99"),
    ("latency max (ms)", "latency_ms.max"),
    ("elapsed, wall (s)", "wall_seconds"),
    ("build", "build"),
    ("records/s (wall)", "records_per_wall_second"),
    ("stopped by", "stopped_by"),
)


def simulate_page(summary: dict[str, Any], timeline: dict[str, Any]) -> str:
    """``alleycat simulate --html``: the summary, and the run second by second."""
    import plotly.graph_objects as go

    seconds = timeline["seconds"]
    rates = go.Figure()
    for name, series in (
        ("generated", timeline["generated"]),
        ("accepted", timeline["accepted"]),
        ("throttled", timeline["throttled"]),
    ):
        rates.add_trace(go.Scatter(x=seconds, y=series, name=name, mode="lines"))
    rates.update_layout(
        title={"text": "Records per second: generated, accepted, throttled entries"},
        xaxis={"title": {"text": "second of the run"}},
        yaxis={"title": {"text": "records (entries) per second"}},
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    latency = go.Figure(go.Scatter(x=seconds, y=timeline["p99_ms"], name="p99", mode="lines"))
    latency.update_layout(
        title={"text": "p99 latency of the records accepted in each second"},
        xaxis={"title": {"text": "second of the run"}},
        yaxis={"title": {"text": "ms"}, "rangemode": "tozero"},
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    shard_ids = list(timeline["shards"])
    heat = go.Figure(
        heat_map(shard_ids, seconds, [timeline["shards"][s] for s in shard_ids], "accepted")
    )
    heat.update_layout(
        **heat_layout("Records each shard accepted, each second, against its limit"),
        xaxis={"title": {"text": "second of the run"}},
        height=heat_height(len(shard_ids)),
    )
    curve = latency_figure(
        [("all records", timeline["latency_ms"])], timeline["latency_percentiles"]
    )
    batching = summary.get("batching", "per-second")
    facts = (
        f"{summary['riders']:,} riders × {summary['duration']:,} s into {summary['stream']} "
        f"({len(summary['shards'])} shards), partition key {summary['partition_key']}, "
        f"batching {batching}; {summary['build']} build."
    )
    body = [
        "<h2>Summary</h2>",
        figure_table(summary, SIMULATE_ROWS),
        "<h2>Over time</h2>",
        chart(rates, "rates"),
        chart(latency, "p99"),
        "<h2>Shards</h2>",
        chart(heat, "shard-heat-map"),
        shard_table(summary),
        "<h2>Latency</h2>",
        chart(curve, "latency"),
    ]
    return page("Alleycat simulate", facts, body, summary)


# -- alleycat locust ----------------------------------------------------------------------------


def locust_page(summary: dict[str, Any]) -> str:
    """``alleycat locust --summary-html``: the master's summary of every worker's figures."""
    import plotly.graph_objects as go

    shards = summary["shards"]
    shard_ids = [s["shard_id"] for s in shards]
    records = go.Figure(go.Bar(x=shard_ids, y=[s["records"] for s in shards], name="records"))
    records.update_layout(
        title={"text": "Records each shard accepted"},
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    peaks = [s["peak_records_per_s"] for s in shards]
    load = go.Figure(
        go.Bar(x=shard_ids, y=peaks, name="peak records/s", marker={"color": "#f2c14e"})
    )
    load.update_layout(
        title={"text": "Each shard's peak records/s (the sum of the workers' peaks) and the limit"},
        yaxis={"range": [0, max([SHARD_RECORDS_PER_SECOND * 1.1, *peaks])]},
        shapes=[_limit_line("y")],
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    workers = summary["workers"]
    names = [f"worker {w['worker_index']}" for w in workers]
    per_worker = go.Figure(
        [
            go.Bar(x=names, y=[w[key] for w in workers], name=key)
            for key in ("generated", "delivered", "dropped", "lost")
        ]
    )
    per_worker.update_layout(
        title={"text": "Each worker's records"},
        barmode="group",
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    percentiles = ("p50", "p95", "p99", "max")
    latency = go.Figure(
        go.Bar(x=list(percentiles), y=[summary["latency_ms"][p] for p in percentiles])
    )
    latency.update_layout(
        title={"text": "Latency from the rider's timestamp to acceptance (ms)"},
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    head = "".join(
        f"<th>{c}</th>"
        for c in ("worker", "finished", "riders", "generated", "delivered", "dropped", "lost")
    )
    worker_rows = ["<table>", f"<tr>{head}</tr>"]
    for i, _ in enumerate(workers):
        cells = cell(summary, f"workers.{i}.worker_index", css="id")
        cells += cell(summary, f"workers.{i}.finished", css="id")
        cells += "".join(
            cell(summary, f"workers.{i}.{k}")
            for k in ("riders", "generated", "delivered", "dropped", "lost")
        )
        worker_rows.append(f"<tr>{cells}</tr>")
    worker_rows.append("</table>")
    facts = (
        f"{len(workers)} workers, {summary['riders']:,} riders at most, "
        f"{summary['wall_seconds']:,.0f} s into {summary['stream'] or 'a built-in stream each'}, "
        f"partition key {summary['partition_key']}, batching {summary['batching']}; "
        f"{summary['build']} build."
    )
    body = [
        "<h2>Summary</h2>",
        figure_table(summary, SIMULATE_ROWS),
        "<h2>Shards</h2>",
        chart(records, "shard-records"),
        chart(load, "shard-peaks"),
        shard_table(summary),
        "<h2>Workers</h2>",
        chart(per_worker, "workers"),
        "\n".join(worker_rows),
        "<h2>Latency</h2>",
        chart(latency, "latency"),
    ]
    return page("Alleycat locust", facts, body, summary)


def _limit_line(axis: str) -> dict[str, Any]:
    """A dashed line across the chart at a shard's 1,000 records/s."""
    return {
        "type": "line",
        "xref": "paper",
        "x0": 0,
        "x1": 1,
        "yref": axis,
        "y0": SHARD_RECORDS_PER_SECOND,
        "y1": SHARD_RECORDS_PER_SECOND,
        "line": {"dash": "dash", "color": "#a4161a"},
    }


# -- alleycat compare ---------------------------------------------------------------------------


def run_name(run: dict[str, Any]) -> str:
    """What a compared run is called: its ingestion path, batching mode or strategy."""
    if "path" in run:
        return f"{run['path']} ({run['key']})"
    if "monthly_usd" in run:  # a capacity mode
        return f"{run['stream']} ({run['strategy']})"
    return str(run["strategy"])


def compare_page(
    report: dict[str, Any],
    offered: Sequence[Sequence[Sequence[int]]],
    latency_curves: Sequence[Sequence[float]],
    *,
    batching: bool = False,
) -> str:
    """``alleycat compare --html``: heat maps side by side, latency, costs and the verdict.

    Args:
        report: the JSON ``--format json`` prints (strategies, batching modes or ingestion
            paths).
        offered: for each run, the entries offered to each shard in each second of the
            workload (second × shard).
        latency_curves: for each run, the latency at every whole percentile, 0 to 100.
        batching: the runs are batching modes (named by mode, not strategy).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    runs = report["runs"]
    names = [r["batching"] if batching else run_name(r) for r in runs]
    workload = report["workload"]
    heat = make_subplots(
        rows=1, cols=len(runs), subplot_titles=names, shared_yaxes=True, horizontal_spacing=0.02
    )
    for i, rows in enumerate(offered):
        count = max((len(row) for row in rows), default=0)
        shard_rows = [[row[s] if s < len(row) else 0 for row in rows] for s in range(count)]
        heat.add_trace(
            heat_map([f"shard {s}" for s in range(count)], list(range(len(rows))), shard_rows,
                     "offered"),
            row=1, col=i + 1,
        )  # fmt: skip
    heat.update_layout(
        **heat_layout("Entries offered to each shard, each second (retries included)"),
        height=heat_height(workload["shards"]),
    )
    costs = go.Figure()
    if "iot_cost" in runs[0]:
        cost_series = [
            # The ingestion paths name the stream's bill stream_cost beside iot_cost.
            ("stream (provisioned)", [r["stream_cost"]["provisioned"] for r in runs]),
            ("IoT Core", [r["iot_cost"]["total"] for r in runs]),
        ]
        barmode = "stack"
    elif "monthly_usd" in runs[0]:  # capacity modes: each run is priced as its own mode
        cost_series = [
            ("fixed", [r["monthly_usd"]["fixed"] for r in runs]),
            ("usage", [r["monthly_usd"]["usage"] for r in runs]),
        ]
        barmode = "stack"
    else:
        cost_series = [
            ("provisioned", [r["cost"]["provisioned"] for r in runs]),
            ("on-demand", [r["cost"]["on_demand"] for r in runs]),
        ]
        barmode = "group"
    for label, values in cost_series:
        costs.add_trace(
            go.Bar(x=names, y=values, name=label, hovertemplate="%{x}: $%{y:,.2f}<extra></extra>")
        )
    costs.update_layout(
        title={"text": "Estimated monthly cost if this load ran all month (730 h), USD"},
        barmode=barmode,
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    latency = latency_figure(
        [(name, curve) for name, curve in zip(names, latency_curves, strict=True) if curve],
        PERCENTILES,
    )
    what = "mode" if batching else ("path" if "iot_cost" in runs[0] else "strategy")
    if "monthly_usd" in runs[0]:
        what = "capacity mode and key"
    facts = (
        f"{workload['riders']:,} riders × {workload['duration']:,} s on {workload['shards']} "
        f"shards, phase spread {workload['phase_spread_ms']} ms, seed {workload['seed']}; "
        f"{len(runs)} runs, one per {what}."
    )
    body = [
        '<p class="recommendation" data-key="recommendation"><strong>Recommendation:</strong> '
        f"{html.escape(report['recommendation'])}</p>",
        "<h2>Runs</h2>",
        runs_table(runs, names, batching=batching),
        "<h2>Shards</h2>",
        chart(heat, "shard-heat-maps"),
        "<h2>Latency</h2>",
        chart(latency, "latency"),
        "<h2>Costs</h2>",
        chart(costs, "costs"),
    ]
    return page("Alleycat compare", facts, body, report)


def runs_table(runs: Sequence[dict[str, Any]], names: Sequence[str], *, batching: bool) -> str:
    """One row per run: the figures of the terminal's table, each from the JSON."""
    columns: tuple[tuple[str, str], ...]
    if batching:
        columns = (
            ("Kinesis records", "records"),
            ("PUT units", "put_payload_units"),
            ("billed KB", "billed_kilobytes"),
            ("held p50 ms", "hold_p50_ms"),
            ("held p99 ms", "hold_p99_ms"),
            ("p50 ms", "latency_p50_ms"),
            ("p99 ms", "latency_p99_ms"),
            ("$/month prov.", "cost.provisioned"),
            ("$/month on-dem.", "cost.on_demand"),
        )
    else:
        columns = (
            ("max/mean", "imbalance"),
            ("peak/limit", "peak_load"),
            ("throttled share", "throttled_share"),
            ("throttled", "throttled"),
            ("retries", "retries"),
            ("dropped", "dropped"),
            ("lost", "lost"),
            ("p50 ms", "latency_p50_ms"),
            ("p99 ms", "latency_p99_ms"),
            ("riders on 1 shard", "riders_on_one_shard"),
            ("shards", "shards_over_time"),
            ("order kept", "order_kept"),
            ("$/month", "monthly_total_usd"),
            ("$/month (mode)", "monthly_usd.total"),
            ("$/month prov.", "cost.provisioned"),
            ("stream $/month prov.", "stream_cost.provisioned"),
        )
    report = {"runs": list(runs)}
    present = [(label, key) for label, key in columns if _has(report, f"runs.0.{key}")]
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _ in present)
    lines = ["<table>", f"<tr><th></th>{head}</tr>"]
    for i, name in enumerate(names):
        cells = "".join(cell(report, f"runs.{i}.{key}") for _, key in present)
        lines.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
        lines.append(
            f'<tr><td></td><td class="verdict" colspan="{len(present)}" '
            f'data-key="runs.{i}.verdict">{html.escape(runs[i]["verdict"])}</td></tr>'
        )
    lines.append("</table>")
    return "\n".join(lines)
