"""``alleycat provision``: enrol a real bike in AWS IoT Core."""

from __future__ import annotations

import re
from pathlib import Path

import click

from alleycat_rider.bounds import whole
from alleycat_rider.config import endpoint_url_param
from alleycat_rider.errors import ConfigError
from alleycat_rider.iot.certs_cli import one_line_errors
from alleycat_rider.iot.devcerts import validate_client_id
from alleycat_rider.iot.fleet import FleetRequest, provision_fleet
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


def _thing_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return validate_client_id(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


_TEMPLATE_NAME = re.compile(r"[0-9A-Za-z_-]{1,36}")


def _template_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _TEMPLATE_NAME.fullmatch(value):
        raise click.BadParameter("must be 1-36 letters, digits, '_' or '-'")
    return value


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
  # A factory image's claim certificate, and the template bikes enrol with
  alleycat provision --fleet-template alleycat-bikes --region eu-west-1
\b
  # Against a local test server (moto) instead of AWS
  alleycat provision --thing-name bike-1 --endpoint-url http://127.0.0.1:5000
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES)
@click.option(
    "--thing-name",
    callback=_thing_name,
    help="The bike's thing name, also its MQTT client id.",
)
@click.option(
    "--fleet-template",
    metavar="NAME",
    callback=_template_name,
    help="Instead of one bike: a fleet provisioning template, its role and policies, and a "
    "claim certificate for a factory image.",
)
@click.option(
    "--role-arn",
    help="With --fleet-template: the role IoT Core provisions bikes with.",
    **default_in_help("made: alleycat-provisioning-NAME"),
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
    help="The ride topic: the bike may publish only on TOPIC/NAME, its own.",
)
@click.option(
    "--results-topic",
    default=DEFAULT_RESULTS_TOPIC,
    show_default=True,
    callback=_topic,
    help="The only topic the bike may subscribe to.",
)
@click.option(
    "--shared-topic",
    is_flag=True,
    help="Let the bike publish on TOPIC itself, shared by all bikes, instead of its own "
    "(weaker: the sender is then not in the topic).",
)
@click.option("--racer-id", type=whole(0), help="Put this racer id in rider.toml.")
@click.option(
    "--rotate",
    is_flag=True,
    help="Make a new certificate even if the thing has an active one (which stays active).",
)
def provision(
    thing_name: str | None,
    fleet_template: str | None,
    role_arn: str | None,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    certs_dir: Path,
    topic: str,
    results_topic: str,
    shared_topic: bool,
    racer_id: int | None,
    rotate: bool,
) -> None:
    """Enrol a bike in AWS IoT Core and write its certificate, key and rider config.

    Creates the thing, an active certificate and a least-privilege policy (connect only as the
    thing name, publish only on its own ride topic TOPIC/NAME, subscribe only to the results
    topic), attaches them, and writes DIR/NAME/. Running it again keeps the thing's active
    certificate; --rotate makes another one.

    With --fleet-template NAME instead: the provisioning role, the bikes' policy, the template
    (the thing named from the bike's serial number), a claim certificate and a policy letting it
    use only the provisioning topics, and DIR/fleet-NAME/ with the claim files. Running it again
    changes nothing that exists.
    """
    if (thing_name is None) == (fleet_template is None):
        raise click.UsageError("pass --thing-name for one bike or --fleet-template for a fleet")
    if fleet_template is not None:
        given = [
            flag
            for flag, value in (
                ("--shared-topic", shared_topic),
                ("--racer-id", racer_id is not None),
                ("--rotate", rotate),
            )
            if value
        ]
        if given:
            raise click.UsageError(f"{given[0]} is for --thing-name, not --fleet-template")
        _provision_fleet(
            FleetRequest(
                template_name=fleet_template,
                role_arn=role_arn,
                certs_dir=certs_dir,
                topic=topic,
                results_topic=results_topic,
            ),
            region=region,
            profile=profile,
            endpoint_url=endpoint_url,
        )
        return
    if role_arn is not None:
        raise click.UsageError("--role-arn is for --fleet-template")
    assert thing_name is not None
    request = ProvisionRequest(
        thing_name=thing_name,
        certs_dir=certs_dir,
        topic=topic,
        results_topic=results_topic,
        shared_topic=shared_topic,
        rotate=rotate,
        racer_id=racer_id,
    )
    with one_line_errors():
        result = provision_thing(request, region=region, profile=profile, endpoint_url=endpoint_url)
    verb = "created" if result.created_certificate else "kept"
    click.echo(f"Thing:       {result.thing_arn}")
    click.echo(f"Certificate: {result.certificate_id} ({verb}, active)")
    click.echo(f"Policy:      {result.policy_name} (publish on {request.publish_topic} only)")
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


def _provision_fleet(
    request: FleetRequest, *, region: str | None, profile: str | None, endpoint_url: str | None
) -> None:
    with one_line_errors():
        result = provision_fleet(request, region=region, profile=profile, endpoint_url=endpoint_url)

    def made(created: bool) -> str:
        return "created" if created else "kept"

    click.echo(f"Template:    {result.template_arn} ({result.template}, enabled)")
    click.echo(f"Role:        {result.role_arn} ({made(result.created_role)})")
    click.echo(
        f"Policies:    {request.bike_policy_name} (bikes: publish on {request.topic}/<thing name>"
        f" only), {request.claim_policy_name} (claim: the provisioning topics only)"
    )
    click.echo(
        f"Claim:       certificate {result.claim_certificate_id} "
        f"({made(result.created_claim)}, active)"
    )
    click.echo(f"Endpoint:    {result.endpoint}")
    click.echo(f"Files:       {result.directory}/ (the key is readable by its owner only)")
    click.echo("")
    click.echo(
        f"Put {result.directory}/ in the factory image. A bike registers with the template "
        f"{request.template_name} and its parameters SerialNumber (its thing name) and RacerId."
    )
