"""Enrol a bike in AWS IoT Core: a thing, its certificate and a least-privilege policy.

The policy lets the device connect only with its thing name as client id (and only with a
certificate attached to that thing), publish only on its own ride topic,
``alleycat-publish/<thing name>`` (written with the policy variable
``${iot:Connection.Thing.ThingName}``, so the bike cannot publish as another), and subscribe to and
receive only the results topic, in one account and region. ``shared_topic`` lets it publish on the
one shared ride topic instead, as the original did: weaker, since the rule then cannot tell the
sender from the topic.

Files written in ``certs/NAME/`` (the key with mode 0600, the others 0644, the folders it
creates 0755, whatever the umask)::

    certificate.pem.crt  private.pem.key  rider.toml

boto3 is imported only inside the functions that call AWS: the rider agent on a bike imports this
package and must not pay for boto3 (~40 MB). Errors from boto3 become :class:`ProvisionError` with
one line saying what to do.

::

    AlleycatError
    └── ProvisionError   AWS refused, was unreachable, or the files cannot be written
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alleycat_rider.errors import AlleycatError
from alleycat_rider.iot.devcerts import make_directory, write_private, write_public

#: Where ``alleycat provision`` writes ``NAME/``, relative to the working directory.
DEFAULT_CERTS_DIR = Path("certs")
#: The ride topic and the results topic, as ``alleycat ride`` defaults them.
DEFAULT_TOPIC = "alleycat-publish"
DEFAULT_RESULTS_TOPIC = "alleycat-subscribe"
#: The thing name of the connection, as an IoT policy variable.
THING_NAME_VARIABLE = "${iot:Connection.Thing.ThingName}"
#: AWS IoT Core takes MQTT over mutual TLS on this port.
IOT_PORT = 8883

CERT_FILE = "certificate.pem.crt"
KEY_FILE = "private.pem.key"
CONFIG_FILE = "rider.toml"

_POLICY_VERSION_LIMIT = 5
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
    }
)


class ProvisionError(AlleycatError):
    """Provisioning failed: no credentials, no permission, AWS unreachable, or a local file."""


@dataclass(frozen=True, kw_only=True)
class ProvisionRequest:
    """What to provision.

    Attributes:
        thing_name: The thing, also the device's MQTT client id.
        certs_dir: ``certs/``; the device's files go to ``certs_dir / thing_name``.
        topic: The ride topic: the device publishes only on ``<topic>/<thing name>``, or on
            ``topic`` itself with ``shared_topic``.
        results_topic: The only topic the device may subscribe to and receive from.
        shared_topic: Allow the one shared ride topic instead of the bike's own (weaker: any
            bike may then send rides that only a stamped client id tells apart).
        rotate: Make a new certificate even if the thing has an active one (which stays active).
        racer_id: Written to ``rider.toml`` and recorded on the thing as its ``racerId``
            attribute, which the standings backend reads (``--client-map-from-iot``) to reject
            rides whose racer is not their sender's.
    """

    thing_name: str
    certs_dir: Path = DEFAULT_CERTS_DIR
    topic: str = DEFAULT_TOPIC
    results_topic: str = DEFAULT_RESULTS_TOPIC
    shared_topic: bool = False
    rotate: bool = False
    racer_id: int | None = None

    @property
    def publish_topic(self) -> str:
        """The topic the bike publishes its rides on."""
        return self.topic if self.shared_topic else f"{self.topic}/{self.thing_name}"

    @property
    def directory(self) -> Path:
        """``certs_dir / thing_name``: where the device's files go."""
        return self.certs_dir / self.thing_name

    @property
    def policy_name(self) -> str:
        """The name of the thing's own policy."""
        return f"alleycat-rider-{self.thing_name}"


@dataclass(frozen=True, kw_only=True)
class ProvisionResult:
    """What ``provision`` did.

    Attributes:
        endpoint: The account's ATS data endpoint.
        region: The AWS region everything was made in.
        certificate_id: The device's active certificate.
        created_certificate: Whether that certificate was made now (else an existing one is kept).
        other_active: Other active certificates of the thing (only after ``rotate``).
        config_path: The rider config file written.
    """

    endpoint: str
    region: str
    thing_arn: str
    certificate_id: str
    certificate_arn: str
    policy_name: str
    created_certificate: bool
    other_active: tuple[str, ...]
    config_path: Path


def device_policy(
    *, region: str, account: str, topic: str, results_topic: str, shared_topic: bool = False
) -> dict[str, Any]:
    """The least-privilege IoT policy document of a bike, the same for every bike.

    The bike may connect only as its thing name (with a certificate attached to that thing) and
    publish only on ``<topic>/<its thing name>``, both named with the policy variable
    ``${iot:Connection.Thing.ThingName}``; ``shared_topic`` allows ``topic`` itself instead.

    Args:
        region: The AWS region of the ARNs.
        account: The AWS account id of the ARNs.
        topic: The ride topic.
        results_topic: The only topic it may subscribe to and receive from.
        shared_topic: Publish on the one shared topic (weaker).
    """
    arn = f"arn:aws:iot:{region}:{account}"
    publish = topic if shared_topic else f"{topic}/{THING_NAME_VARIABLE}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": f"{arn}:client/{THING_NAME_VARIABLE}",
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
            },
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": f"{arn}:topic/{publish}"},
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": f"{arn}:topicfilter/{results_topic}",
            },
            {
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": f"{arn}:topic/{results_topic}",
            },
        ],
    }


def rider_config_text(request: ProvisionRequest, endpoint: str) -> str:
    """The ``rider.toml`` that connects the device to IoT Core (CA: the system trust store).

    The certificate and key are named relative to ``rider.toml`` itself (as the agent reads
    paths in a config file), so the directory works wherever it is copied.
    """
    settings: dict[str, str | int | bool] = {
        "endpoint": endpoint,
        "port": IOT_PORT,
        "cert": CERT_FILE,
        "key": KEY_FILE,
        "client_id": request.thing_name,
        "topic": request.topic,
        "own_topic": not request.shared_topic,
        "results_topic": request.results_topic,
    }
    if request.racer_id is not None:
        settings["racer_id"] = request.racer_id
    # json.dumps quotes a string exactly as a TOML basic string needs.
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return (
        f"# Written by `alleycat provision` for thing {request.thing_name}.\n"
        + "\n".join(lines)
        + "\n"
    )


def ride_command(request: ProvisionRequest) -> str:
    """The ``alleycat ride`` command to run on the bike, from the directory holding ``certs/``."""
    command = f"alleycat ride --config {request.directory / CONFIG_FILE}"
    return command if request.racer_id is not None else f"{command} --racer-id RACER_ID"


@contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Turn boto3's errors into a one-line :class:`ProvisionError`.

    Args:
        action: What was being done, for the message ("create the thing bike-1").
    """
    from botocore import exceptions as bce

    try:
        yield
    except (bce.NoCredentialsError, bce.PartialCredentialsError) as exc:
        raise ProvisionError(
            "no AWS credentials found: set AWS_PROFILE or run `aws configure`"
        ) from exc
    except bce.ProfileNotFound as exc:
        raise ProvisionError(f"{exc}: pick one from `aws configure list-profiles`") from exc
    except bce.NoRegionError as exc:
        raise ProvisionError("no AWS region: pass --region or set AWS_REGION") from exc
    except (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ReadTimeoutError) as exc:
        raise ProvisionError(
            f"cannot reach AWS to {action} ({exc}): check the network, --region and --endpoint-url"
        ) from exc
    except bce.ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Unknown"), error.get("Message", "")
        if code in _DENIED_CODES:
            raise ProvisionError(
                f"AWS denied permission to {action} ({code}: {message}): use credentials "
                "allowed to manage AWS IoT things, certificates and policies"
            ) from exc
        raise ProvisionError(f"AWS could not {action}: {code}: {message}") from exc
    except bce.BotoCoreError as exc:
        raise ProvisionError(f"cannot {action}: {exc}") from exc


@dataclass(frozen=True)
class _Certificate:
    id: str
    arn: str
    pem: str


def provision(
    request: ProvisionRequest,
    *,
    region: str | None = None,
    profile: str | None = None,
    endpoint_url: str | None = None,
) -> ProvisionResult:
    """Provision ``request.thing_name`` in AWS IoT Core through boto3.

    Args:
        request: The thing, topics and where to write its files.
        region: The AWS region (default: the profile's or ``AWS_REGION``).
        profile: The AWS profile (default: ``AWS_PROFILE`` or the default credentials).
        endpoint_url: Another endpoint for the IoT and STS APIs (a local moto server in tests).

    Raises:
        ProvisionError: No credentials, no permission, AWS unreachable, or files not writable.
    """
    region_name, (iot, sts) = aws_clients(
        ("iot", "sts"), region=region, profile=profile, endpoint_url=endpoint_url
    )
    return provision_with(request, iot=iot, sts=sts, region=region_name)


def aws_clients(
    services: tuple[str, ...],
    *,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
) -> tuple[str, list[Any]]:
    """The session's region and a boto3 client for each service (all at ``endpoint_url``).

    Raises:
        ProvisionError: No region, an unknown profile, or another session error.
    """
    import boto3
    from botocore.config import Config

    with aws_errors("open an AWS session"):
        session = boto3.Session(profile_name=profile, region_name=region)
        if not session.region_name:
            raise ProvisionError("no AWS region: pass --region or set AWS_REGION")
        config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3})
        clients = [
            session.client(service, endpoint_url=endpoint_url, config=config)
            for service in services
        ]
    return str(session.region_name), clients


def provision_with(
    request: ProvisionRequest, *, iot: Any, sts: Any, region: str
) -> ProvisionResult:
    """Provision with boto3 clients already made (``iot`` and ``sts``) in ``region``.

    Without ``request.rotate``, a thing that already has an active certificate keeps it when the
    local files hold that certificate, and is refused otherwise: never two active certificates.
    """
    name = request.thing_name
    with aws_errors("look up the AWS account"):
        account = sts.get_caller_identity()["Account"]
    with aws_errors("look up the account's IoT data endpoint"):
        endpoint = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    thing_arn = _ensure_thing(iot, name, request.racer_id)
    document = device_policy(
        region=region,
        account=account,
        topic=request.topic,
        results_topic=request.results_topic,
        shared_topic=request.shared_topic,
    )
    ensure_policy(iot, request.policy_name, document)
    active = _active_certificates(iot, name)
    kept = None if request.rotate else _local_match(active, request.directory / CERT_FILE)
    if kept is not None:
        certificate, created = kept, False
    elif active and not request.rotate:
        ids = ", ".join(cert.id for cert in active)
        raise ProvisionError(
            f"thing {name} already has an active certificate ({ids}) whose key is not in "
            f"{request.directory}: pass --rotate to make another one"
        )
    else:
        certificate, created = _create_certificate(iot, request.directory), True
    with aws_errors(f"attach the policy and certificate to {name}"):
        iot.attach_policy(policyName=request.policy_name, target=certificate.arn)
        iot.attach_thing_principal(thingName=name, principal=certificate.arn)
    config_path = request.directory / CONFIG_FILE
    try:
        write_public(config_path, rider_config_text(request, endpoint).encode())
    except OSError as exc:
        raise ProvisionError(f"cannot write {config_path}: {exc.strerror}") from exc
    return ProvisionResult(
        endpoint=endpoint,
        region=region,
        thing_arn=thing_arn,
        certificate_id=certificate.id,
        certificate_arn=certificate.arn,
        policy_name=request.policy_name,
        created_certificate=created,
        other_active=tuple(cert.id for cert in active if cert.id != certificate.id),
        config_path=config_path,
    )


#: The thing attribute that names the racer a bike rides as.
RACER_ATTRIBUTE = "racerId"


def _ensure_thing(iot: Any, name: str, racer_id: int | None) -> str:
    """The thing's ARN, creating it if needed; ``racer_id`` (when given) becomes its
    ``racerId`` attribute, replacing an earlier one."""
    from botocore.exceptions import ClientError

    attributes = {} if racer_id is None else {RACER_ATTRIBUTE: str(racer_id)}
    with aws_errors(f"create the thing {name}"):
        try:
            thing = iot.describe_thing(thingName=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            payload = {"attributes": attributes}
            return str(iot.create_thing(thingName=name, attributePayload=payload)["thingArn"])
        if attributes and thing.get("attributes", {}).get(RACER_ATTRIBUTE) != str(racer_id):
            merged: dict[str, Any] = {"attributes": attributes, "merge": True}
            iot.update_thing(thingName=name, attributePayload=merged)
        return str(thing["thingArn"])


def racers_of_things(iot: Any) -> dict[str, int]:
    """Thing name (the bike's client id) -> racer id, for every thing with a ``racerId``.

    Raises:
        ProvisionError: The things cannot be listed (credentials, permission, network).
    """
    racers: dict[str, int] = {}
    with aws_errors("list the things and their racer ids"):
        # Every thing, filtered here: ListThings filters by an attribute's name and value.
        pages = iot.get_paginator("list_things").paginate()
        for page in pages:
            for thing in page.get("things", []):
                value = str(thing.get("attributes", {}).get(RACER_ATTRIBUTE, ""))
                if value.isdigit():
                    racers[str(thing["thingName"])] = int(value)
    return racers


def ensure_policy(iot: Any, policy_name: str, document: dict[str, Any]) -> None:
    """Create the policy, or make ``document`` its default version if it differs."""
    from botocore.exceptions import ClientError

    text = json.dumps(document)
    with aws_errors(f"create the policy {policy_name}"):
        try:
            current = iot.get_policy(policyName=policy_name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            iot.create_policy(policyName=policy_name, policyDocument=text)
            return
        if json.loads(current["policyDocument"]) == document:
            return
        versions = iot.list_policy_versions(policyName=policy_name)["policyVersions"]
        if len(versions) >= _POLICY_VERSION_LIMIT:
            oldest = min(
                (v for v in versions if not v["isDefaultVersion"]),
                key=lambda v: int(v["versionId"]),
            )
            iot.delete_policy_version(policyName=policy_name, policyVersionId=oldest["versionId"])
        iot.create_policy_version(policyName=policy_name, policyDocument=text, setAsDefault=True)


def _active_certificates(iot: Any, name: str) -> list[_Certificate]:
    active = []
    with aws_errors(f"list the certificates of {name}"):
        for arn in iot.list_thing_principals(thingName=name)["principals"]:
            if ":cert/" not in arn:
                continue
            description = iot.describe_certificate(certificateId=arn.rsplit("/", 1)[1])
            cert = description["certificateDescription"]
            if cert["status"] == "ACTIVE":
                active.append(_Certificate(cert["certificateId"], arn, cert["certificatePem"]))
    return active


def _local_match(active: list[_Certificate], cert_path: Path) -> _Certificate | None:
    """The active certificate whose PEM the local certificate file holds, if any."""
    try:
        local = cert_path.read_text().strip()
    except OSError:
        return None
    if not cert_path.with_name(KEY_FILE).is_file():
        return None
    return next((cert for cert in active if cert.pem.strip() == local), None)


def _create_certificate(iot: Any, directory: Path) -> _Certificate:
    """Make an active key pair and certificate and write them; undo it if writing fails."""
    return create_certificate(iot, directory, cert_file=CERT_FILE, key_file=KEY_FILE)


def create_certificate(iot: Any, directory: Path, *, cert_file: str, key_file: str) -> _Certificate:
    """Make an active key pair and certificate and write them to ``directory`` (the key 0600);
    delete the certificate again if they cannot be written."""
    with aws_errors("create a certificate"):
        made = iot.create_keys_and_certificate(setAsActive=True)
    certificate = _Certificate(
        made["certificateId"], made["certificateArn"], made["certificatePem"]
    )
    try:
        make_directory(directory)
        write_private(directory / key_file, made["keyPair"]["PrivateKey"].encode())
        write_public(directory / cert_file, certificate.pem.encode())
    except OSError as exc:
        with aws_errors(f"delete the certificate {certificate.id}"):
            iot.update_certificate(certificateId=certificate.id, newStatus="INACTIVE")
            iot.delete_certificate(certificateId=certificate.id)
        raise ProvisionError(
            f"cannot write the key to {directory}: {exc.strerror}; the new certificate was deleted"
        ) from exc
    return certificate
