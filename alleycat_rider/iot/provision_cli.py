"""``alleycat provision``: enrol a real bike in AWS IoT Core."""

from __future__ import annotations

from pathlib import Path

import click

from alleycat_rider.bounds import whole
from alleycat_rider.config import endpoint_url_param
from alleycat_rider.errors import ConfigError
from alleycat_rider.iot.certs_cli import one_line_errors
from alleycat_rider.iot.devcerts import validate_client_id
from alleycat_rider.iot.provision import (
    DEFAULT_CERTS_DIR,
    DEFAULT_RESULTS_TOPIC,
    DEFAULT_TOPIC,
    ProvisionRequest,
    ride_command,
)
from alleycat_rider.iot.provision import (
    provision as provision_thing,
)
from alleycat_rider.options import default_in_help


def _thing_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return validate_client_id(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


#: MQTT's topic wildcards, and the IoT policy language's: any of them in the policy's topic would
#: let the bike publish or read far more than its own topic (``*`` matches every topic).
_WILDCARDS = ("+", "#", "*", "?")


def _topic(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value or any(wildcard in value for wildcard in _WILDCARDS):
        raise click.BadParameter(
            "must be one topic, without the wildcards + and # (MQTT) or * and ? (IoT policies)"
        )
    return value


EXAMPLES = """
\b
Examples:
  # Enrol bike-17 for racer 17, with AWS_PROFILE's credentials and region
  alleycat provision --thing-name bike-17 --racer-id 17
\b
  # A new certificate for an enrolled bike (the old one stays active)
  alleycat provision --thing-name bike-17 --rotate --region eu-west-1
\b
  # Against a local test server (moto) instead of AWS
  alleycat provision --thing-name bike-1 --endpoint-url http://127.0.0.1:5000
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES)
@click.option(
    "--thing-name",
    required=True,
    callback=_thing_name,
    help="The bike's thing name, also its MQTT client id.",
)
@click.option(
    "--region", envvar="AWS_REGION", help="AWS region.", **default_in_help("the profile's")
)
@click.option(
    "--profile",
    envvar="AWS_PROFILE",
    help="AWS profile.",
    **default_in_help("AWS's default credentials"),
)
@click.option(
    "--endpoint-url",
    envvar="AWS_ENDPOINT_URL",
    callback=endpoint_url_param,
    help="Call the IoT and STS APIs here instead of AWS (a local test server).",
)
@click.option(
    "--dir",
    "certs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_CERTS_DIR,
    show_default=True,
    help="Write the bike's files to DIR/NAME/.",
)
@click.option(
    "--topic",
    default=DEFAULT_TOPIC,
    show_default=True,
    callback=_topic,
    help="The only topic the bike may publish to.",
)
@click.option(
    "--results-topic",
    default=DEFAULT_RESULTS_TOPIC,
    show_default=True,
    callback=_topic,
    help="The only topic the bike may subscribe to.",
)
@click.option("--racer-id", type=whole(0), help="Put this racer id in rider.toml.")
@click.option(
    "--rotate",
    is_flag=True,
    help="Make a new certificate even if the thing has an active one (which stays active).",
)
def provision(
    thing_name: str,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    certs_dir: Path,
    topic: str,
    results_topic: str,
    racer_id: int | None,
    rotate: bool,
) -> None:
    """Enrol a bike in AWS IoT Core and write its certificate, key and rider config.

    Creates the thing, an active certificate and a least-privilege policy (connect only as the
    thing name, publish only to the ride topic, subscribe only to the results topic), attaches
    them, and writes DIR/NAME/. Running it again keeps the thing's active certificate; --rotate
    makes another one.
    """
    request = ProvisionRequest(
        thing_name=thing_name,
        certs_dir=certs_dir,
        topic=topic,
        results_topic=results_topic,
        rotate=rotate,
        racer_id=racer_id,
    )
    with one_line_errors():
        result = provision_thing(request, region=region, profile=profile, endpoint_url=endpoint_url)
    verb = "created" if result.created_certificate else "kept"
    click.echo(f"Thing:       {result.thing_arn}")
    click.echo(f"Certificate: {result.certificate_id} ({verb}, active)")
    click.echo(f"Policy:      {result.policy_name}")
    click.echo(f"Endpoint:    {result.endpoint}")
    click.echo(f"Files:       {request.directory}/ (the key is readable by its owner only)")
    for other in result.other_active:
        click.echo(
            f"Still active: certificate {other}; once the bike uses the new one, run "
            f"`aws iot update-certificate --region {result.region} --certificate-id {other} "
            "--new-status INACTIVE`"
        )
    click.echo("")
    click.echo(
        f"Copy {request.directory}/ to the bike and point --config at the copy "
        "(rider.toml names its files relative to itself), e.g. from the same directory:"
    )
    click.echo(f"  {ride_command(request)}")
