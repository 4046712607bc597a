"""The options of ``alleycat simulate --via mqtt``, apart from its run: ``simulate`` stays light."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from alleycat_rider.iot.devcerts import DEFAULT_DEV_DIR, device_paths
from simulator.mqtt.fleet import DEFAULT_CONNECT_RATE

F = TypeVar("F", bound=Callable[..., object])

#: The certificate ``alleycat stack`` (and ``certs dev --client-id alleycat-fleet``) makes.
FLEET_CERT_NAME = "alleycat-fleet"


def mqtt_fleet_options(command: F) -> F:
    """The options only ``--via mqtt`` uses."""
    cert, key = device_paths(DEFAULT_DEV_DIR, FLEET_CERT_NAME)
    options = [
        click.option(
            "--via",
            type=click.Choice(["sdk", "mqtt"]),
            default="sdk",
            show_default=True,
            help="sdk: PutRecords straight into Kinesis. mqtt: each rider on its own MQTT "
            "connection to a broker (IoT Core, or `alleycat stack`), as real bikes.",
        ),
        click.option(
            "--mqtt-endpoint",
            default="127.0.0.1",
            show_default=True,
            help="--via mqtt: the broker (an AWS IoT data endpoint, or 127.0.0.1).",
        ),
        click.option("--mqtt-port", type=click.IntRange(1, 65535), default=8883, show_default=True),
        click.option(
            "--cert",
            type=click.Path(dir_okay=False, path_type=Path),
            default=cert,
            show_default=True,
            help="--via mqtt: the fleet's certificate (PEM).",
        ),
        click.option(
            "--key", type=click.Path(dir_okay=False, path_type=Path), default=key, show_default=True
        ),
        click.option(
            "--ca",
            type=click.Path(dir_okay=False, path_type=Path),
            default=DEFAULT_DEV_DIR / "ca.crt",
            show_default=True,
            help="--via mqtt: trust this CA for the broker.",
        ),
        click.option("--plain", is_flag=True, help="--via mqtt: plain TCP, to 127.0.0.1 only."),
        click.option(
            "--qos", type=click.IntRange(0, 1), default=1, show_default=True, help="--via mqtt."
        ),
        click.option("--topic", default="alleycat-publish", show_default=True, help="--via mqtt."),
        click.option(
            "--client-id-prefix",
            default="alleycat-",
            show_default=True,
            help="--via mqtt: rider i connects as PREFIX<racerId>.",
        ),
        click.option(
            "--connect-rate",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_CONNECT_RATE,
            show_default=True,
            help="--via mqtt: connections opened per second at most.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command
