"""``alleycat certs dev`` and ``alleycat broker``: a local IoT Core stand-in in two commands."""

from __future__ import annotations

import shlex
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from alleycat_rider.bounds import whole
from alleycat_rider.errors import AlleycatError, ConfigError
from alleycat_rider.iot.broker import DEFAULT_PORT, LOCALHOST, MosquittoBroker
from alleycat_rider.iot.devcerts import (
    DEFAULT_DEV_DIR,
    DevPki,
    make_dev_claim,
    make_dev_pki,
    validate_client_id,
)

#: The device ``alleycat broker`` prints a ride command for unless told otherwise.
DEFAULT_CLIENT_ID = "bike-1"


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn an :class:`AlleycatError` into a one-line ``click.ClickException`` (exit 1)."""
    try:
        yield
    except AlleycatError as exc:
        raise click.ClickException(str(exc)) from exc


def _client_ids(
    ctx: click.Context, param: click.Parameter, value: Sequence[str]
) -> tuple[str, ...]:
    try:
        return tuple(validate_client_id(client_id) for client_id in value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


def _client_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    return _client_ids(ctx, param, [value])[0]


def ride_command(
    pki: DevPki, client_id: str, port: int, racer_id: int, *, spool: Path | None = None
) -> str:
    """The ``alleycat ride`` command line that connects ``client_id`` to the local broker
    (with its own ``spool``, when several bikes ride on one machine)."""
    cert, key = pki.client(client_id)
    own_spool = [] if spool is None else ["--spool", str(spool)]
    return shlex.join(
        [
            "alleycat",
            "ride",
            "--endpoint",
            LOCALHOST,
            "--port",
            str(port),
            "--ca",
            str(pki.ca_cert),
            "--cert",
            str(cert),
            "--key",
            str(key),
            "--client-id",
            client_id,
            "--racer-id",
            str(racer_id),
            *own_spool,
        ]
    )


dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DEV_DIR,
    show_default=True,
    help="Directory of the development certificates.",
)


@click.group()
def certs() -> None:
    """Make certificates for development."""


EXAMPLES_DEV = """
\b
Examples:
  # A CA, the broker's certificate, and bike-1's in certs/dev
  alleycat certs dev
\b
  # Two bikes and the fleet's certificate for `simulate --via mqtt`
  alleycat certs dev --client-id bike-1 --client-id bike-2 --client-id alleycat-fleet
\b
  # The claim certificate of a factory image, for bikes that enrol themselves
  alleycat certs dev --claim
"""


@certs.command(epilog=EXAMPLES_DEV)
@dir_option
@click.option(
    "--client-id",
    "client_ids",
    multiple=True,
    default=[DEFAULT_CLIENT_ID],
    show_default=True,
    callback=_client_ids,
    help="Make a device certificate for this MQTT client id (repeatable).",
)
@click.option(
    "--claim",
    is_flag=True,
    help="Also make the fleet's claim certificate and key (claim/), for `ride --claim-cert`.",
)
@click.option("--force", is_flag=True, help="Make every certificate anew, even existing ones.")
def dev(directory: Path, client_ids: tuple[str, ...], claim: bool, force: bool) -> None:
    """Make a local CA, a server certificate and device certificates.

    The server certificate is valid for localhost and 127.0.0.1; each device certificate names
    its client id. With --claim, a claim certificate too: every bike of a factory image shares
    it, and `alleycat stack` lets it only enrol (fleet provisioning). Private keys are written
    with mode 0600. Existing files are kept unless --force.
    """
    kept_ca = not force and (directory / "ca.crt").exists() and (directory / "ca.key").exists()
    with one_line_errors():
        pki = make_dev_pki(directory, client_ids, force=force)
        claim_files = make_dev_claim(directory, force=force) if claim else None
    if kept_ca:
        click.echo(f"Kept the existing CA in {directory} (--force makes a new one).")
    click.echo(f"CA:      {pki.ca_cert}")
    click.echo(f"Server:  {pki.server_cert} (localhost, 127.0.0.1)")
    for client_id in pki.client_ids:
        cert, key = pki.client(client_id)
        click.echo(f"Device:  {cert}  {key}")
    if claim_files is not None:
        click.echo(f"Claim:   {claim_files[0]}  {claim_files[1]}")
    click.echo("")
    click.echo("Run a local broker with these certificates:")
    click.echo(f"  {shlex.join(['alleycat', 'broker', '--dir', str(directory)])}")


class _Terminated(Exception):
    """SIGTERM arrived: stop the broker as for Ctrl-C."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


EXAMPLES_BROKER = """
\b
Examples:
  # mosquitto on 127.0.0.1:8883 with certs/dev, and the ride command for bike-1
  alleycat broker
\b
  # Another port, and the command for bike-2 as racer 102
  alleycat broker --port 18883 --client-id bike-2 --racer-id 102
"""


@click.command(epilog=EXAMPLES_BROKER)
@dir_option
@click.option(
    "--port",
    type=whole(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on (127.0.0.1 only).",
)
@click.option(
    "--client-id",
    default=DEFAULT_CLIENT_ID,
    show_default=True,
    callback=_client_id,
    help="Device to print the `alleycat ride` command for (its certificate is made if missing).",
)
@click.option(
    "--racer-id",
    type=whole(0),
    default=100,
    show_default=True,
    help="Racer id for the printed `alleycat ride` command.",
)
def broker(directory: Path, port: int, client_id: str, racer_id: int) -> None:
    """Run mosquitto on 127.0.0.1 with mutual TLS, like AWS IoT Core, until Ctrl-C.

    Devices must present a certificate signed by the development CA; its common name becomes
    the user name. Missing certificates are made first, as `alleycat certs dev` would.
    """
    with one_line_errors():
        pki = make_dev_pki(directory, [client_id])
        mosquitto = MosquittoBroker(pki, port=port)
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        interrupted = False
        try:
            mosquitto.start()
            click.echo(f"mosquitto listens on {LOCALHOST}:{port} with mutual TLS ({directory}).")
            click.echo("Connect a bike with:")
            click.echo(f"  {ride_command(pki, client_id, port, racer_id)}")
            click.echo("Press Ctrl-C to stop.", err=True)
            status = mosquitto.wait()
            raise click.ClickException(f"mosquitto exited by itself with status {status}")
        except (KeyboardInterrupt, _Terminated) as stop:
            click.echo("Broker stopped.", err=True)
            interrupted = isinstance(stop, KeyboardInterrupt)
        finally:
            mosquitto.stop()
            signal.signal(signal.SIGTERM, previous)
    if interrupted:
        sys.exit(130)  # Ctrl-C, as shells expect; SIGTERM (a service stopped) is 0
