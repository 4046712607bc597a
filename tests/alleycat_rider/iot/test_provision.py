"""``alleycat provision`` against moto's server: what exists in IoT afterwards, and the files."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import exceptions as bce
from click.testing import CliRunner, Result

from alleycat.cli import cli
from alleycat_rider.config import load_config
from alleycat_rider.iot.provision import (
    ProvisionError,
    ProvisionRequest,
    aws_errors,
    provision_with,
    racers_of_things,
)
from alleycat_rider.mqtt import check_credentials
from tests.servers.moto import MOTO_REGION
from tests.servers.ports import free_port

ACCOUNT = "123456789012"  # moto's account


def _provision(endpoint: str, tmp_path: Path, *args: str) -> Result:
    return CliRunner().invoke(
        cli,
        ["provision", "--endpoint-url", endpoint, "--dir", str(tmp_path / "certs"), *args],
    )


def _iot(endpoint: str) -> Any:
    return boto3.client("iot", endpoint_url=endpoint, region_name=MOTO_REGION)


def _active_certificates(iot: Any, thing: str) -> list[dict[str, Any]]:
    found = []
    for arn in iot.list_thing_principals(thingName=thing)["principals"]:
        cert_id = arn.rsplit("/", 1)[1]
        description = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
        if description["status"] == "ACTIVE":
            found.append(description)
    return found


def test_provision_creates_an_attached_thing_certificate_and_policy(
    moto_endpoint: str, tmp_path: Path
) -> None:
    result = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7")
    assert result.exit_code == 0, result.output
    iot = _iot(moto_endpoint)
    assert iot.describe_thing(thingName="bike-7")["thingName"] == "bike-7"
    [certificate] = _active_certificates(iot, "bike-7")
    policies = iot.list_attached_policies(target=certificate["certificateArn"])["policies"]
    assert [p["policyName"] for p in policies] == ["alleycat-rider-bike-7"]
    files = tmp_path / "certs" / "bike-7"
    assert (files / "certificate.pem.crt").read_text() == certificate["certificatePem"]
    assert "PRIVATE KEY" in (files / "private.pem.key").read_text()
    assert stat.S_IMODE((files / "private.pem.key").stat().st_mode) == 0o600


def test_under_umask_000_the_files_are_not_writable_by_others(
    moto_endpoint: str, tmp_path: Path
) -> None:
    previous = os.umask(0)
    try:
        result = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7")
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    modes = {
        path.relative_to(tmp_path).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in tmp_path.rglob("*")
    }
    assert modes == {
        "certs": 0o755,
        "certs/bike-7": 0o755,
        "certs/bike-7/certificate.pem.crt": 0o644,
        "certs/bike-7/private.pem.key": 0o600,
        "certs/bike-7/rider.toml": 0o644,
    }


def _expected_policy(publish: str) -> dict[str, Any]:
    arn = f"arn:aws:iot:{MOTO_REGION}:{ACCOUNT}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": f"{arn}:client/${{iot:Connection.Thing.ThingName}}",
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
            },
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": f"{arn}:topic/{publish}"},
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": f"{arn}:topicfilter/alleycat-subscribe",
            },
            {
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": f"{arn}:topic/alleycat-subscribe",
            },
        ],
    }


def test_policy_allows_exactly_connect_as_the_thing_publish_on_its_own_topic_and_read_results(
    moto_endpoint: str, tmp_path: Path
) -> None:
    result = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7")
    assert result.exit_code == 0, result.output
    policy = _iot(moto_endpoint).get_policy(policyName="alleycat-rider-bike-7")
    # Policy variables, not the name itself: the same document holds for every bike.
    own_topic = "alleycat-publish/${iot:Connection.Thing.ThingName}"
    assert json.loads(policy["policyDocument"]) == _expected_policy(own_topic)
    assert "(publish on alleycat-publish/bike-7 only)" in result.output


def test_shared_topic_policy_allows_the_one_ride_topic_and_the_bike_publishes_there(
    moto_endpoint: str, tmp_path: Path
) -> None:
    result = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7", "--shared-topic")
    assert result.exit_code == 0, result.output
    policy = _iot(moto_endpoint).get_policy(policyName="alleycat-rider-bike-7")
    assert json.loads(policy["policyDocument"]) == _expected_policy("alleycat-publish")
    config_path = tmp_path / "certs" / "bike-7" / "rider.toml"
    config = load_config({"racer_id": 7}, {"HOME": str(tmp_path)}, config_path)
    assert config.topic == "alleycat-publish"

    # Provisioned again without it, the bike goes back to its own topic.
    again = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7")
    assert again.exit_code == 0, again.output
    policy = _iot(moto_endpoint).get_policy(policyName="alleycat-rider-bike-7")
    assert json.loads(policy["policyDocument"])["Statement"][1]["Resource"].endswith(
        "topic/alleycat-publish/${iot:Connection.Thing.ThingName}"
    )
    config = load_config({"racer_id": 7}, {"HOME": str(tmp_path)}, config_path)
    assert config.topic == "alleycat-publish/bike-7"


def test_rider_config_connects_alleycat_ride_to_the_data_endpoint_as_the_thing(
    moto_endpoint: str, tmp_path: Path
) -> None:
    result = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7", "--racer-id", "42")
    assert result.exit_code == 0, result.output
    config_path = tmp_path / "certs" / "bike-7" / "rider.toml"
    config = load_config({}, {"HOME": str(tmp_path)}, config_path)
    assert config.endpoint.endswith(f"-ats.iot.{MOTO_REGION}.amazonaws.com")
    assert f"Endpoint:    {config.endpoint}\n" in result.output
    assert (config.port, config.client_id, config.racer_id) == (8883, "bike-7", 42)
    assert config.ca is None  # Amazon's CA is in the system trust store
    assert config.cert == tmp_path / "certs" / "bike-7" / "certificate.pem.crt"
    assert config.key == tmp_path / "certs" / "bike-7" / "private.pem.key"
    # The bike's own topic, the only one its policy lets it publish on.
    assert (config.topic, config.results_topic) == ("alleycat-publish/bike-7", "alleycat-subscribe")
    assert f"alleycat ride --config {config_path}\n" in result.output


def test_the_racer_id_is_recorded_on_the_thing_and_read_back_as_a_client_map(
    moto_endpoint: str, tmp_path: Path
) -> None:
    for thing, racer in (("bike-7", "42"), ("bike-8", "43")):
        result = _provision(moto_endpoint, tmp_path, "--thing-name", thing, "--racer-id", racer)
        assert result.exit_code == 0, result.output
    assert _provision(moto_endpoint, tmp_path, "--thing-name", "bike-9").exit_code == 0
    iot = _iot(moto_endpoint)
    assert iot.describe_thing(thingName="bike-7")["attributes"] == {"racerId": "42"}

    # The bike changes hands: provisioning it again for another racer replaces the attribute.
    again = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-8", "--racer-id", "44")
    assert again.exit_code == 0, again.output

    assert racers_of_things(iot) == {"bike-7": 42, "bike-8": 44}  # bike-9 rides as no one


def test_rider_config_finds_its_files_from_any_directory_and_after_being_moved(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli, ["provision", "--endpoint-url", moto_endpoint, "--thing-name", "bike-7"]
    )
    assert result.exit_code == 0, result.output
    assert "alleycat ride --config certs/bike-7/rider.toml --racer-id RACER_ID" in result.output

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(
        {"racer_id": 1}, {"HOME": str(tmp_path)}, tmp_path / "certs/bike-7/rider.toml"
    )
    check_credentials(config.mqtt_settings)  # raises if the certificate or key is not found
    assert config.cert == tmp_path / "certs" / "bike-7" / "certificate.pem.crt"

    # Copied to the bike's own place, as the printed advice says.
    moved = shutil.copytree(tmp_path / "certs" / "bike-7", tmp_path / "home" / "bike-7")
    config = load_config({"racer_id": 1}, {"HOME": str(tmp_path)}, moved / "rider.toml")
    check_credentials(config.mqtt_settings)
    assert config.key == moved / "private.pem.key"


def test_running_twice_keeps_the_one_active_certificate(moto_endpoint: str, tmp_path: Path) -> None:
    first = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7")
    key = (tmp_path / "certs" / "bike-7" / "private.pem.key").read_bytes()
    second = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7")
    assert (first.exit_code, second.exit_code) == (0, 0), second.output
    assert len(_active_certificates(_iot(moto_endpoint), "bike-7")) == 1
    assert "(kept, active)" in second.output
    assert (tmp_path / "certs" / "bike-7" / "private.pem.key").read_bytes() == key


def test_running_again_without_the_local_key_is_refused_unless_rotating(
    moto_endpoint: str, tmp_path: Path
) -> None:
    _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7")
    (tmp_path / "certs" / "bike-7" / "private.pem.key").unlink()
    refused = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7")
    assert refused.exit_code == 1
    assert "already has an active certificate" in refused.output
    assert "pass --rotate" in refused.output
    assert len(_active_certificates(_iot(moto_endpoint), "bike-7")) == 1

    rotated = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7", "--rotate")
    assert rotated.exit_code == 0, rotated.output
    assert len(_active_certificates(_iot(moto_endpoint), "bike-7")) == 2
    assert "Still active: certificate" in rotated.output
    assert f"aws iot update-certificate --region {MOTO_REGION} --certificate-id" in rotated.output


def test_changing_the_topic_makes_a_new_default_policy_version(
    moto_endpoint: str, tmp_path: Path
) -> None:
    _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7")
    result = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7", "--topic", "rides/eu")
    assert result.exit_code == 0, result.output
    policy = _iot(moto_endpoint).get_policy(policyName="alleycat-rider-bike-7")
    publish = json.loads(policy["policyDocument"])["Statement"][1]
    assert publish["Resource"] == (
        f"arn:aws:iot:{MOTO_REGION}:{ACCOUNT}:topic/rides/eu/${{iot:Connection.Thing.ThingName}}"
    )
    assert policy["defaultVersionId"] == "2"
    assert 'topic = "rides/eu"' in (tmp_path / "certs" / "bike-7" / "rider.toml").read_text()


def test_policy_keeps_at_most_five_versions_as_the_topic_keeps_changing(
    moto_endpoint: str, tmp_path: Path
) -> None:
    iot = _iot(moto_endpoint)
    sts = boto3.client("sts", endpoint_url=moto_endpoint, region_name=MOTO_REGION)
    for n in range(7):
        request = ProvisionRequest(
            thing_name="bike-7", certs_dir=tmp_path / "certs", topic=f"rides/{n}"
        )
        provision_with(request, iot=iot, sts=sts, region=MOTO_REGION)
    versions = iot.list_policy_versions(policyName="alleycat-rider-bike-7")["policyVersions"]
    assert len(versions) == 5
    policy = iot.get_policy(policyName="alleycat-rider-bike-7")
    assert json.loads(policy["policyDocument"])["Statement"][1]["Resource"].endswith(
        "rides/6/${iot:Connection.Thing.ThingName}"
    )
    assert len(_active_certificates(iot, "bike-7")) == 1


def test_key_that_cannot_be_written_leaves_no_certificate_behind(
    moto_endpoint: str, tmp_path: Path
) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "bike-7").write_text("a file where the directory should be")
    result = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7")
    assert result.exit_code == 1
    assert "cannot write the key" in result.output
    assert _iot(moto_endpoint).list_certificates()["certificates"] == []


def test_no_aws_credentials_is_one_clear_line(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7")
    assert result.exit_code == 1
    assert result.output == (
        "Error: no AWS credentials found: set AWS_PROFILE or run `aws configure`\n"
    )


def test_unreachable_endpoint_is_one_clear_line(moto_endpoint: str, tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = _provision(nowhere, tmp_path, "--thing-name", "bike-7")
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("Error: cannot reach AWS to look up the AWS account")
    assert line.endswith("check the network, --region and --endpoint-url")


def test_missing_region_is_one_clear_line(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    result = _provision(moto_endpoint, tmp_path, "--thing-name", "bike-7")
    assert result.exit_code == 1
    assert result.output == "Error: no AWS region: pass --region or set AWS_REGION\n"


@pytest.mark.parametrize("option", ["--topic", "--results-topic"])
@pytest.mark.parametrize("topic", ["*", "rides/?", "rides/#", "+/rides"])
def test_a_wildcard_topic_would_open_the_policy_and_is_refused(
    tmp_path: Path, option: str, topic: str
) -> None:
    # Refused before any AWS call: the endpoint is never contacted.
    result = _provision("http://127.0.0.1:9", tmp_path, "--thing-name", "bike-7", option, topic)
    assert result.exit_code == 2
    assert (
        f"Invalid value for '{option}': must be one topic, without the wildcards" in result.output
    )
    assert not (tmp_path / "certs").exists()


def test_bad_thing_name_is_a_usage_error(moto_endpoint: str, tmp_path: Path) -> None:
    result = _provision(moto_endpoint, tmp_path, "--thing-name", "bike 7")
    assert result.exit_code == 2
    assert "Invalid value for '--thing-name'" in result.output


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (bce.NoCredentialsError(), "no AWS credentials found: set AWS_PROFILE"),
        (bce.PartialCredentialsError(provider="env", cred_var="x"), "no AWS credentials found"),
        (bce.ProfileNotFound(profile="bikes"), "could not be found: pick one"),
        (bce.NoRegionError(), "no AWS region"),
        (bce.EndpointConnectionError(endpoint_url="https://x"), "cannot reach AWS to act"),
        (bce.ConnectTimeoutError(endpoint_url="https://x"), "cannot reach AWS to act"),
        (bce.ReadTimeoutError(endpoint_url="https://x"), "cannot reach AWS to act"),
        (
            bce.ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "Op"),
            "AWS denied permission to act (AccessDeniedException: no): use credentials",
        ),
        (
            bce.ClientError({"Error": {"Code": "ExpiredTokenException", "Message": "old"}}, "Op"),
            "AWS denied permission to act",
        ),
        (
            bce.ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "Op"),
            "AWS could not act: ThrottlingException: slow",
        ),
        (bce.DataNotFoundError(data_path="x"), "cannot act"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "",
)
def test_every_boto_error_becomes_one_line_saying_what_to_do(
    error: Exception, expected: str
) -> None:
    with pytest.raises(ProvisionError) as raised:
        with aws_errors("act"):
            raise error
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)


def test_rider_agent_modules_do_not_import_boto3() -> None:
    code = (
        "import sys, alleycat_rider.iot.provision, alleycat_rider.iot.provision_cli, "
        "alleycat_rider.iot.certs_cli; print('boto3' in sys.modules, 'botocore' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
