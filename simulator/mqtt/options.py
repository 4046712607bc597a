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


def broker_options(
    cert_name: str, *, prefix: str = "", client_id: bool = True, several: bool = False
) -> Callable[[F], F]:
    """``--mqtt-endpoint``, ``--mqtt-port``, ``--cert``, ``--key``, ``--ca``, ``--plain`` (and
    ``--client-id``), defaulting to ``certs dev``'s files for ``cert_name``; ``prefix`` starts
    each help text; ``several``: ``--mqtt-endpoint`` may list brokers (:func:`fleet_brokers`)."""
    cert, key = device_paths(DEFAULT_DEV_DIR, cert_name)
    endpoint_help = f"{prefix}The MQTT broker (an AWS IoT data endpoint, or `alleycat stack`'s)."
    if several:
        endpoint_help += (
            " Several as HOST:PORT,HOST:PORT (a HOST alone takes --mqtt-port): riders are dealt "
            "over them in turn."
        )
    options = [
        click.option(
            "--mqtt-endpoint",
            default="127.0.0.1",
            show_default=True,
            # One broker: a host name or address. Several (the fleet): read by fleet_brokers.
            callback=None if several else _mqtt_host,
            help=endpoint_help,
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


def fleet_brokers(o: dict[str, Any]) -> list[tuple[str, int]]:
    """The brokers of ``--mqtt-endpoint HOST[:PORT],...`` (``--mqtt-port`` where none is given).

    Raises:
        click.UsageError: an empty entry, a bad port, or ``--plain`` to a broker not on this
            machine.
    """
    brokers = []
    for entry in str(o["mqtt_endpoint"]).split(","):
        host, colon, port_text = entry.strip().rpartition(":")
        if not colon:
            host, port_text = port_text, ""
        try:
            if "://" in entry or "/" in host:  # a URL: said as every MQTT command says it
                check_mqtt_host(entry, port_option="--mqtt-port")
            if not host:
                raise ValueError(f"{entry.strip()!r}: give HOST or HOST:PORT, comma-separated")
            check_mqtt_host(host, port_option="--mqtt-port")
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--mqtt-endpoint'") from None
        port = o["mqtt_port"]
        if port_text:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise click.UsageError(f"--mqtt-endpoint {entry!r}: the port must be 1 to 65535")
            port = int(port_text)
        if o["plain"] and not is_loopback(host):
            raise click.UsageError(f"--plain sends in the clear: only to 127.0.0.1, not {host}")
        brokers.append((host, port))
    return brokers


def source_addresses(text: str | None) -> tuple[str, ...]:
    """The addresses of ``--source-addresses A,B,...`` (``127.0.0.2-9`` for a range of the last
    number).

    Raises:
        click.UsageError: not IPv4 addresses or ranges.
    """
    import ipaddress

    if not text:
        return ()
    found: list[str] = []
    for entry in text.split(","):
        first, dash, last = entry.strip().partition("-")
        try:
            start = ipaddress.IPv4Address(first)
            count = 1
            if dash:
                end = int(last)
                count = end - int(first.rsplit(".", 1)[1]) + 1
                if not 1 <= count <= 255 or end > 255:
                    raise ValueError(last)
        except ValueError:
            raise click.UsageError(
                f"--source-addresses {entry.strip()!r}: give IPv4 addresses, e.g. "
                "127.0.0.2,127.0.0.3 or 127.0.0.2-9"
            ) from None
        found.extend(str(start + n) for n in range(count))
    return tuple(found)


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
        broker_options(FLEET_CERT_NAME, prefix="--via mqtt: ", client_id=False, several=True),
        click.option(
            "--source-addresses",
            default=None,
            metavar="ADDRS",
            help="--via mqtt: connect from these local addresses in turn, e.g. 127.0.0.2-9 "
            "(each address has about 28,000 ports).",
        ),
        click.option(
            "--certs-dir",
            type=click.Path(file_okay=False, exists=True, path_type=Path),
            default=None,
            help="--via mqtt: a certificate per bike: <client id>.crt/.key from this folder "
            "(as `alleycat certs dev` and `alleycat provision` write them); riders without "
            "one use --cert/--key.",
        ),
        click.option(
            "--mqtt-client",
            type=click.Choice(["fleet", "awscrt"]),
            default="fleet",
            hidden=True,
            help="--via mqtt: the fleet's connections, or an awscrt client per rider (for "
            "benchmarks).",
        ),
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
