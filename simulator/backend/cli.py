"""``alleycat rule`` and ``alleycat standings``: the AWS side of Alleycat, on this machine."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from alleycat_rider.bounds import finite, whole
from alleycat_rider.errors import AlleycatError
from alleycat_rider.iot.devcerts import DEFAULT_DEV_DIR
from alleycat_rider.options import default_in_help
from alleycat_rider.plural import counted
from simulator.backend.rule import (
    DEFAULT_RETRY_FOR,
    DEFAULT_RULE_NAME,
    DEFAULT_RULE_TOPIC,
    ErrorAction,
    IotRule,
)
from simulator.backend.standings import DEFAULT_RESULTS_TOPIC
from simulator.backend.template import DEFAULT_KEY_TEMPLATE, KeyTemplate, TemplateError
from simulator.cli_options import StopSignal, aws_options, stopped_by_signals
from simulator.errors import SimulatorError
from simulator.mqtt.options import broker_options, broker_settings

F = TypeVar("F", bound=Callable[..., object])

#: The client ids (and certificate names) of the two backend services.
RULE_CLIENT_ID = "alleycat-rule"
STANDINGS_CLIENT_ID = "alleycat-standings"
DEFAULT_STREAM = "alleycat"
DEFAULT_ERROR_FILE = Path("alleycat-rule-errors.jsonl")


def say(line: str) -> None:
    """One line of news on stderr."""
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Our errors as one line and exit 1, never a traceback."""
    try:
        yield
    except (SimulatorError, AlleycatError) as exc:
        raise click.ClickException(str(exc)) from None


def run_options(what: str) -> Callable[[F], F]:
    """``--duration``, ``--status-interval`` and ``--json`` (printing ``what``)."""

    def decorate(command: F) -> F:
        options = [
            click.option(
                "--duration",
                type=finite(0, min_open=True),
                default=None,
                help="Stop after this many seconds.",
                **default_in_help("run until Ctrl-C"),
            ),
            click.option(
                "--status-interval",
                type=finite(0),
                default=10.0,
                show_default=True,
                help="Seconds between status lines on stderr (0: none).",
            ),
            click.option(
                "--json", "as_json", is_flag=True, help=f"Print {what} as JSON on stdout."
            ),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _client_map(path: Path | None) -> dict[str, int] | None:
    """``--client-map``'s mapping, or a usage error saying what is wrong with the file."""
    from simulator.backend.standings import load_client_map

    if path is None:
        return None
    try:
        return load_client_map(path)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--client-map") from None


def _client_map_from_iot(o: dict[str, Any]) -> dict[str, int]:
    """Thing name -> racer id from IoT (``alleycat provision --racer-id`` records it)."""
    import boto3

    from alleycat_rider.iot.provision import aws_errors, racers_of_things

    # moto serves IoT and Kinesis on one endpoint; AWS_ENDPOINT_URL_IOT names another one.
    endpoint_url = os.environ.get("AWS_ENDPOINT_URL_IOT") or o["endpoint_url"]
    with aws_errors("open an AWS session"):
        session = boto3.Session(profile_name=o["profile"], region_name=o["region"])
        iot = session.client("iot", endpoint_url=endpoint_url)
    racers = racers_of_things(iot)
    if not racers:
        raise click.ClickException(
            "no IoT thing has a racerId attribute: provision the bikes with "
            "`alleycat provision --racer-id`, or pass --client-map"
        )
    say(f"standings: {counted(len(racers), 'bike')} and their racers from IoT")
    return racers


def _template(ctx: click.Context, param: click.Parameter, value: str) -> KeyTemplate:
    try:
        return KeyTemplate.parse(value)
    except TemplateError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def status_loop(
    stop: threading.Event, interval: float, line: Callable[[], str], *, until: float | None
) -> None:
    """Say ``line()`` every ``interval`` seconds until ``stop`` (or the ``until`` moment)."""
    next_line = time.monotonic() + interval
    while not stop.wait(0.1):
        now = time.monotonic()
        if until is not None and now >= until:
            stop.set()
            break
        if interval > 0 and now >= next_line:
            say(line())
            next_line = now + interval


EXAMPLES_RULE = """
\b
Examples:
  # The rule of `alleycat stack`, by hand: mosquitto with mutual TLS into moto or kinesalite
  alleycat rule --endpoint-url http://127.0.0.1:4567 --create-stream
\b
  # Keyed by racer instead of by time, with the sender stamped on each record
  alleycat rule --partition-key '${racerId}' --stamp-client-id --endpoint-url http://127.0.0.1:4567
"""


@click.command(epilog=EXAMPLES_RULE)
@broker_options(RULE_CLIENT_ID)
@click.option(
    "--topic",
    default=DEFAULT_RULE_TOPIC,
    show_default=True,
    help="The rule's topic (SELECT * FROM 'TOPIC'); TOPIC/<client id> is read too.",
)
@click.option("--stream", default=DEFAULT_STREAM, show_default=True, help="Kinesis stream.")
@aws_options
@click.option("--create-stream", is_flag=True, help="Create the stream if it does not exist.")
@click.option("--shards", type=whole(1, 500), default=1, show_default=True, help="Of a new stream.")
@click.option(
    "--partition-key",
    default=DEFAULT_KEY_TEMPLATE,
    show_default=True,
    callback=_template,
    help="IoT substitution template: ${timestamp()}, ${newuuid()}, ${topic()}, ${clientid()}, "
    "or a field such as ${racerId}.",
)
@click.option(
    "--stamp-client-id",
    is_flag=True,
    help="Add the sender's client id to each record as clientId "
    "(SELECT *, clientid() AS clientId).",
)
@click.option(
    "--error-action",
    "error_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_ERROR_FILE,
    show_default=True,
    help="JSON-lines file that takes what the stream refuses, in IoT's error-action format.",
)
@click.option(
    "--retry-for",
    type=finite(0, 3600),
    default=DEFAULT_RETRY_FOR,
    show_default=True,
    help="Seconds a refused record is retried before the error action takes it "
    "(0: none, as IoT Core).",
)
@click.option("--rule-name", default=DEFAULT_RULE_NAME, show_default=True)
@run_options("the final counts")
def rule(**options: Any) -> None:
    """Stand in for the IoT rule: every message on the broker becomes a Kinesis record.

    Subscribes with QoS 1 in a persistent session (messages published while the rule is down
    arrive when it is back) and acknowledges each message only once the stream or the error
    action has it. At the end it prints what it received, wrote, retried and sent to the error
    action; what it had not finished is not acknowledged, and the broker delivers it again.
    """
    stopped_by = StopSignal()
    with one_line_errors():
        counts = run_rule_command(stopped_by, **options)
    if options["as_json"]:
        print(json.dumps(counts))
    else:
        from simulator.backend.services import describe

        numbers = {k: v for k, v in counts.items() if k != "error_action_file"}
        say(f"rule: {describe(numbers)} (error action: {counts['error_action_file']})")
    stopped_by.exit_if_interrupted()


def run_rule_command(stopped_by: StopSignal, **o: Any) -> dict[str, Any]:
    """``alleycat rule`` without the printing; returns the final counts.

    Args:
        stopped_by: Notes the signal that stops the run, for the exit status.
        **o: The command's options.
    """
    from simulator.backend.services import open_stream, rule_link, run_rule

    settings = broker_settings(o)
    sink = open_stream(
        stream=o["stream"], region=o["region"], profile=o["profile"],
        endpoint_url=o["endpoint_url"], create_stream=o["create_stream"], shards=o["shards"],
    )  # fmt: skip
    error_action = ErrorAction(o["error_file"], rule_name=o["rule_name"], stream=o["stream"])
    iot_rule = IotRule(
        sink,
        stream=o["stream"],
        key=o["partition_key"],
        error_action=error_action,
        rule_topic=o["topic"],
        stamp_client_id=o["stamp_client_id"],
        retry_for=o["retry_for"],
    )
    topics = [o["topic"], o["topic"].rstrip("/") + "/+"]
    stop = threading.Event()
    try:
        with stopped_by.watch(stop):
            link = rule_link(settings, iot_rule, topics, say=say)
            link.start()
            say(f"rule: {' and '.join(topics)} -> stream {o['stream']} ({sink.endpoint})")
            until = None if o["duration"] is None else time.monotonic() + o["duration"]
            status = threading.Thread(
                target=status_loop,
                args=(stop, o["status_interval"], lambda: _rule_line(iot_rule)),
                kwargs={"until": until},
                daemon=True,
            )
            status.start()
            run_rule(iot_rule, link, stop)
    finally:
        iot_rule.close()
        sink.close()
    if iot_rule.fatal:
        say(f"rule: the stream refused writes: {iot_rule.fatal}")
    return {**iot_rule.counts.to_dict(), "error_action_file": str(o["error_file"])}


def _rule_line(iot_rule: IotRule) -> str:
    c = iot_rule.counts
    return (
        f"rule: received {c.received:,}, written {c.written:,}, retried {c.retried:,}, "
        f"error action {c.error_action:,}, pending {c.pending:,}"
    )


EXAMPLES_STANDINGS = """
\b
Examples:
  alleycat standings --endpoint-url http://127.0.0.1:4567
\b
  # Survive restarts, and refuse bikes riding as someone else
  alleycat standings --state standings.db --client-map bikes.json --endpoint-url ...
\b
  # The same against AWS: bikes provisioned with --racer-id, racers read from IoT
  alleycat standings --stream alleycat --client-map-from-iot --region eu-west-1
"""


@click.command(epilog=EXAMPLES_STANDINGS)
@broker_options(STANDINGS_CLIENT_ID)
@click.option("--stream", default=DEFAULT_STREAM, show_default=True, help="Kinesis stream.")
@aws_options
@click.option(
    "--from",
    "start",
    type=click.Choice(["latest", "trim-horizon"]),
    default="latest",
    show_default=True,
    help="Where to start on shards without a stored position.",
)
@click.option(
    "--results-topic", default=DEFAULT_RESULTS_TOPIC, show_default=True, help="Publish here."
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keep state in this SQLite file, so a restart carries on.",
    **default_in_help("in memory"),
)
@click.option(
    "--client-map",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help='JSON object of client id to racer id ({"bike-1": 101}): reject a message whose '
    "racer is not its sender's (needs `alleycat rule --stamp-client-id`).",
)
@click.option(
    "--client-map-from-iot",
    is_flag=True,
    help="Take the client map from IoT instead: each thing's racerId attribute (`alleycat "
    "provision --racer-id` sets it), the thing's name being the bike's client id.",
)
@run_options("the final report")
def standings(**options: Any) -> None:
    """Stand in for the standings backend: best output per rider, race and class, published back.

    Reads every shard of the stream (new ones after a reshard too), counts each ride message
    once by uuid, and publishes the original results message on the results topic at most once
    a second per race with news, and at once when a race's final messages arrive.
    """
    stopped_by = StopSignal()
    with one_line_errors():
        report = run_standings_command(stopped_by, **options)
    if options["as_json"]:
        print(json.dumps(report))
    else:
        say(_standings_line(report))
    stopped_by.exit_if_interrupted()


def run_standings_command(stopped_by: StopSignal, **o: Any) -> dict[str, Any]:
    """``alleycat standings`` without the printing; returns the final report.

    Args:
        stopped_by: Notes the signal that stops the run, for the exit status.
        **o: The command's options.
    """
    from simulator.backend.services import open_stream, run_standings, standings_link, tail_for
    from simulator.backend.standings import Standings, StandingsStore

    client_map = _client_map(o["client_map"])
    if o["client_map_from_iot"]:
        if client_map is not None:
            raise click.UsageError("choose --client-map or --client-map-from-iot, not both")
        client_map = _client_map_from_iot(o)
    settings = broker_settings(o)
    sink = open_stream(
        stream=o["stream"], region=o["region"], profile=o["profile"],
        endpoint_url=o["endpoint_url"], create_stream=False, shards=1,
    )  # fmt: skip
    client = sink._client
    link = standings_link(settings, say=say)
    backend = Standings(
        lambda payload: link.publish(o["results_topic"], payload),
        store=StandingsStore(o["state"]),
        client_map=client_map,
    )
    tail = tail_for(
        backend,
        client,
        o["stream"],
        start="LATEST" if o["start"] == "latest" else "TRIM_HORIZON",
        say=say,
        where="the state" if o["state"] is None else str(o["state"]),
    )
    stop = threading.Event()
    try:
        with stopped_by.watch(stop):
            link.start()
            say(f"standings: stream {o['stream']} ({sink.endpoint}) -> {o['results_topic']}")
            until = None if o["duration"] is None else time.monotonic() + o["duration"]
            status = threading.Thread(
                target=status_loop,
                args=(stop, o["status_interval"], lambda: _standings_line(backend.report())),
                kwargs={"until": until},
                daemon=True,
            )
            status.start()
            run_standings(backend, tail, link, stop)
    finally:
        sink.close()
    return backend.report()


def _standings_line(report: dict[str, Any]) -> str:
    return (
        f"standings: records {report['records']:,}, messages {report['messages']:,}, "
        f"duplicates {report['duplicates']:,}, rejected {report['rejected']:,}, "
        f"malformed {report['malformed']:,}, published {report['published']:,}, "
        f"races {report['races']:,}, riders {report['riders']:,}, {_lag(report['lag_ms'])}"
    )


def _lag(lag_ms: int | None) -> str:
    """``lag 120 ms``; ``lag unknown`` until every shard has been read once."""
    return "lag unknown" if lag_ms is None else f"lag {lag_ms:,} ms"


EXAMPLES_STACK = """
\b
Examples:
  alleycat stack                          # mosquitto on 8883, moto on 4567, stream alleycat
  alleycat stack --kinesis kinesalite --shards 4 --json
  alleycat stack --stamp-client-id --client-map bikes.json   # bikes cannot ride as another
"""


@click.command(epilog=EXAMPLES_STACK)
@click.option("--mqtt-port", type=whole(1, 65535), default=8883, show_default=True)
@click.option("--kinesis-port", type=whole(1, 65535), default=4567, show_default=True)
@click.option(
    "--kinesis",
    type=click.Choice(["moto", "kinesalite"]),
    default="moto",
    show_default=True,
    help="The local Kinesis server: moto's (pip) or kinesalite (npm, needs Node.js).",
)
@click.option("--stream", default=DEFAULT_STREAM, show_default=True, help="The stream to make.")
@click.option("--shards", type=whole(1, 100), default=1, show_default=True)
@click.option(
    "--certs",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DEV_DIR,
    show_default=True,
    help="Development certificates; made here when missing.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".alleycat-stack"),
    show_default=True,
    help="Logs, the rule's error-action file and the standings state.",
)
@click.option(
    "--partition-key",
    default=DEFAULT_KEY_TEMPLATE,
    show_default=True,
    callback=_template,
    help="The rule's partition-key template.",
)
@click.option("--stamp-client-id", is_flag=True, help="The rule adds clientId to each record.")
@click.option(
    "--client-map",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Client id to racer id (JSON): standings reject riders riding as someone else.",
)
@click.option(
    "--shared-topic",
    is_flag=True,
    help="Let bikes publish on alleycat-publish itself too, not only on their own topic "
    "(weaker, as `provision --shared-topic`).",
)
@click.option(
    "--duration",
    type=finite(0, min_open=True),
    default=None,
    help="Stop after this many seconds.",
    **default_in_help("run until Ctrl-C"),
)
@click.option(
    "--status-interval",
    type=finite(0),
    default=10.0,
    show_default=True,
    help="Seconds between status lines when not on a terminal (0: none).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the endpoints as JSON when ready.")
def stack(**o: Any) -> None:
    """Run a whole Alleycat here: broker, Kinesis, stream, IoT rule and standings backend.

    Starts mosquitto with mutual TLS, a local Kinesis server and the stream, then the rule
    (MQTT into Kinesis), the standings backend (Kinesis back to the riders) and IoT Core's fleet
    provisioning (bikes with only the claim certificate enrol; templates in
    WORKDIR/provisioning-templates), prints the commands that use them and what goes through,
    and stops everything on Ctrl-C or SIGTERM.
    """
    from simulator.backend.stack import Stack, StackOptions

    client_map = _client_map(o["client_map"])
    options = StackOptions(
        certs=o["certs"],
        workdir=o["workdir"],
        mqtt_port=o["mqtt_port"],
        kinesis_port=o["kinesis_port"],
        kinesis=o["kinesis"],
        stream=o["stream"],
        shards=o["shards"],
        partition_key=o["partition_key"].text,
        stamp_client_id=o["stamp_client_id"],
        client_map=client_map,
        shared_topic=o["shared_topic"],
    )
    running = Stack(options, say=say)
    stop = running.stop_event
    with one_line_errors(), stopped_by_signals(stop) as stopped_by:
        try:
            running.start()
            endpoints = running.endpoints()
            if o["as_json"]:
                print(json.dumps(endpoints), flush=True)
            else:
                print(_stack_commands(endpoints, running), flush=True)
            until = None if o["duration"] is None else time.monotonic() + o["duration"]
            _watch(running, until, o["status_interval"])
        finally:
            running.stop()
    for error in running.errors:
        say(f"stack: {error}")
    status = running.status()
    say(_stack_line(status))
    if running.errors:
        raise SystemExit(1)
    stopped_by.exit_if_interrupted()


def _stack_commands(endpoints: dict[str, Any], running: Any) -> str:
    import shlex

    from alleycat_rider.iot.certs_cli import ride_command

    kinesis = endpoints["kinesis"]
    aws = ["--stream", kinesis["stream"], "--endpoint-url", kinesis["endpoint_url"]]
    rides = [
        ride_command(
            running.pki,
            client_id,
            endpoints["mqtt"]["port"],
            device["racer_id"],
            spool=Path(device["spool"]),
        )
        + f" --qos 1 --topic {endpoints['topics']['rides']}/{client_id}"
        for client_id, device in endpoints["devices"].items()
    ]
    claim = endpoints["claim"]
    mqtt = endpoints["mqtt"]
    enrol = shlex.join(
        [
            "alleycat", "ride", "--endpoint", mqtt["host"], "--port", str(mqtt["port"]),
            "--ca", mqtt["ca"], "--claim-cert", claim["cert"], "--claim-key", claim["key"],
            "--fleet-template", claim["template"], "--serial-number", claim["serial_number"],
            "--racer-id", str(claim["racer_id"]), "--spool", claim["spool"], "--qos", "1",
        ]
    )  # fmt: skip
    return "\n".join(
        [
            "",
            "Alleycat is running. Ride a bike through it (a second one in another terminal):",
            *(f"  {line}" for line in rides),
            "A bike with only the claim certificate of a factory image enrols itself first:",
            f"  {enrol}",
            "Ride a fleet over MQTT through the rule, or straight into the stream; read it back:",
            "  "
            + shlex.join(
                [
                    "alleycat",
                    "simulate",
                    "--via",
                    "mqtt",
                    "--riders",
                    "100",
                    "--mqtt-port",
                    str(endpoints["mqtt"]["port"]),
                    "--ca",
                    endpoints["mqtt"]["ca"],
                    "--cert",
                    endpoints["fleet"]["cert"],
                    "--key",
                    endpoints["fleet"]["key"],
                ]
            ),  # fmt: skip
            f"  {shlex.join(['alleycat', 'simulate', '--riders', '100', *aws])}",
            f"  {shlex.join(['alleycat', 'verify', *aws])}",
            f"Standings go out on {endpoints['topics']['results']}; refused records go to "
            f"{endpoints['error_action_file']}. Ctrl-C stops everything.",
            "",
        ]
    )


def _watch(running: Any, until: float | None, interval: float) -> None:
    """Show the live status until the stack is stopped or ``until``."""
    stop = running.stop_event
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        with Live(Text(""), console=Console(stderr=True), refresh_per_second=2) as live:
            while not stop.wait(0.5):
                live.update(Text(_stack_line(running.status())))
                if until is not None and time.monotonic() >= until:
                    break
        return
    status_loop(stop, interval, lambda: _stack_line(running.status()), until=until)


def _stack_line(status: dict[str, Any]) -> str:
    rule_counts = status["rule"]
    report = status["standings"]
    if not rule_counts or not report:
        return "stack: stopped before it was running"
    return (
        f"stack: messages in {rule_counts['received']:,}, records written "
        f"{rule_counts['written']:,}, retried {rule_counts['retried']:,}, error action "
        f"{rule_counts['error_action']:,}, pending {rule_counts['pending']:,} | standings: "
        f"{report['messages']:,} read, {counted(report['duplicates'], 'duplicate')}, "
        f"{report['rejected']:,} rejected, {report['published']:,} published, "
        f"{counted(report['races'], 'race')}, {_lag(report['lag_ms'])}"
        + _enrolment(status.get("enrolment") or {})
    )


def _enrolment(counts: dict[str, int]) -> str:
    """`` | enrolment: 2 registered, 1 refused`` once a bike has tried; else nothing."""
    if not counts.get("certificates") and not counts.get("refused"):
        return ""
    return f" | enrolment: {counts['registered']:,} registered, {counts['refused']:,} refused"
