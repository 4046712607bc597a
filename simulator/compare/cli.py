"""``alleycat compare``: partition-key strategies or batching modes side by side."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any, TypeVar

import click
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from alleycat_rider.bounds import finite, whole
from alleycat_rider.plural import counted
from simulator.backend.template import KeyTemplate, TemplateError
from simulator.cli_options import check_html, on_demand_options, ramp_option, write_html
from simulator.compare.capacity import CapacityComparison, compare_capacities, parse_capacities
from simulator.compare.costs import DEFAULT_PRICES, Prices
from simulator.compare.ingest import (
    DEFAULT_IOT_PRICES,
    INGEST_PATHS,
    IngestFigures,
    IotPrices,
    recommend_ingest,
    run_iot_rule,
    run_sdk,
)
from simulator.compare.replay import Workload
from simulator.compare.runs import (
    Comparison,
    RunFigures,
    compare_batching,
    compare_strategies,
    usable_cpus,
)
from simulator.engine.aggregation import DEFAULT_BATCHING_MODES, BatchingMode, parse_batching
from simulator.engine.capacity import CapacityMode, OnDemandPolicy
from simulator.engine.fleet import fleet_messages
from simulator.engine.keys import KEYLESS, PartitionKeyStrategy
from simulator.engine.shards import SHARD_RECORDS_PER_SECOND
from simulator.errors import SimulatorError

_F = TypeVar("_F", bound=Callable[..., Any])

PRICING_PAGE = "https://aws.amazon.com/kinesis/data-streams/pricing/"
#: ``--batching`` with no value compares these.
ALL_MODES = ",".join(m.label for m in DEFAULT_BATCHING_MODES)
#: Columns compare's tables and notes take at most, however wide the terminal.
MAX_WIDTH = 80
#: Shading of a heat-map cell by peak offered load over the shard's limit.
SHADES = ((0.25, "░", "green"), (0.5, "▒", "green"), (0.8, "▓", "yellow"), (1.0, "█", "red"))


def _strategies(
    ctx: click.Context, param: click.Parameter, value: str
) -> list[PartitionKeyStrategy]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    choices = ", ".join(s.value for s in PartitionKeyStrategy)
    try:
        strategies = list(dict.fromkeys(PartitionKeyStrategy(n) for n in names))
    except ValueError:
        strategies = []
    if not strategies:
        raise click.BadParameter(f"{value!r}: give a comma list of {choices}")
    return strategies


def _modes(ctx: click.Context, param: click.Parameter, value: str | None) -> list[BatchingMode]:
    if value is None:
        return []
    try:
        return list(dict.fromkeys(parse_batching(m) for m in value.split(",") if m.strip()))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _ingest_paths(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str]:
    if value is None:
        return []
    paths = list(dict.fromkeys(p.strip() for p in value.split(",") if p.strip()))
    unknown = [p for p in paths if p not in INGEST_PATHS]
    if unknown or not paths:
        raise click.BadParameter(f"{value!r}: give a comma list of {', '.join(INGEST_PATHS)}")
    return paths


def _price(name: str, default: float, text: str) -> Callable[[_F], _F]:
    return click.option(
        f"--price-{name}",
        type=finite(0),
        default=default,
        show_default=True,
        metavar="USD",
        help=text,
    )


EXAMPLES = """
\b
Examples:
  # Every partition-key strategy, 1,000 riders for a race on 4 shards
  alleycat compare
\b
  # Synchronised bikes on 2 shards: where `time` keys pile up
  alleycat compare --strategies time,racer,balanced --shards 2 --phase-spread 0
\b
  # The same as a page with charts, each shard second by second (the report extra)
  alleycat compare --strategies time,racer,balanced --shards 2 --phase-spread 0 --html c.html
\b
  # Batching modes and their monthly cost, as CSV
  alleycat compare --batching --format csv
\b
  # The SDK against IoT Core's rule, one shard, with an error action
  alleycat compare --ingest sdk,iot-rule --riders 1200 --shards 1 --error-action
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES)
@click.option("--riders", type=whole(1), default=1000, show_default=True,
              help="Virtual riders, one message a second each.")  # fmt: skip
@click.option("--shards", type=whole(1, 1024), default=4, show_default=True,
              help="Shards of the built-in stream.")  # fmt: skip
@click.option("--duration", type=whole(1), default=300, show_default=True,
              help="Seconds of riding (virtual time).")  # fmt: skip
@click.option("--classes", type=whole(1, 6), default=6, show_default=True,
              help="Deal riders over class ids 1..N.")  # fmt: skip
@click.option("--phase-spread", type=whole(0, 1000), default=1000, show_default=True,
              metavar="MS", help="Spread riders' send times over this part of each second "
              "(0 = synchronised riders, all on the whole second).")  # fmt: skip
@click.option("--seed", type=int, default=1, show_default=True, help="The workload's seed.")
@ramp_option
@click.option("--strategies", callback=_strategies, show_default=True,
              default=",".join(s.value for s in PartitionKeyStrategy if s not in KEYLESS),
              help="Partition-key strategies to compare, comma-separated (auto is added "
              "with an on-demand --capacity).")  # fmt: skip
@click.option("--capacity", "capacities", default=None, metavar="MODES",
              help="Capacity modes: one (provisioned[:N], on-demand, on-demand-advantage) "
              "runs the strategies on that stream; several compare the modes, e.g. "
              "provisioned:4,on-demand,on-demand-advantage.")  # fmt: skip
@on_demand_options
@click.option("--batching", "modes", callback=_modes, is_flag=False, flag_value=ALL_MODES,
              default=None, metavar="[MODES]", help="Compare batching modes instead "
              f"(per-second, buffered:SECONDS, kpl); alone: {ALL_MODES}.")  # fmt: skip
@click.option("--partition-key", "strategy", default=PartitionKeyStrategy.BALANCED.value,
              type=click.Choice([s.value for s in PartitionKeyStrategy]), show_default=True,
              help="The strategy batching modes are compared with.")  # fmt: skip
@click.option("--format", "output", type=click.Choice(["table", "json", "csv"]),
              default="table", show_default=True, help="Output format.")  # fmt: skip
@click.option("--jobs", type=whole(0), default=0, show_default=True,
              help="Processes to run in; 0: one per CPU.")  # fmt: skip
@click.option("--html", "html_path", type=click.Path(dir_okay=False, writable=True),
              default=None, metavar="FILE", help="Also write the comparison as one HTML page, "
              "with charts, that opens offline (needs the report extra).")  # fmt: skip
@_price("shard-hour", DEFAULT_PRICES.shard_hour, "Provisioned: per shard-hour.")
@_price("put-units", DEFAULT_PRICES.put_units_million, "Provisioned: per million PUT units.")
@_price("on-demand-gb", DEFAULT_PRICES.on_demand_gb, "On-demand: per GB written.")
@_price("stream-hour", DEFAULT_PRICES.on_demand_stream_hour, "On-demand: per stream-hour.")
@_price("advantage-gb", DEFAULT_PRICES.advantage_gb,
        "On-demand Advantage: per GB written (a third party's figure).")  # fmt: skip
@click.option("--advantage-commitment", type=finite(0), show_default=True, metavar="MIBPS",
              default=DEFAULT_PRICES.advantage_commitment_mibps,
              help="On-demand Advantage: ingest billed at least (the account's "
              "commitment).")  # fmt: skip
@click.option("--ingest", "ingest", default=None, metavar="PATHS", callback=_ingest_paths,
              help="Compare ingestion paths instead: sdk (PutRecords batches), iot-rule (IoT "
              "Core's rule, one PutRecord per message); e.g. sdk,iot-rule.")  # fmt: skip
@click.option("--rule-key", default="${timestamp()}", show_default=True,
              help="--ingest iot-rule: the rule's partition-key template.")  # fmt: skip
@click.option("--rule-delay-ms", type=whole(0, 60_000), default=20, show_default=True,
              help="--ingest iot-rule: publish to the rule's put, in ms.")  # fmt: skip
@click.option("--error-action/--no-error-action", default=False, show_default=True,
              help="--ingest iot-rule: whether throttled records go to an error action "
              "(else they are lost).")  # fmt: skip
@_price("iot-connection-minutes", DEFAULT_IOT_PRICES.connection_minutes_million,
        "IoT Core: per million connection-minutes.")  # fmt: skip
@_price("iot-messages", DEFAULT_IOT_PRICES.messages_million,
        "IoT Core: per million messages (first billion a month; 5 KB steps).")  # fmt: skip
@_price("iot-rules", DEFAULT_IOT_PRICES.rules_million, "IoT Core: per million rules triggered.")
@_price("iot-actions", DEFAULT_IOT_PRICES.actions_million,
        "IoT Core: per million actions executed.")  # fmt: skip
def compare(
    riders: int,
    shards: int,
    duration: int,
    classes: int,
    phase_spread: int,
    seed: int,
    ramp: int,
    strategies: list[PartitionKeyStrategy],
    capacities: str | None,
    warm_throughput: float,
    scale_out_seconds: float,
    on_demand_shards: int,
    modes: list[BatchingMode],
    strategy: str,
    output: str,
    jobs: int,
    html_path: str | None,
    price_shard_hour: float,
    price_put_units: float,
    price_on_demand_gb: float,
    price_stream_hour: float,
    price_advantage_gb: float,
    advantage_commitment: float,
    ingest: list[str] | None,
    rule_key: str,
    rule_delay_ms: int,
    error_action: bool,
    price_iot_connection_minutes: float,
    price_iot_messages: float,
    price_iot_rules: float,
    price_iot_actions: float,
) -> None:
    """Run one seeded workload through each partition-key strategy and compare the shards.

    Every strategy gets the same messages on the same schedule, written to the built-in stream
    model (MD5 routing, 1,000 records/s and 1 MiB/s per shard) in virtual time, by the
    simulator's producer with its retries. The table shows each shard's share, the imbalance,
    the busiest shard's peak against its limit, throttling, latency and whether each rider's
    messages stay on one shard (their order), then a heat map and a recommendation.

    With --batching, compare batching modes instead: per-second sending, buffering N seconds
    on the client, and KPL aggregation, with their Kinesis records, PUT payload units, added
    latency and an estimated monthly cost (quoted us-east-1 prices; check them, and override
    them with the --price options).

    With --ingest sdk,iot-rule, compare the two ways rides reach the stream: the SDK's
    PutRecords batches, and IoT Core's rule putting one record per message keyed by --rule-key,
    never retrying (throttled records are lost, or go to an error action); with the monthly cost
    of the stream and of IoT Core (--price-iot-* override its prices).

    With --capacity provisioned:4,on-demand,on-demand-advantage, compare capacity modes: the
    workload through each mode with --partition-key, and through each on-demand mode with auto
    (the stream spreads records itself), with the shards used over time, throttling, latency,
    per-rider order and the monthly cost of each mode. One mode (--capacity on-demand) runs the
    strategies on that stream instead, auto among them. --ramp spreads the riders' start: how
    fast load arrives decides whether on-demand throttles. How the on-demand stream grows is
    partly assumed (see --scale-out-seconds, --on-demand-shards); the assumptions are printed
    under the table.

    \b
    Examples:
      alleycat compare --capacity provisioned:4,on-demand,on-demand-advantage
      alleycat compare --capacity on-demand --riders 5000 --ramp 60
      alleycat compare --capacity on-demand,on-demand-advantage --warm-throughput 10
    """
    workload = Workload(riders=riders, shards=shards, duration=duration, classes=classes,
                        phase_spread_ms=phase_spread, seed=seed, ramp_seconds=ramp)  # fmt: skip
    try:
        prices = Prices(
            shard_hour=price_shard_hour,
            put_units_million=price_put_units,
            on_demand_gb=price_on_demand_gb,
            on_demand_stream_hour=price_stream_hour,
            advantage_gb=price_advantage_gb,
            advantage_commitment_mibps=advantage_commitment,
        )
        policy = OnDemandPolicy(
            initial_shards=on_demand_shards,
            scale_out_seconds=scale_out_seconds,
            warm_throughput_mibps=warm_throughput,
        )
        specs = parse_capacities(capacities, shards) if capacities else []
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--capacity") from None
    if specs and (ingest or (modes and len(specs) > 1)):
        raise click.UsageError(
            "--capacity with --ingest, or several modes with --batching: compare one thing at "
            "a time (--batching takes one --capacity mode)"
        )
    if warm_throughput and not any(s.mode is CapacityMode.ON_DEMAND_ADVANTAGE for s in specs):
        raise click.UsageError("--warm-throughput needs on-demand-advantage in --capacity")
    jobs = jobs or usable_cpus()
    if html_path is not None:
        check_html(html_path)
    started = time.monotonic()
    if ingest:
        _only_one_comparison(modes)
        iot_prices = IotPrices(
            connection_minutes_million=price_iot_connection_minutes,
            messages_million=price_iot_messages,
            rules_million=price_iot_rules,
            actions_million=price_iot_actions,
        )
        try:
            KeyTemplate.parse(rule_key)
        except TemplateError as exc:
            raise click.BadParameter(str(exc), param_hint="--rule-key") from None
        runs = compare_ingest(
            workload, ingest, strategy=PartitionKeyStrategy(strategy), template=rule_key,
            delay_ms=rule_delay_ms, error_action=error_action, prices=prices,
            iot_prices=iot_prices,
        )  # fmt: skip
        wall = time.monotonic() - started
        recommendation = recommend_ingest(runs)
        if output == "json":
            click.echo(
                json.dumps(ingest_json(workload, runs, prices, iot_prices, recommendation, wall))
            )
        elif output == "csv":
            click.echo(rows_csv([ingest_row(f) for f in runs]), nl=False)
        else:
            view = render_ingest(workload, runs, prices, iot_prices, recommendation, wall)
            _console().print(view)
        if html_path is not None:
            report = ingest_json(workload, runs, prices, iot_prices, recommendation, wall)
            write_compare_html(html_path, report, [f.run for f in runs], batching=False)
        return
    if len(specs) > 1:
        try:
            capacity = compare_capacities(
                workload, specs, PartitionKeyStrategy(strategy), policy=policy, prices=prices,
                processes=jobs,
            )  # fmt: skip
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        except SimulatorError as exc:
            raise click.ClickException(str(exc)) from None
        wall = time.monotonic() - started
        if output == "json":
            click.echo(json.dumps(capacity_json(capacity, prices, wall)))
        elif output == "csv":
            click.echo(comparison_csv([r.run for r in capacity.runs]), nl=False)
        else:
            _console().print(render_capacity(capacity, prices, wall))
        if html_path is not None:
            report = capacity_json(capacity, prices, wall)
            write_compare_html(html_path, report, [r.run for r in capacity.runs], batching=False)
        return
    spec = None
    if specs:
        spec = specs[0]
        if spec.mode.on_demand:
            spec = replace(spec, policy=policy)
            if ctx_default(click.get_current_context(), "strategies"):
                strategies = [*strategies, PartitionKeyStrategy.AUTO]
        elif any(s in KEYLESS for s in strategies):
            raise click.UsageError(
                "auto needs an on-demand stream: --capacity on-demand (AWS refuses "
                "service-managed distribution on provisioned streams)"
            )
    elif any(s in KEYLESS for s in strategies):
        raise click.UsageError("auto needs an on-demand stream: add --capacity on-demand")
    try:
        if modes:
            key = PartitionKeyStrategy(strategy)
            if key in KEYLESS:
                raise click.UsageError(
                    "--partition-key auto cannot be used with --batching: AWS warns that "
                    "consumers may drop aggregated records on a stream that spreads records itself"
                )
            comparison = compare_batching(
                workload, key, modes, prices=prices, processes=jobs, spec=spec
            )
        else:
            comparison = compare_strategies(
                workload, strategies, prices=prices, processes=jobs, spec=spec
            )
    except SimulatorError as exc:
        raise click.ClickException(str(exc)) from None
    wall = time.monotonic() - started
    if output == "json":
        click.echo(json.dumps(comparison_json(comparison, prices, wall)))
    elif output == "csv":
        click.echo(comparison_csv(comparison.runs), nl=False)
    else:
        _console().print(render_comparison(comparison, prices, batching=bool(modes), wall=wall))
    if html_path is not None:
        report = comparison_json(comparison, prices, wall)
        write_compare_html(html_path, report, comparison.runs, batching=bool(modes))


def write_compare_html(
    path: str, report: dict[str, Any], runs: Sequence[RunFigures], *, batching: bool
) -> None:
    """Write the comparison's HTML page: ``report`` is the JSON ``--format json`` prints."""
    from simulator.report.html import compare_page

    offered = [f.offered_per_second for f in runs]
    curves = [f.latency_curve for f in runs]
    write_html(path, compare_page(report, offered, curves, batching=batching))


def _only_one_comparison(modes: list[BatchingMode]) -> None:
    """``--ingest`` compares paths: ``--batching`` and ``--strategies`` ask for another
    comparison, a usage error rather than an option silently ignored."""
    ctx = click.get_current_context()
    given = ctx.get_parameter_source("strategies") is click.core.ParameterSource.COMMANDLINE
    if modes or given:
        option = "--batching" if modes else "--strategies"
        raise click.UsageError(
            f"{option} and --ingest are two comparisons: run them one at a time (the sdk path "
            "uses --partition-key)"
        )


def compare_ingest(
    workload: Workload,
    paths: Sequence[str],
    *,
    strategy: PartitionKeyStrategy,
    template: str,
    delay_ms: int,
    error_action: bool,
    prices: Prices,
    iot_prices: IotPrices,
) -> list[IngestFigures]:
    """Record the workload once and run it through each path."""
    from simulator.compare.replay import record_workload

    recorded = record_workload(workload)
    runs = []
    for path in paths:
        if path == "sdk":
            runs.append(run_sdk(recorded, strategy, prices))
        else:
            runs.append(
                run_iot_rule(
                    recorded,
                    template=template,
                    delay_ms=delay_ms,
                    error_action=error_action,
                    prices=prices,
                    iot_prices=iot_prices,
                )  # fmt: skip
            )
    return runs


def ingest_json(
    workload: Workload,
    runs: Sequence[IngestFigures],
    prices: Prices,
    iot_prices: IotPrices,
    recommendation: str,
    wall: float,
) -> dict[str, Any]:
    """The ingestion comparison as one JSON object: one entry in ``runs`` per path."""
    rows = [ingest_row(f) for f in runs]
    return {
        "workload": asdict(workload),
        "prices_usd": asdict(prices),
        "iot_prices_usd": asdict(iot_prices),
        "wall_seconds": round(wall, 3),
        "runs": rows,
        "recommendation": recommendation,
    }


def render_ingest(
    workload: Workload,
    runs: Sequence[IngestFigures],
    prices: Prices,
    iot_prices: IotPrices,
    recommendation: str,
    wall: float,
) -> RenderableType:
    """One row per ingestion path, the prices, and the recommendation."""
    table = _table("Ingestion paths")
    table.add_column("path", no_wrap=True)
    table.add_column("% per\nshard")  # wraps between shares when the shards are many
    for name in ("peak/\nlimit", "throt-\ntled", "lost", "p50/p99\nms", "$/month"):
        table.add_column(name, justify="right", no_wrap=True)
    verdicts = Table.grid(padding=(0, 2))
    verdicts.add_column(no_wrap=True)
    verdicts.add_column()
    for f in runs:
        r = f.run
        table.add_row(
            f.path, _shares(r), f"{r.peak_load:.0%}", f"{r.throttled_share:.1%}", f"{f.lost:,}",
            f"{r.latency_p50_ms:,.0f}/{r.latency_p99_ms:,.0f}", f"{f.monthly_total:,.2f}",
        )  # fmt: skip
        verdicts.add_row(f"{f.path} ({f.key})", Text(r.verdict, "italic"))
        bill = f"stream ${r.cost.provisioned:,.2f}"
        if f.iot.total:
            bill += (
                f" + IoT Core ${f.iot.total:,.2f} (connectivity ${f.iot.connectivity:,.2f}, "
                f"messaging ${f.iot.messaging:,.2f}, rules ${f.iot.rules:,.2f}, actions "
                f"${f.iot.actions:,.2f})"
            )
        verdicts.add_row("", Text(bill + " a month", "dim"))
    note = Text(
        f"Monthly cost if this load ran all month (730 h): the stream provisioned "
        f"({counted(workload.shards, 'shard')} × ${prices.shard_hour}/shard-hour + "
        f"${prices.put_units_million}/M PUT units); IoT Core for iot-rule: "
        f"${iot_prices.connection_minutes_million}/M connection-minutes (every rider connected), "
        f"${iot_prices.messages_million}/M messages (first billion; "
        f"${iot_prices.messages_million_next_4b} next 4 billion, "
        f"${iot_prices.messages_million_over_5b} beyond; 5 KB steps), "
        f"${iot_prices.rules_million}/M rules triggered, ${iot_prices.actions_million}/M actions "
        "executed. Quoted us-east-1 prices, not fetched: check "
        "https://aws.amazon.com/iot-core/pricing/ and override with --price-iot-*. Standings "
        "published back to the bikes are not counted.",
        "dim",
    )
    ran = (
        f"Ran {counted(len(runs), 'path')} × {counted(workload.riders, 'rider')} × "
        f"{workload.duration:,} s on {counted(workload.shards, 'shard')}, seed {workload.seed}, "
        f"in {wall:.1f} s."
    )
    return Group(
        table, verdicts, Text(""), note,
        Text.assemble(("Recommendation: ", "bold"), recommendation), Text(ran, "dim"),
    )  # fmt: skip


def ctx_default(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` was left at its default."""
    return ctx.get_parameter_source(name) is click.core.ParameterSource.DEFAULT


def ingest_row(f: IngestFigures) -> dict[str, Any]:
    """One path's figures, the same in JSON, CSV and the table; each key means one thing.

    ``messages_offered`` is the workload's (the same for every path): ``messages_delivered``
    reached the stream, ``dropped`` did not, of which ``lost`` reached nothing and
    ``to_error_action`` the rule's error action. ``stream_cost`` is the stream's monthly bill,
    ``iot_cost`` IoT Core's, and ``monthly_total_usd`` the provisioned stream plus IoT Core (the
    table's $/month).
    """
    row: dict[str, Any] = {"path": f.path, "key": f.key, "messages_offered": f.offered}
    for name, value in run_row(f.run).items():
        if name == "messages":
            row["messages_delivered"] = value
        elif name == "cost":
            row["stream_cost"] = value
        else:
            row[name] = value
    row["lost"] = f.lost
    row["to_error_action"] = f.to_error_action
    row["iot_cost"] = {k: round(v, 2) for k, v in asdict(f.iot).items()}
    row["iot_cost"]["total"] = round(f.iot.total, 2)
    row["monthly_total_usd"] = round(f.monthly_total, 2)
    return row


def run_row(f: RunFigures) -> dict[str, Any]:
    """One run's figures as plain JSON values."""
    row = asdict(f)
    del row["offered_per_second"], row["latency_curve"]  # series for the HTML report
    row["throttled_share"] = round(f.throttled_share, 6)
    row["shard_share"] = [round(s, 6) for s in f.shard_share]
    row["imbalance"] = round(f.imbalance, 4)
    row["peak_load"] = round(f.peak_load, 4)
    row["riders_on_one_shard"] = round(f.riders_on_one_shard, 6)
    row["cost"] = {k: round(v, 2) for k, v in row["cost"].items()}
    return row


def comparison_json(comparison: Comparison, prices: Prices, wall: float) -> dict[str, Any]:
    """The whole comparison as one JSON object: one entry in ``runs`` per strategy or mode."""
    return {
        "workload": asdict(comparison.workload),
        "prices_usd": asdict(prices),
        "processes": comparison.processes,
        "wall_seconds": round(wall, 3),
        "runs": [run_row(f) for f in comparison.runs],
        "recommendation": comparison.recommendation,
    }


def comparison_csv(runs: Sequence[RunFigures]) -> str:
    """One CSV row per strategy or mode; per-shard figures in ``shard_N_*`` columns."""
    return rows_csv([run_row(f) for f in runs])


#: How a JSON row's dicts of monthly dollars are named as CSV columns.
_CSV_COSTS = {"cost": "monthly", "stream_cost": "stream_monthly", "iot_cost": "iot_monthly"}


def rows_csv(json_rows: Sequence[dict[str, Any]]) -> str:
    """The rows of the JSON output as CSV: per-shard lists in ``shard_N_*`` columns, costs in
    ``*_usd`` columns; the same figures, under the same names where they are flat."""
    rows = []
    for json_row in json_rows:
        row = dict(json_row)
        for name in ("shard_records", "shard_share", "peak_offered_per_s"):
            for i, value in enumerate(row.pop(name)):
                row[f"shard_{i}_{name.removeprefix('shard_')}"] = value
        for key, prefix in _CSV_COSTS.items():
            for name, value in row.pop(key, {}).items():
                row[f"{prefix}_{name}_usd"] = value
        if "scale_outs" in row:
            # "62:6 120:8": the second of each split and the open shards after it.
            row["scale_outs"] = " ".join(f"{s}:{count}" for s, count in row["scale_outs"])
        rows.append(row)
    out = io.StringIO()
    if rows:
        # Runs on an on-demand stream may end with more shards than others: every column of
        # every row, empty where a run has no such shard.
        columns = list(dict.fromkeys(name for row in rows for name in row))
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def render_comparison(
    comparison: Comparison, prices: Prices, *, batching: bool, wall: float | None = None
) -> RenderableType:
    """The comparison for a terminal: table, heat map or prices, and the recommendation."""
    w = comparison.workload
    messages = fleet_messages(w.riders, w.duration, w.ramp_seconds)
    parts: list[RenderableType] = []
    if batching:
        parts += [batching_table(comparison.runs), prices_note(prices, w.shards)]
    else:
        parts += [strategy_table(comparison.runs), heat_map(comparison.runs)]
    parts.append(Text.assemble(("Recommendation: ", "bold"), comparison.recommendation))
    if not batching and w.phase_spread_ms and any(f.strategy == "time" for f in comparison.runs):
        parts.append(
            Text(
                f"Riders here send at phases spread over {w.phase_spread_ms} ms; bikes that send "
                "on the whole second share timestamps: try --phase-spread 0 to see `time` keys "
                "then.",
                "yellow",
            )
        )
    runs = len(comparison.runs)
    what = counted(runs, "mode") if batching else counted(runs, "strategy", "strategies")
    stream = comparison.runs[0].stream if comparison.runs else ""
    where = f"an {stream} stream" if stream.startswith("on-demand") else counted(w.shards, "shard")
    ran = (
        f"{what} × {counted(w.riders, 'rider')} × {w.duration:,} s "
        f"({counted(messages, 'message')} each) on {where}, seed {w.seed}, "
        f"in {counted(comparison.processes, 'process', 'processes')}"
    )
    parts.append(Text(f"Ran {ran}" + (f" in {wall:.1f} s." if wall is not None else "."), "dim"))
    return Group(*parts)


def _console() -> Console:
    """The terminal, but no wider than :data:`MAX_WIDTH`: long notes stay readable."""
    console = Console()
    console.width = min(console.width, MAX_WIDTH)
    return console


def _table(title: str) -> Table:
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
    )


def _shares(f: RunFigures) -> str:
    if len(f.shard_share) <= 8:
        return " ".join(f"{s * 100:.0f}" for s in f.shard_share)
    return f"{min(f.shard_share):.1%}–{max(f.shard_share):.1%}"


def strategy_table(runs: Sequence[RunFigures]) -> RenderableType:
    """One row per strategy, then each strategy's verdict."""
    table = _table("Partition-key strategies")
    table.add_column("strategy", no_wrap=True)
    table.add_column("% per\nshard")  # wraps between shares when the shards are many
    headers = ("max/\nmean", "peak/\nlimit", "throt-\ntled", "retries", "dropped",
               "p50/p99\nms", "riders\n1 shard")  # fmt: skip
    for name in headers:
        table.add_column(name, justify="right", no_wrap=True)
    verdicts = Table.grid(padding=(0, 2))
    verdicts.add_column(no_wrap=True)
    verdicts.add_column()
    for f in runs:
        table.add_row(
            f.strategy,
            _shares(f),
            f"{f.imbalance:.2f}",
            f"{f.peak_load:.0%}",
            f"{f.throttled_share:.1%}",
            f"{f.retries:,}",
            f"{f.dropped:,}",
            f"{f.latency_p50_ms:,.0f}/{f.latency_p99_ms:,.0f}",
            f"{f.riders_on_one_shard:.0%}",
        )
        verdicts.add_row(f.strategy, Text(f.verdict, "italic"))
    return Group(table, verdicts, Text(""))


def heat_map(runs: Sequence[RunFigures], max_columns: int = 8) -> RenderableType:
    """Strategy × shard: each shard's peak offered records/s as a share of its limit.

    Up to ``max_columns`` shards get a labelled cell each; more shards get one shaded
    character each, in shard order, with the busiest and quietest shard's figures.
    """
    title = Text("Peak offered load per shard (% of 1,000 records/s; █ = at or over the limit)")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("strategy", no_wrap=True)
    count = max((len(f.peak_offered_per_s) for f in runs), default=0)
    if count <= max_columns:
        for i in range(count):
            table.add_column(f"{i}", justify="right", no_wrap=True)
        for f in runs:
            loads = [rate / SHARD_RECORDS_PER_SECOND for rate in f.peak_offered_per_s]
            table.add_row(f.strategy, *(_cell(load) for load in loads))
        return Group(title, table)
    table.add_column(f"shards 0..{count - 1}")
    table.add_column("busiest", justify="right", no_wrap=True)
    table.add_column("quietest", justify="right", no_wrap=True)
    for f in runs:
        loads = [rate / SHARD_RECORDS_PER_SECOND for rate in f.peak_offered_per_s]
        strip = Text()
        for load in loads:
            strip.append_text(_cell(load, width=1))
        table.add_row(f.strategy, strip, f"{max(loads):.0%}", f"{min(loads):.0%}")
    return Group(title, table)


def _cell(load: float, width: int = 2) -> Text:
    """A shaded heat-map cell; with ``width`` 1, only the shade."""
    shade, style = "·", "dim"
    if load > 0:
        for ceiling, char, colour in SHADES:
            shade, style = char, colour
            if load < ceiling:
                break
    if width == 1:
        return Text(shade, style)
    return Text(f"{shade * width} {load:.0%}", style)


def batching_table(runs: Sequence[RunFigures]) -> Table:
    """One row per batching mode: records, units, latency and monthly cost."""
    table = _table("Batching modes")
    table.add_column("mode", no_wrap=True)
    headers = ("Kinesis\nrecords", "PUT\nunits", "billed\nKB", "held s\np50/p99",
               "deliv. s\np50/p99", "$/month\nprov.", "$/month\non-dem.")  # fmt: skip
    for name in headers:
        table.add_column(name, justify="right", no_wrap=True)
    for f in runs:
        table.add_row(
            f.batching,
            f"{f.records:,}",
            f"{f.put_payload_units:,}",
            f"{f.billed_kilobytes:,}",
            f"{f.hold_p50_ms / 1000:.2f}/{f.hold_p99_ms / 1000:.2f}",
            f"{f.latency_p50_ms / 1000:.2f}/{f.latency_p99_ms / 1000:.2f}",
            f"{f.cost.provisioned:,.2f}",
            f"{f.cost.on_demand:,.2f}",
        )
    return table


def prices_note(prices: Prices, shards: int) -> Text:
    """The prices the costs were computed with, and where to check them."""
    return Text(
        "Monthly cost if this load ran all month (730 h). Provisioned: "
        f"{counted(shards, 'shard')} × ${prices.shard_hour} per shard-hour + "
        f"${prices.put_units_million} per million PUT "
        f"payload units (25 KB each). On-demand: ${prices.on_demand_gb} per GB written (each "
        f"record rounded up to 1 KB) + ${prices.on_demand_stream_hour} per stream-hour. "
        f"Quoted us-east-1 prices, not fetched: check {PRICING_PAGE} and override with --price-*. "
        "Delivery latency is per Kinesis record, from its oldest message.",
        "dim",
    )


def capacity_json(comparison: CapacityComparison, prices: Prices, wall: float) -> dict[str, Any]:
    """The capacity comparison as one JSON object: one entry in ``runs`` per mode and key."""
    rows = []
    for r in comparison.runs:
        row = run_row(r.run)
        row["shards_over_time"] = r.shards_over_time
        row["order_kept"] = r.order_kept
        row["monthly_usd"] = {k: round(v, 2) for k, v in asdict(r.cost).items()}
        rows.append(row)
    return {
        "workload": asdict(comparison.workload),
        "prices_usd": asdict(prices),
        "assumptions": asdict(comparison.policy),
        "processes": comparison.processes,
        "wall_seconds": round(wall, 3),
        "runs": rows,
        "recommendation": comparison.recommendation,
    }


def render_capacity(comparison: CapacityComparison, prices: Prices, wall: float) -> RenderableType:
    """One row per mode and key, the assumptions and prices, and the recommendation."""
    table = _table("Capacity modes")
    table.add_column("stream")  # on-demand-advantage may wrap at its hyphens
    table.add_column("key", no_wrap=True)
    for name in ("shards", "throt-\ntled", "dropped", "p50/p99\nms", "order", "$/month"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in comparison.runs:
        f = r.run
        table.add_row(
            r.spec.label, f.strategy, r.shards_over_time, f"{f.throttled_share:.1%}",
            f"{f.dropped:,}", f"{f.latency_p50_ms:,.0f}/{f.latency_p99_ms:,.0f}",
            "yes" if r.order_kept else "no", f"{r.cost.total:,.2f}",
        )  # fmt: skip
    p = comparison.policy
    w = comparison.workload
    assumptions = Text(
        f"On-demand, as modelled: starts at 4 MiB/s on {p.initial_shards} shards (the shard "
        f"count is assumed) and splits shards toward {p.headroom:g}× the highest write rate it "
        f"has accepted, {p.scale_out_seconds:g} s after seeing it (assumed: AWS does not "
        "publish it); until then load above its shards throttles. 1,000 records/s and 1 MiB/s "
        "per shard in every mode. Advantage starts with "
        f"{p.warm_throughput_mibps:g} MiB/s of warm throughput. Order: each rider's records on "
        "one shard, or on shards split from it.",
        "dim",
    )
    costs = Text(
        f"Monthly cost if this load ran all month (730 h). Provisioned: shards × "
        f"${prices.shard_hour}/shard-hour + ${prices.put_units_million}/M PUT units. "
        f"On-demand: ${prices.on_demand_stream_hour}/stream-hour + ${prices.on_demand_gb}/GB "
        f"(each record rounded up to 1 KB). Advantage: ${prices.advantage_gb}/GB (a third "
        f"party's figure), billed for at least {prices.advantage_commitment_mibps:g} MiB/s "
        "(the account's commitment, shared by its streams; its retrieval part is not counted). "
        f"Quoted us-east-1 prices checked 2026-12, not fetched: check {PRICING_PAGE} and "
        "override with --price-* and --advantage-commitment.",
        "dim",
    )
    ran = (
        f"Ran {counted(len(comparison.runs), 'run')} × {counted(w.riders, 'rider')} × "
        f"{w.duration:,} s"
        + (f" (joining over {w.ramp_seconds:,} s)" if w.ramp_seconds else "")
        + f", seed {w.seed}, in {counted(comparison.processes, 'process', 'processes')} "
        f"in {wall:.1f} s."
    )
    return Group(
        table, Text(""), assumptions, costs,
        Text.assemble(("Recommendation: ", "bold"), comparison.recommendation), Text(ran, "dim"),
    )  # fmt: skip
