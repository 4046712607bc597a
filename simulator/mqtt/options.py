"""The broker options that MQTT clients of the simulator share (``simulate --via mqtt``, the
local rule and standings backend), and the ones only ``--via mqtt`` takes.

Kept apart from the fleet's run, so ``simulate`` stays light to import.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from alleycat_rider.bounds import finite, whole
from alleycat_rider.config import check_mqtt_host, is_loopback
from alleycat_rider.iot.devcerts import DEFAULT_DEV_DIR, device_paths
from alleycat_rider.mqtt import MqttSettings, check_credentials
from simulator.mqtt.fleet import DEFAULT_CONNECT_RATE

F = TypeVar("F", bound=Callable[..., object])

#: The certificate ``alleycat stack`` (and ``certs dev --client-id alleycat-fleet``) makes.
FLEET_CERT_NAME = "alleycat-fleet"


def _mqtt_host(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--mqtt-endpoint`` as a host name or address: anything else is a usage error."""
    try:
        return check_mqtt_host(value, port_option="--mqtt-port")
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def broker_options(cert_name: str, *, prefix: str = "", client_id: bool = True) -> Callable[[F], F]:
    """``--mqtt-endpoint``, ``--mqtt-port``, ``--cert``, ``--key``, ``--ca``, ``--plain`` (and
    ``--client-id``), defaulting to ``certs dev``'s files for ``cert_name``; ``prefix`` starts
    each help text."""
    cert, key = device_paths(DEFAULT_DEV_DIR, cert_name)
    options = [
        click.option(
            "--mqtt-endpoint",
            default="127.0.0.1",
            show_default=True,
            callback=_mqtt_host,
            help=f"{prefix}The MQTT broker (an AWS IoT data endpoint, or `alleycat stack`'s).",
        ),
        click.option("--mqtt-port", type=whole(1, 65535), default=8883, show_default=True),
        click.option(
            "--cert",
            type=click.Path(dir_okay=False, path_type=Path),
            default=cert,
            show_default=True,
            help=f"{prefix}Certificate (PEM); make one with `alleycat certs dev --client-id "
            f"{cert_name}`.",
        ),
        click.option(
            "--key", type=click.Path(dir_okay=False, path_type=Path), default=key, show_default=True
        ),
        click.option(
            "--ca",
            type=click.Path(dir_okay=False, path_type=Path),
            default=DEFAULT_DEV_DIR / "ca.crt",
            show_default=True,
            help=f"{prefix}Trust this CA for the broker.",
        ),
        click.option(
            "--plain", is_flag=True, help=f"{prefix}Plain TCP, no TLS (to 127.0.0.1 only)."
        ),
    ]
    if client_id:
        options.append(click.option("--client-id", default=cert_name, show_default=True))

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def broker_settings(o: dict[str, Any], *, client_id: str | None = None) -> MqttSettings:
    """The settings :func:`broker_options` give (``client_id`` in place of ``--client-id``).

    Raises:
        click.UsageError: ``--plain`` to a broker not on this machine.
        CertificateError: a certificate, key or CA file is missing or not PEM.
    """
    endpoint, port = o["mqtt_endpoint"], o["mqtt_port"]
    client = o["client_id"] if client_id is None else client_id
    if o["plain"]:
        if not is_loopback(endpoint):
            raise click.UsageError(f"--plain sends in the clear: only to 127.0.0.1, not {endpoint}")
        return MqttSettings(endpoint=endpoint, port=port, client_id=client)
    settings = MqttSettings(
        endpoint=endpoint, port=port, client_id=client, cert=o["cert"], key=o["key"], ca=o["ca"]
    )
    check_credentials(settings)  # before anything starts: a missing file is the first thing said
    return settings


def mqtt_fleet_options(command: F) -> F:
    """The options of ``simulate --via mqtt``."""
    options = [
        click.option(
            "--via",
            type=click.Choice(["sdk", "mqtt"]),
            default="sdk",
            show_default=True,
            help="sdk: PutRecords straight into Kinesis. mqtt: each rider on its own MQTT "
            "connection to a broker (IoT Core, or `alleycat stack`), as real bikes.",
        ),
        broker_options(FLEET_CERT_NAME, prefix="--via mqtt: ", client_id=False),
        click.option("--qos", type=whole(0, 1), default=1, show_default=True, help="--via mqtt."),
        click.option("--topic", default="alleycat-publish", show_default=True, help="--via mqtt."),
        click.option(
            "--client-id-prefix",
            default="alleycat-",
            show_default=True,
            help="--via mqtt: rider i connects as PREFIX<racerId>.",
        ),
        click.option(
            "--connect-rate",
            type=finite(0, min_open=True),
            default=DEFAULT_CONNECT_RATE,
            show_default=True,
            help="--via mqtt: connections opened per second at most.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command
