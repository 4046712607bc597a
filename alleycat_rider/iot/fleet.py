"""Fleet provisioning by claim, the workstation side: what a factory image needs.

Every bike leaves the factory with the same claim certificate; on its first boot it asks IoT Core
for a certificate of its own and registers itself with the provisioning template. This module
makes, in one account and region, and keeps on a second run:

- the provisioning role IoT Core assumes to register bikes (trusts ``iot.amazonaws.com``, with
  AWS's ``AWSIoTThingsRegistration`` policy), unless one is given;
- the bike's least-privilege policy, ``alleycat-rider-<template>`` (the same document as
  ``alleycat provision``'s: connect only as its thing name, publish only on its own topic);
- the template: the thing named from the ``SerialNumber`` parameter, its ``racerId`` attribute
  from ``RacerId`` (which ``alleycat standings --client-map-from-iot`` reads), the certificate
  made active, the policy attached, and a device configuration with the topics;
- the claim certificate and the claim policy, ``alleycat-claim-<template>``, which allows only
  the fleet provisioning topics of this template.

Files written in ``certs/fleet-<template>/`` (the key with mode 0600)::

    claim.pem.crt  claim.private.pem.key

The template calls go through their own client (``templates``): moto does not implement them.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alleycat_rider.iot.provision import (
    DEFAULT_CERTS_DIR,
    DEFAULT_RESULTS_TOPIC,
    DEFAULT_TOPIC,
    aws_clients,
    aws_errors,
    create_certificate,
    device_policy,
    ensure_policy,
)

CLAIM_CERT_FILE = "claim.pem.crt"
CLAIM_KEY_FILE = "claim.private.pem.key"
#: AWS's managed policy that lets IoT Core register things, certificates and policies.
REGISTRATION_POLICY_ARN = "arn:aws:iam::aws:policy/service-role/AWSIoTThingsRegistration"
#: The template's parameters a bike sends when it registers.
SERIAL_PARAMETER = "SerialNumber"
RACER_PARAMETER = "RacerId"
#: How long to wait for a new role to become usable by IoT Core (IAM is eventually consistent).
ROLE_PROPAGATION_SECONDS = 60.0


@dataclass(frozen=True, kw_only=True)
class FleetRequest:
    """What ``alleycat provision --fleet-template`` makes.

    Attributes:
        template_name: The provisioning template (at most 36 of ``A-Z a-z 0-9 _ -``).
        role_arn: An existing provisioning role; ``None`` creates ``alleycat-provisioning-<name>``.
        certs_dir: The claim files go to ``certs_dir / fleet-<name>``.
        topic: The ride topic; each bike publishes only on ``<topic>/<thing name>``.
        results_topic: The only topic a bike may subscribe to and receive from.
    """

    template_name: str
    role_arn: str | None = None
    certs_dir: Path = DEFAULT_CERTS_DIR
    topic: str = DEFAULT_TOPIC
    results_topic: str = DEFAULT_RESULTS_TOPIC

    @property
    def directory(self) -> Path:
        """Where the claim certificate and key go."""
        return self.certs_dir / f"fleet-{self.template_name}"

    @property
    def role_name(self) -> str:
        return f"alleycat-provisioning-{self.template_name}"

    @property
    def bike_policy_name(self) -> str:
        return f"alleycat-rider-{self.template_name}"

    @property
    def claim_policy_name(self) -> str:
        return f"alleycat-claim-{self.template_name}"


@dataclass(frozen=True, kw_only=True)
class FleetResult:
    """What ``provision --fleet-template`` made (``created_*``) or found and kept."""

    endpoint: str
    region: str
    role_arn: str
    created_role: bool
    template_arn: str
    template: str
    """``created``, ``kept``, or ``updated`` (a new default version)."""
    claim_certificate_id: str
    created_claim: bool
    directory: Path


def role_trust_policy() -> dict[str, Any]:
    """The provisioning role's trust policy: IoT Core may assume it."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "iot.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def claim_policy(*, region: str, account: str, template_name: str) -> dict[str, Any]:
    """The claim certificate's policy: connect, and the fleet provisioning topics only.

    Publish and receive on ``$aws/certificates/create/*``, ``$aws/certificates/create-from-csr/*``
    and ``$aws/provisioning-templates/<name>/provision/*``, subscribe to the same as filters.
    """
    arn = f"arn:aws:iot:{region}:{account}"
    topics = (
        "$aws/certificates/create/*",
        "$aws/certificates/create-from-csr/*",
        f"$aws/provisioning-templates/{template_name}/provision/*",
    )
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": [f"{arn}:topic/{topic}" for topic in topics],
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": [f"{arn}:topicfilter/{topic}" for topic in topics],
            },
        ],
    }


def template_body(request: FleetRequest) -> dict[str, Any]:
    """The provisioning template: a thing named by its serial number, its certificate made
    active, the bike's policy attached, and the topics in the device configuration."""
    return {
        "Parameters": {
            SERIAL_PARAMETER: {"Type": "String"},
            RACER_PARAMETER: {"Type": "String"},
            "AWS::IoT::Certificate::Id": {"Type": "String"},
        },
        "Resources": {
            "thing": {
                "Type": "AWS::IoT::Thing",
                "Properties": {
                    "ThingName": {"Ref": SERIAL_PARAMETER},
                    "AttributePayload": {"racerId": {"Ref": RACER_PARAMETER}},
                },
            },
            "certificate": {
                "Type": "AWS::IoT::Certificate",
                "Properties": {
                    "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
                    "Status": "Active",
                },
            },
            "policy": {
                "Type": "AWS::IoT::Policy",
                "Properties": {"PolicyName": request.bike_policy_name},
            },
        },
        "DeviceConfiguration": {
            "topic": request.topic,
            "ownTopic": "true",
            "resultsTopic": request.results_topic,
        },
    }


def certificate_id(pem: str) -> str:
    """IoT Core's id of a certificate: the SHA-256 of its DER bytes, in hex."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def provision_fleet_with(
    request: FleetRequest,
    *,
    iot: Any,
    sts: Any,
    iam: Any,
    templates: Any,
    region: str,
    sleep: Any = time.sleep,
) -> FleetResult:
    """Make (or keep) the role, policies, template and claim certificate; write the claim files.

    Args:
        iot: The IoT client for policies and certificates.
        sts: For the account id.
        iam: For the provisioning role.
        templates: The IoT client the provisioning template calls go through.
        region: The region of every ARN.
        sleep: Waits while a new role becomes usable.
    """
    with aws_errors("look up the AWS account"):
        account = sts.get_caller_identity()["Account"]
    with aws_errors("look up the account's IoT data endpoint"):
        endpoint = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    if request.role_arn is not None:
        role_arn, created_role = request.role_arn, False
    else:
        role_arn, created_role = _ensure_role(iam, request.role_name)
    bike = device_policy(
        region=region, account=account, topic=request.topic, results_topic=request.results_topic
    )
    ensure_policy(iot, request.bike_policy_name, bike)
    claim = claim_policy(region=region, account=account, template_name=request.template_name)
    ensure_policy(iot, request.claim_policy_name, claim)
    template_arn, template = _ensure_template(
        templates, request, role_arn, wait_for_role=created_role, sleep=sleep
    )
    claim_id, claim_arn, created_claim = _ensure_claim(iot, request.directory)
    with aws_errors("attach the claim policy to the claim certificate"):
        iot.attach_policy(policyName=request.claim_policy_name, target=claim_arn)
    return FleetResult(
        endpoint=endpoint,
        region=region,
        role_arn=role_arn,
        created_role=created_role,
        template_arn=template_arn,
        template=template,
        claim_certificate_id=claim_id,
        created_claim=created_claim,
        directory=request.directory,
    )


def provision_fleet(
    request: FleetRequest,
    *,
    region: str | None = None,
    profile: str | None = None,
    endpoint_url: str | None = None,
) -> FleetResult:
    """:func:`provision_fleet_with` through boto3 clients of the profile and region."""
    region_name, (iot, sts, iam) = aws_clients(
        ("iot", "sts", "iam"), region=region, profile=profile, endpoint_url=endpoint_url
    )
    return provision_fleet_with(
        request, iot=iot, sts=sts, iam=iam, templates=iot, region=region_name
    )


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _ensure_role(iam: Any, name: str) -> tuple[str, bool]:
    """The provisioning role's ARN, and whether it was made now."""
    from botocore.exceptions import ClientError

    with aws_errors(f"create the provisioning role {name}"):
        try:
            return str(iam.get_role(RoleName=name)["Role"]["Arn"]), False
        except ClientError as exc:
            if _code(exc) != "NoSuchEntity":
                raise
        role = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(role_trust_policy()),
            Description="Lets AWS IoT Core register Alleycat bikes by fleet provisioning",
        )
        iam.attach_role_policy(RoleName=name, PolicyArn=REGISTRATION_POLICY_ARN)
        return str(role["Role"]["Arn"]), True


def _ensure_template(
    templates: Any, request: FleetRequest, role_arn: str, *, wait_for_role: bool, sleep: Any
) -> tuple[str, str]:
    """The template's ARN, and ``created``, ``kept`` or ``updated``."""
    from botocore.exceptions import ClientError

    name = request.template_name
    body = template_body(request)
    with aws_errors(f"create the provisioning template {name}"):
        try:
            current = templates.describe_provisioning_template(templateName=name)
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
        else:
            if json.loads(current["templateBody"]) == body:
                return str(current["templateArn"]), "kept"
            templates.create_provisioning_template_version(
                templateName=name, templateBody=json.dumps(body), setAsDefault=True
            )
            return str(current["templateArn"]), "updated"
        deadline = time.monotonic() + (ROLE_PROPAGATION_SECONDS if wait_for_role else 0)
        while True:
            try:
                made = templates.create_provisioning_template(
                    templateName=name,
                    description="Alleycat bikes enrolling by claim",
                    templateBody=json.dumps(body),
                    enabled=True,
                    provisioningRoleArn=role_arn,
                )
                return str(made["templateArn"]), "created"
            except ClientError as exc:
                # A role made a moment ago is not yet usable by IoT Core.
                if _code(exc) != "InvalidRequestException" or time.monotonic() > deadline:
                    raise
                sleep(5)


def _ensure_claim(iot: Any, directory: Path) -> tuple[str, str, bool]:
    """The claim certificate's id and ARN, and whether it was made now.

    Kept when the files hold an active certificate of the account; else a new one is made.
    """
    from botocore.exceptions import ClientError

    cert_path, key_path = directory / CLAIM_CERT_FILE, directory / CLAIM_KEY_FILE
    if cert_path.is_file() and key_path.is_file():
        try:
            found = certificate_id(cert_path.read_text())
        except (OSError, ValueError):
            found = ""
        if found:
            with aws_errors("look up the claim certificate"):
                try:
                    described = iot.describe_certificate(certificateId=found)
                except ClientError as exc:
                    if _code(exc) != "ResourceNotFoundException":
                        raise
                else:
                    cert = described["certificateDescription"]
                    if cert["status"] == "ACTIVE":
                        return found, str(cert["certificateArn"]), False
    made = create_certificate(iot, directory, cert_file=CLAIM_CERT_FILE, key_file=CLAIM_KEY_FILE)
    return made.id, made.arn, True
