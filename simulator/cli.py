"""``alleycat simulate``: drive a fleet of virtual riders into a Kinesis stream."""

from __future__ import annotations

import inspect
import json
import signal
import textwrap
import time
from typing import Any

import click

from alleycat_rider.bounds import finite, whole
from simulator import build
from simulator.cli_options import (
    StopSignal,
    aws_options,
    capacity_problem,
    check_html,
    on_demand_options,
    parse_moment,
    ramp_option,
    write_html,
)
from simulator.engine.aggregation import BatchingMode, parse_batching
from simulator.engine.batching import (
    KINESIS_MAX_RECORD_BYTES,
    KINESIS_MAX_RECORDS,
    KINESIS_MAX_REQUEST_BYTES,
    MIB,
    BatchLimits,
)
from simulator.engine.capacity import CapacityMode, OnDemandPolicy
from simulator.engine.clock import Clock, ScaledClock, VirtualClock
from simulator.engine.fleet import FleetConfig, fleet_messages
from simulator.engine.keys import KEYLESS, STRATEGY_TRADE_OFFS, PartitionKeyStrategy
from simulator.engine.producer import ProducerConfig
from simulator.engine.runner import RunResult, Simulation, SimulationConfig
from simulator.engine.shards import LocalStream
from simulator.engine.sink import RecordDistribution
from simulator.errors import SimulatorError
from simulator.mqtt.options import mqtt_fleet_options
from simulator.report.live import run_with_progress
from simulator.report.timeline import RunTimeline
from simulator.sinks import DEFAULT_MAX_IN_FLIGHT, SinkOptions, make_dispatcher, open_sink


def _parse_start(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    return None if value is None else parse_moment(value).timestamp()


def _parse_batching(ctx: click.Context, param: click.Parameter, value: str) -> BatchingMode:
    try:
        return parse_batching(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


EXAMPLES = """
\b
Examples:
  # 1,000 riders for a race on the built-in stream: no AWS account needed
  alleycat simulate
\b
  # A minute of 1,200 riders on one shard, in virtual time, as JSON
  alleycat simulate --riders 1200 --shards 1 --duration 60 --fast --json
\b
  # The same run as a page with charts, to open in a browser (the report extra)
  alleycat simulate --riders 1200 --shards 1 --duration 60 --fast --html run.html
\b
  # Into a real stream (local or AWS), keyed by racer
  alleycat simulate --stream alleycat --endpoint-url http://127.0.0.1:4567 --partition-key racer
\b
  # Each rider on its own MQTT connection, through `alleycat stack`
  alleycat simulate --via mqtt --riders 100 --duration 60
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES)
@click.option(
    "--riders",
    type=whole(1),
    default=1000,
    show_default=True,
    help="Virtual riders; each sends one message per second.",
)
@click.option(
    "--duration",
    type=whole(1),
    default=300,
    show_default=True,
    help="Seconds of riding (300 is one race).",
)
@click.option(
    "--race-seconds",
    type=whole(1),
    default=300,
    show_default=True,
    help="Race length; races follow each other without a pause.",
)
@click.option(
    "--classes",
    type=whole(1, 6),
    default=6,
    show_default=True,
    help="Deal riders over class ids 1..N.",
)
@click.option(
    "--phase-spread",
    type=whole(0, 1000),
    default=1000,
    show_default=True,
    metavar="MS",
    help="Spread riders' send times over this part of each second "
    "(0 = all riders send on the whole second).",
)
@click.option(
    "--partition-key",
    "strategy",
    type=click.Choice([s.value for s in PartitionKeyStrategy]),
    default=PartitionKeyStrategy.RANDOM.value,
    show_default=True,
    help="How records are keyed onto shards (see below).",
)
@click.option(
    "--shards",
    type=whole(1),
    default=4,
    show_default=True,
    help="Shards of the built-in stream (or of one made by --create-stream).",
)
@click.option(
    "--capacity",
    type=click.Choice([m.value for m in CapacityMode]),
    default=CapacityMode.PROVISIONED.value,
    show_default=True,
    help="The stream's capacity mode (built-in, or made by --create-stream; see below).",
)
@on_demand_options
@ramp_option
@click.option(
    "--stream",
    default=None,
    metavar="NAME",
    help="Write to this Kinesis stream instead of the built-in model.",
)
@aws_options
@click.option(
    "--create-stream",
    is_flag=True,
    help="Create --stream if missing: --shards shards, or --capacity on-demand (with "
    "service-managed distribution for --partition-key auto).",
)
@click.option(
    "--max-record-size",
    type=whole(1024, 10240),
    default=None,
    metavar="KIB",
    help="--create-stream: the stream's largest record (MaxRecordSizeInKiB; default 1024).",
)
@click.option(
    "--max-in-flight",
    type=whole(1),
    default=DEFAULT_MAX_IN_FLIGHT,
    show_default=True,
    help="PutRecords requests in flight at once (real streams).",
)
@click.option(
    "--flush-interval",
    type=finite(0),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Send a partly filled batch after this long.",
)
@click.option(
    "--record-ttl",
    type=finite(0, min_open=True),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Drop (and count) a record not accepted within this long.",
)
@click.option(
    "--max-records",
    type=whole(1, KINESIS_MAX_RECORDS),
    default=500,
    show_default=True,
    help="Records per PutRecords request.",
)
@click.option(
    "--max-request-bytes",
    type=whole(1, KINESIS_MAX_REQUEST_BYTES),
    default=5 * MIB,
    show_default=True,
    help="Bytes per PutRecords request.",
)
@click.option(
    "--max-record-bytes",
    type=whole(1, KINESIS_MAX_RECORD_BYTES),
    default=MIB,
    show_default=True,
    help="Bytes per record, partition key included.",
)
@click.option(
    "--max-buffered",
    type=whole(1),
    default=50_000,
    show_default=True,
    help="Records held at most; when full, generation waits for the stream.",
)
@click.option(
    "--speed",
    type=finite(0, min_open=True),
    default=None,
    help="Run X times faster than real time.",
)
@click.option("--fast", is_flag=True, help="Run in virtual time, as fast as the CPU allows.")
@click.option("--seed", type=int, default=None, help="Make the run repeatable.")
@click.option(
    "--start-time",
    callback=_parse_start,
    default=None,
    metavar="TIME",
    help="Simulated start (epoch seconds or ISO 8601); default now.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the summary as one JSON object on stdout."
)
@click.option(
    "--batching",
    callback=_parse_batching,
    default="per-second",
    show_default=True,
    metavar="MODE",
    help="per-second (one record a message), buffered:SECONDS (newline-delimited JSON per "
    "shard) or kpl (KPL aggregation).",
)
@click.option(
    "--no-dashboard", is_flag=True, help="No live dashboard: a progress line every few seconds."
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    metavar="FILE",
    help="Also write the report as one HTML page, with charts, that opens offline "
    "(needs the report extra).",
)
@mqtt_fleet_options
def simulate(
    riders: int,
    duration: int,
    race_seconds: int,
    classes: int,
    phase_spread: int,
    strategy: str,
    shards: int,
    capacity: str,
    warm_throughput: float,
    scale_out_seconds: float,
    on_demand_shards: int,
    ramp: int,
    stream: str | None,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    create_stream: bool,
    max_record_size: int | None,
    max_in_flight: int,
    flush_interval: float,
    record_ttl: float,
    max_records: int,
    max_request_bytes: int,
    max_record_bytes: int,
    max_buffered: int,
    speed: float | None,
    fast: bool,
    seed: int | None,
    start_time: float | None,
    as_json: bool,
    batching: BatchingMode,
    no_dashboard: bool,
    html_path: str | None,
    **mqtt: Any,
) -> None:
    """Drive virtual riders into Kinesis with PutRecords batches.

    Each rider sends the Alleycat ride message once a second, at its own phase within the
    second. The producer packs PutRecords requests (at most 500 records, 5 MiB), sends a batch
    when it is full or FLUSH-INTERVAL has passed, retries only the failed entries with
    exponential backoff and jitter, and counts a record not accepted within RECORD-TTL as
    dropped. Its buffer is bounded: a stream that cannot keep up slows generation down.

    Without --stream it writes to a built-in model of a Kinesis stream: SHARDS shards split as
    CreateStream splits them, MD5 routing, and 1,000 records/s and 1 MiB/s per shard, so it
    throttles where Kinesis would. No AWS account is needed.

    --capacity on-demand starts the built-in stream at 4 MiB/s on ON-DEMAND-SHARDS shards and
    splits shards toward twice the highest write rate it has accepted, SCALE-OUT-SECONDS after
    seeing it; until then, load above its shards' limits throttles. on-demand-advantage adds
    WARM-THROUGHPUT MiB/s from the start. Per-shard limits hold in every mode: one hot key still
    throttles. --ramp spreads the riders' start (a race start) over that many seconds.

    \b
    Examples:
      alleycat simulate --fast --riders 5000 --capacity on-demand --partition-key auto
      alleycat simulate --fast --riders 3000 --capacity on-demand --ramp 60
      alleycat simulate --stream rides --create-stream --capacity on-demand --partition-key auto

    Partition keys (--partition-key), and what each trades:
    """
    if speed is not None and fast:
        raise click.UsageError("choose --speed or --fast, not both")
    if html_path is not None:
        if mqtt["via"] == "mqtt":
            raise click.UsageError("--html reports runs into Kinesis; not with --via mqtt")
        check_html(html_path)
    mode = CapacityMode(capacity)
    shards_given = click.get_current_context().get_parameter_source("shards")
    if mode.on_demand and shards_given is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError(
            "--shards sizes a provisioned stream; an on-demand one starts at --on-demand-shards"
            " and splits by itself"
        )
    problem = capacity_problem(
        strategy=strategy,
        # A real stream that exists is checked when it is opened.
        on_demand=mode.on_demand or (stream is not None and not create_stream),
        advantage=mode is CapacityMode.ON_DEMAND_ADVANTAGE,
        batching=batching.label,
        warm_throughput=warm_throughput,
    )
    if problem is not None:
        raise click.UsageError(problem)
    try:
        policy = OnDemandPolicy(
            initial_shards=on_demand_shards,
            scale_out_seconds=scale_out_seconds,
            warm_throughput_mibps=warm_throughput,
        )
        limits = BatchLimits(
            max_records=max_records,
            max_request_bytes=max_request_bytes,
            max_record_bytes=max_record_bytes,
        )
        config = SimulationConfig(
            fleet=FleetConfig(
                riders=riders,
                classes=classes,
                race_seconds=race_seconds,
                phase_spread_ms=phase_spread,
                ramp_seconds=ramp,
            ),
            duration=duration,
            strategy=PartitionKeyStrategy(strategy),
            producer=ProducerConfig(
                limits=limits,
                flush_interval=flush_interval,
                record_ttl=record_ttl,
                max_buffered=max(max_buffered, max_records),
            ),
            seed=seed,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if mqtt["via"] == "mqtt":
        from simulator.mqtt.cli import run_mqtt_fleet

        run_mqtt_fleet(
            fleet_config=config.fleet,
            duration=duration,
            seed=seed,
            as_json=as_json,
            o={
                **mqtt,
                "fast": fast,
                "speed": speed,
                "start_time": start_time,
                "no_dashboard": no_dashboard,
            },
        )
        return
    sink_options = SinkOptions(
        stream=stream,
        shards=shards,
        region=region,
        profile=profile,
        endpoint_url=endpoint_url,
        create_stream=create_stream,
        max_in_flight=max_in_flight,
        capacity=mode,
        distribution=(
            RecordDistribution.AUTO
            if PartitionKeyStrategy(strategy) in KEYLESS
            else RecordDistribution.USER_PARTITION_KEY
        ),
        policy=policy,
        max_record_size_kib=max_record_size,
        max_record_bytes=max_record_bytes,
    )
    try:
        sink = open_sink(sink_options)  # may wait for a new stream to become ACTIVE
    except SimulatorError as exc:
        raise click.ClickException(str(exc)) from None
    clock: Clock
    if fast:
        clock = VirtualClock(time.time() if start_time is None else start_time)
    else:
        clock = ScaledClock(start_time, speed=speed or 1.0)
    try:
        dispatcher = make_dispatcher(sink, clock, sink_options)
        simulation = Simulation(config, sink, clock, dispatcher=dispatcher, batching=batching)
        # Ctrl-C or SIGTERM: stop generating and drain; a second one stops at once. The run
        # loop sees the request between passes, so no record is caught half-way.
        with StopSignal().watch(
            simulation.stop,
            say="stopping: sending what is buffered (Ctrl-C again to stop at once)",
            again_stops_at_once=True,
        ) as stopped_by:
            timeline = None
            if html_path is not None:
                timeline = RunTimeline(simulation.stats, simulation.start)
            result = run_with_progress(
                simulation,
                json_output=as_json,
                dashboard=not no_dashboard,
                batching=batching.label,
                observe=timeline,
            )
    except SimulatorError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        sink.close()
    summary = _summary(simulation, result)
    # Packed records (--batching buffered or kpl) carry several messages each.
    summary["batching"] = batching.label
    summary["messages_delivered"] = result.stats.messages_delivered
    summary["messages_generated"] = simulation.batching.messages
    # A run stopped early (Ctrl-C, an error) rode fewer seconds than --duration: whole seconds
    # every rider finished.
    summary["ridden_seconds"] = ridden_seconds(
        simulation.batching.messages, riders=riders, duration=duration, ramp=ramp
    )
    if stopped_by.signum is not None:
        summary["stopped_by"] = signal.Signals(stopped_by.signum).name  # SIGINT or SIGTERM
    if as_json:
        click.echo(json.dumps(summary))
    else:
        from rich.console import Console

        from simulator.report.summary import summary_table

        Console().print(summary_table(summary))
    if timeline is not None and html_path is not None:
        from simulator.report.html import simulate_page

        timeline.finish(result.stats, simulation.clock.now())
        write_html(html_path, simulate_page(summary, timeline.to_dict()))
    if result.error is not None:
        raise click.ClickException(str(result.error))
    stopped_by.exit_if_interrupted()


simulate.help = inspect.cleandoc(simulate.help or "") + "".join(
    "\n\n\b\n" + textwrap.fill(f"{strategy.value}: {trade_off}", 78, subsequent_indent="  ")
    for strategy, trade_off in STRATEGY_TRADE_OFFS.items()
)


def ridden_seconds(messages: int, *, riders: int, duration: int, ramp: int) -> int:
    """The whole seconds of the run every rider who had joined rode, from the messages made
    (a fleet makes each second's messages before the next second's)."""
    done, todo = 0, duration
    while done < todo:  # the most seconds whose messages were all made
        middle = (done + todo + 1) // 2
        if fleet_messages(riders, middle, ramp) <= messages:
            done = middle
        else:
            todo = middle - 1
    return done


def _summary(simulation: Simulation, result: RunResult) -> dict[str, Any]:
    config = simulation.config
    wall = round(time.monotonic() - simulation.started_wall, 3)
    summary: dict[str, Any] = {
        "stream": simulation.stream.name,
        "partition_key": config.strategy.value,
        "riders": config.fleet.riders,
        "duration": config.duration,
        "interrupted": result.interrupted,
        "error": None if result.error is None else str(result.error),
        "wall_seconds": wall,
        "simulated_seconds": round(simulation.clock.now() - simulation.start, 3),
        "build": build(),
    }
    summary.update(result.stats.summary())
    sink = simulation.sink
    if isinstance(sink, LocalStream):
        summary["capacity"] = sink.capacity.value
        first = int(simulation.start)
        summary["scale_outs"] = [
            {"at_second": second - first, "open_shards": count} for second, count in sink.scale_outs
        ]
    # Records the stream spreads itself keep no order; keyed ones keep it per key and shard.
    summary["order_kept"] = simulation.stream.distribution is RecordDistribution.USER_PARTITION_KEY
    delivered = result.stats.delivered
    summary["records_per_wall_second"] = round(delivered / wall, 1) if wall else None
    return summary
