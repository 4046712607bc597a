"""``alleycat provision --fleet-template``: moto's server for IAM, policies and certificates, and
botocore's Stubber for the provisioning template calls, which moto does not implement."""

from __future__ import annotations

import json
import stat
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from click.testing import CliRunner

from alleycat.cli import cli
from alleycat_rider.iot.fleet import FleetRequest, certificate_id, provision_fleet_with
from alleycat_rider.iot.provision import ProvisionError
from tests.servers.moto import MOTO_REGION

ACCOUNT = "123456789012"  # moto's account
TEMPLATE = "alleycat-bikes"
TEMPLATE_ARN = f"arn:aws:iot:{MOTO_REGION}:{ACCOUNT}:provisioningtemplate/{TEMPLATE}"
ARN = f"arn:aws:iot:{MOTO_REGION}:{ACCOUNT}"


class Clients:
    """moto's IoT, STS and IAM, and a stubbed IoT client for the template calls."""

    def __init__(self, endpoint: str) -> None:
        self.iot = boto3.client("iot", endpoint_url=endpoint, region_name=MOTO_REGION)
        self.sts = boto3.client("sts", endpoint_url=endpoint, region_name=MOTO_REGION)
        self.iam = boto3.client("iam", endpoint_url=endpoint, region_name=MOTO_REGION)
        self.templates = boto3.client("iot", region_name=MOTO_REGION)
        self.stub = Stubber(self.templates)
        self.created: list[dict[str, Any]] = []
        self.templates.meta.events.register(
            "provide-client-params.iot.CreateProvisioningTemplate",
            lambda params, **_: self.created.append(dict(params)),
        )

    def expect_no_template(self) -> None:
        self.stub.add_client_error(
            "describe_provisioning_template",
            service_error_code="ResourceNotFoundException",
            http_status_code=404,
            expected_params={"templateName": TEMPLATE},
        )

    def expect_create(self) -> None:
        self.stub.add_response(
            "create_provisioning_template",
            {"templateArn": TEMPLATE_ARN, "templateName": TEMPLATE, "defaultVersionId": 1},
            expected_params={
                "templateName": TEMPLATE,
                "description": ANY,
                "templateBody": ANY,
                "enabled": True,
                "provisioningRoleArn": ANY,
            },
        )

    def expect_existing(self, body: str, role_arn: str) -> None:
        self.stub.add_response(
            "describe_provisioning_template",
            {
                "templateArn": TEMPLATE_ARN,
                "templateName": TEMPLATE,
                "templateBody": body,
                "enabled": True,
                "provisioningRoleArn": role_arn,
                "defaultVersionId": 1,
            },
            expected_params={"templateName": TEMPLATE},
        )

    def run(self, request: FleetRequest) -> Any:
        with self.stub:
            result = provision_fleet_with(
                request,
                iot=self.iot,
                sts=self.sts,
                iam=self.iam,
                templates=self.templates,
                region=MOTO_REGION,
                sleep=lambda _: None,
            )
            self.stub.assert_no_pending_responses()
        return result


def _moto_api(endpoint: str, path: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/{path}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@pytest.fixture
def clients(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Clients]:
    # As AWS: AWS's managed policies (AWSIoTThingsRegistration) exist, which moto loads when its
    # IAM starts afresh, and a certificate's id is the SHA-256 of its DER bytes.
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    # (moto's server runs in this process: its configuration is this module's.)
    from moto.core.config import default_user_config

    monkeypatch.setitem(default_user_config, "iot", {"use_valid_cert": True})
    _moto_api(moto_endpoint, "reset")
    yield Clients(moto_endpoint)


def _policy(iot: Any, name: str) -> dict[str, Any]:
    return dict(json.loads(iot.get_policy(policyName=name)["policyDocument"]))


def test_the_template_role_policies_and_claim_files_are_what_fleet_provisioning_needs(
    clients: Clients, tmp_path: Path
) -> None:
    request = FleetRequest(template_name=TEMPLATE, certs_dir=tmp_path / "certs")
    clients.expect_no_template()
    clients.expect_create()
    result = clients.run(request)

    # The role IoT Core assumes to register bikes.
    role = clients.iam.get_role(RoleName="alleycat-provisioning-alleycat-bikes")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "iot.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    attached = clients.iam.list_attached_role_policies(RoleName=role["RoleName"])
    assert [p["PolicyArn"] for p in attached["AttachedPolicies"]] == [
        "arn:aws:iam::aws:policy/service-role/AWSIoTThingsRegistration"
    ]
    assert (result.role_arn, result.created_role) == (role["Arn"], True)

    # The template: enabled, with that role, a thing named by the serial number.
    [created] = clients.created
    assert created["provisioningRoleArn"] == role["Arn"]
    body = json.loads(created["templateBody"])
    assert body["Parameters"]["SerialNumber"] == {"Type": "String"}
    resources = body["Resources"]
    assert resources["thing"]["Type"] == "AWS::IoT::Thing"
    assert resources["thing"]["Properties"]["ThingName"] == {"Ref": "SerialNumber"}
    assert resources["thing"]["Properties"]["AttributePayload"] == {"racerId": {"Ref": "RacerId"}}
    assert resources["certificate"] == {
        "Type": "AWS::IoT::Certificate",
        "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"},
    }
    assert resources["policy"] == {
        "Type": "AWS::IoT::Policy",
        "Properties": {"PolicyName": "alleycat-rider-alleycat-bikes"},
    }
    assert body["DeviceConfiguration"] == {
        "topic": "alleycat-publish",
        "ownTopic": "true",
        "resultsTopic": "alleycat-subscribe",
    }
    assert (result.template_arn, result.template) == (TEMPLATE_ARN, "created")

    # The bikes' policy: their own topic only, by policy variable.
    bike = _policy(clients.iot, "alleycat-rider-alleycat-bikes")["Statement"]
    assert bike[0]["Resource"] == f"{ARN}:client/${{iot:Connection.Thing.ThingName}}"
    assert bike[1] == {
        "Effect": "Allow",
        "Action": "iot:Publish",
        "Resource": f"{ARN}:topic/alleycat-publish/${{iot:Connection.Thing.ThingName}}",
    }

    # The claim certificate may use the provisioning topics of this template and nothing else.
    claim = _policy(clients.iot, "alleycat-claim-alleycat-bikes")["Statement"]
    topics = [
        "$aws/certificates/create/*",
        "$aws/certificates/create-from-csr/*",
        "$aws/provisioning-templates/alleycat-bikes/provision/*",
    ]
    assert claim == [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
        {
            "Effect": "Allow",
            "Action": ["iot:Publish", "iot:Receive"],
            "Resource": [f"{ARN}:topic/{topic}" for topic in topics],
        },
        {
            "Effect": "Allow",
            "Action": "iot:Subscribe",
            "Resource": [f"{ARN}:topicfilter/{topic}" for topic in topics],
        },
    ]

    # The claim files: the active certificate the claim policy is attached to, its key 0600.
    files = tmp_path / "certs" / "fleet-alleycat-bikes"
    pem = (files / "claim.pem.crt").read_text()
    described = clients.iot.describe_certificate(certificateId=result.claim_certificate_id)
    certificate = described["certificateDescription"]
    assert (certificate["status"], certificate["certificatePem"]) == ("ACTIVE", pem)
    assert certificate_id(pem) == result.claim_certificate_id
    policies = clients.iot.list_attached_policies(target=certificate["certificateArn"])
    assert [p["policyName"] for p in policies["policies"]] == ["alleycat-claim-alleycat-bikes"]
    assert "PRIVATE KEY" in (files / "claim.private.pem.key").read_text()
    assert stat.S_IMODE((files / "claim.private.pem.key").stat().st_mode) == 0o600


def test_a_second_run_changes_nothing(clients: Clients, tmp_path: Path) -> None:
    request = FleetRequest(template_name=TEMPLATE, certs_dir=tmp_path / "certs")
    clients.expect_no_template()
    clients.expect_create()
    first = clients.run(request)
    files = sorted(tmp_path.rglob("*"))
    contents = {path: path.read_bytes() for path in files if path.is_file()}

    # The template now exists with the body made: describe answers, nothing is created.
    [created] = clients.created
    clients.expect_existing(created["templateBody"], first.role_arn)
    second = clients.run(request)

    assert (second.template, second.created_role, second.created_claim) == ("kept", False, False)
    assert (second.role_arn, second.claim_certificate_id) == (
        first.role_arn,
        first.claim_certificate_id,
    )
    assert len(clients.created) == 1
    assert len(clients.iot.list_certificates()["certificates"]) == 1
    assert len(clients.iam.list_roles()["Roles"]) == 1
    for name in ("alleycat-rider-alleycat-bikes", "alleycat-claim-alleycat-bikes"):
        versions = clients.iot.list_policy_versions(policyName=name)["policyVersions"]
        assert len(versions) == 1
    assert sorted(tmp_path.rglob("*")) == files
    assert {path: path.read_bytes() for path in files if path.is_file()} == contents


def test_a_given_role_is_used_and_none_is_made(clients: Clients, tmp_path: Path) -> None:
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/factory-provisioning"
    request = FleetRequest(template_name=TEMPLATE, role_arn=role_arn, certs_dir=tmp_path / "certs")
    clients.expect_no_template()
    clients.expect_create()
    result = clients.run(request)
    assert clients.created[0]["provisioningRoleArn"] == role_arn == result.role_arn
    assert clients.iam.list_roles()["Roles"] == []


def test_a_refused_template_is_one_line_with_the_reason(clients: Clients, tmp_path: Path) -> None:
    request = FleetRequest(template_name=TEMPLATE, certs_dir=tmp_path / "certs")
    clients.expect_no_template()
    clients.stub.add_client_error(
        "create_provisioning_template",
        service_error_code="ResourceAlreadyExistsException",
        service_message="a template with this name exists",
        http_status_code=409,
    )
    with pytest.raises(ProvisionError) as raised:
        clients.run(request)
    assert str(raised.value) == (
        "AWS could not create the provisioning template alleycat-bikes: "
        "ResourceAlreadyExistsException: a template with this name exists"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "pass --thing-name for one bike or --fleet-template for a fleet"),
        (["--thing-name", "bike-1", "--fleet-template", TEMPLATE], "pass --thing-name for one"),
        (["--fleet-template", TEMPLATE, "--racer-id", "3"], "--racer-id is for --thing-name"),
        (["--fleet-template", TEMPLATE, "--shared-topic"], "--shared-topic is for --thing-name"),
        (["--thing-name", "bike-1", "--role-arn", "arn:x"], "--role-arn is for --fleet-template"),
        (["--fleet-template", "no spaces"], "Invalid value for '--fleet-template'"),
        (["--fleet-template", "x" * 37], "Invalid value for '--fleet-template'"),
    ],
)
def test_options_that_do_not_go_together_are_usage_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    # Refused before any AWS call: the endpoint is never contacted.
    result = CliRunner().invoke(
        cli, ["provision", "--endpoint-url", "http://127.0.0.1:9", "--dir", str(tmp_path), *args]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert list(tmp_path.iterdir()) == []
