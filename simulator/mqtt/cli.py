"""``alleycat simulate --via mqtt``: the options and the run, with its progress and summary."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from typing import Any

import click

from alleycat_rider.errors import AlleycatError
from alleycat_rider.plural import counted
from simulator.cli_options import stopped_by_signals
from simulator.engine.fleet import Fleet, FleetConfig
from simulator.mqtt.fleet import (
    MAX_PUBLISHES_PER_SECOND,
    MqttFleet,
    MqttFleetOptions,
)
from simulator.mqtt.options import broker_settings, fleet_brokers, source_addresses

#: Seconds between progress lines.
PROGRESS_EVERY = 5.0


def run_mqtt_fleet(
    *, fleet_config: FleetConfig, duration: int, seed: int | None, as_json: bool, o: dict[str, Any]
) -> None:
    """Ride the fleet over MQTT in real time and print the summary."""
    if o["fast"] or o["speed"] is not None:
        raise click.UsageError("--via mqtt rides in real time: drop --fast and --speed")
    brokers = fleet_brokers(o)
    sources = source_addresses(o["source_addresses"])
    try:
        # Each rider gets its own id; the first broker stands for them all in the settings.
        host, port = brokers[0]
        settings = broker_settings(
            {**o, "mqtt_endpoint": host, "mqtt_port": port}, client_id="fleet"
        )
    except AlleycatError as exc:
        raise click.ClickException(str(exc)) from None
    rng = random.Random(seed)
    start = time.time() if o["start_time"] is None else o["start_time"]
    fleet = Fleet(
        fleet_config,
        start=max(start, time.time()),
        duration=duration,
        keyer=lambda riders, _stamps: [("", None)] * len(riders),
        rng=rng,
    )
    try:
        run = MqttFleet(
            fleet,
            MqttFleetOptions(
                settings=settings,
                topic=o["topic"],
                qos=o["qos"],
                client_id_prefix=o["client_id_prefix"],
                connect_rate=o["connect_rate"],
                brokers=tuple(brokers),
                source_addresses=sources,
                certs_dir=o["certs_dir"],
                client=o["mqtt_client"],
            ),
        )
    except AlleycatError as exc:
        raise click.ClickException(str(exc)) from None
    started = time.monotonic()
    worker = threading.Thread(target=run.run, name="mqtt-fleet", daemon=True)
    with stopped_by_signals(
        run.stopped, say="stopping: waiting for what is in flight"
    ) as stopped_by:
        worker.start()
        if sys.stderr.isatty() and not o["no_dashboard"]:
            _watch_live(run, worker, started)
        while worker.is_alive():
            worker.join(PROGRESS_EVERY)
            if worker.is_alive():
                print(_progress(run, time.monotonic() - started), file=sys.stderr, flush=True)
    summary = run.summary()
    summary["elapsed_s"] = round(time.monotonic() - started, 3)
    summary["per_connection_limit"] = MAX_PUBLISHES_PER_SECOND
    if as_json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
    if summary["generated"] and not summary["connects"]:
        reason = summary["connect_failure_reasons"][:1] or ["no connection"]
        raise click.ClickException(f"no rider could connect: {reason[0]}")
    stopped_by.exit_if_interrupted()


def _watch_live(run: MqttFleet, worker: threading.Thread, started: float) -> None:
    """A live panel on the terminal (stderr), redrawn twice a second, until the run ends."""
    from rich.console import Console
    from rich.live import Live

    from simulator.mqtt.panel import PanelState, render_panel

    console = Console(stderr=True)
    before: PanelState | None = None

    def panel() -> Any:
        nonlocal before
        now = time.monotonic()
        state = PanelState.take(run, at=now, elapsed=now - started)
        shown = render_panel(state, before, console.width)
        if before is None or now - before.at >= 2.0:  # rates over the last few seconds
            before = state
        return shown

    with Live(panel(), console=console, refresh_per_second=2) as live:
        while worker.is_alive():
            worker.join(0.5)
            live.update(panel())


def _progress(run: MqttFleet, elapsed: float) -> str:
    c = run.counts
    return (
        f"{elapsed:5.0f} s  connections {run.open_connections:,}/{len(run.riders):,}  "
        f"generated {c.generated:,}  acked {c.acked:,}  sent {c.sent_unacknowledged:,}  "
        f"in flight {run.in_flight:,}  held {run.held:,}  dropped {c.dropped:,}  "
        f"reconnects {c.reconnects:,}"
    )


def summary_table(s: dict[str, Any]) -> Any:
    """The summary of ``simulate --via mqtt`` (and of ``locust --via mqtt``) as a table."""
    from rich.table import Table

    title = f"MQTT fleet: {counted(s['riders'], 'rider')}, QoS {s['qos']}"
    table = Table(title=title, show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    rows = [
        ("generated", s["generated"]),
        ("acked (PUBACK)" if s["qos"] == 1 else "sent (QoS 0, no ack)",
         s["acked"] if s["qos"] == 1 else s["sent_unacknowledged"]),
        ("dropped", s["dropped"]),
        ("in flight at the end", s["in_flight"]),
        ("held for offline riders at the end", s["held"]),
        ("publishes (after being held)", f"{s['published']:,} ({s['resent']:,})"),
        ("failed publishes", s["failed"]),
        ("connections", f"{s['connects']:,} ({s['connect_failures']:,} failed attempts)"),
        ("reconnects / disconnects", f"{s['reconnects']:,} / {s['disconnects']:,}"),
        ("connect time p50 / p99",
         f"{s['connect_ms']['p50']:.0f} / {s['connect_ms']['p99']:.0f} ms"),
    ]  # fmt: skip
    if s["qos"] == 1:
        lat = s["puback_latency_ms"]
        rows.append(
            ("publish to PUBACK p50 / p95 / p99",
             f"{lat['p50']:.0f} / {lat['p95']:.0f} / {lat['p99']:.0f} ms")
        )  # fmt: skip
    if s.get("riders_refused"):
        rows.append(("riders refused by the broker", s["riders_refused"]))
    if s.get("left"):
        rows.append(("riders that left (their Locust user stopped)", s["left"]))
    for name, value in rows:
        table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    return table


def _print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console

    Console().print(summary_table(s))
    for reason in s["connect_failure_reasons"]:
        print(f"connection failure: {reason}", file=sys.stderr)
