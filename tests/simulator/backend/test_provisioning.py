"""The stack's fleet provisioning: templates evaluated as AWS's format says, ownership tokens
single-use and expiring (pure, with a fake clock), and the broker's ACL refusing a claim
certificate everything but enrolment (real mosquitto with mutual TLS)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from awscrt import mqtt5
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from alleycat_rider.agent.enrol import Claim, enrol
from alleycat_rider.iot.devcerts import make_dev_pki
from simulator.backend.fleet_template import (
    ProvisioningTemplate,
    Refusal,
    TemplateFileError,
    default_template,
    load_templates,
    parse_template,
)
from simulator.backend.provisioning import (
    CREATE_TOPIC,
    CSR_TOPIC,
    ClientMap,
    FleetProvisioning,
    LocalCa,
    RegistryError,
    ThingRegistry,
    provision_topic,
)
from tests.servers.provisioning import ProvisioningBroker, provisioning_broker

BODY: dict[str, Any] = {
    "Parameters": {
        "SerialNumber": {"Type": "String"},
        "RacerId": {"Type": "String"},
        "Class": {"Type": "String", "Default": "2"},
        "AWS::IoT::Certificate::Id": {"Type": "String"},
    },
    "Resources": {
        "thing": {
            "Type": "AWS::IoT::Thing",
            "Properties": {
                "ThingName": {"Fn::Join": ["-", ["bike", {"Ref": "SerialNumber"}]]},
                "AttributePayload": {"racerId": {"Ref": "RacerId"}},
            },
        },
        "certificate": {
            "Type": "AWS::IoT::Certificate",
            "Properties": {
                "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
                "Status": "Active",
            },
        },
        "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "alleycat-rider"}},
    },
    "DeviceConfiguration": {"topic": "alleycat-publish", "classId": {"Ref": "Class"}},
}


def test_a_template_evaluates_ref_join_and_defaults_into_the_thing_and_configuration() -> None:
    made = ProvisioningTemplate(name="t", body=BODY).register(
        {"SerialNumber": "SN-7", "RacerId": "12"}, "c0ffee"
    )
    assert made.thing_name == "bike-SN-7"
    assert made.attributes == {"racerId": "12"}
    assert made.certificate_active and made.policies == ("alleycat-rider",)
    assert made.device_configuration == {"topic": "alleycat-publish", "classId": "2"}


@pytest.mark.parametrize(
    ("template", "parameters", "code", "message"),
    [
        (ProvisioningTemplate(name="t", enabled=False, body=BODY), {"SerialNumber": "1"},
         "InvalidRequest", "Template t is disabled"),
        (ProvisioningTemplate(name="t", body=BODY), {"SerialNumber": "1"},
         "InvalidParameters", "Parameter RacerId is required"),
        (ProvisioningTemplate(name="t", body=BODY, allow_list={"SerialNumber": ("SN-1*",)}),
         {"SerialNumber": "SN-2", "RacerId": "1"},
         "AccessDenied", "SerialNumber 'SN-2' is not allowed by the template t"),
        (ProvisioningTemplate(name="t", body={**BODY, "DeviceConfiguration": {
            "x": {"Fn::Sub": "a"}}}), {"SerialNumber": "1", "RacerId": "1"},
         "InvalidTemplate", "Fn::Sub is not evaluated by the stack"),
        (ProvisioningTemplate(name="t", body={"Resources": {"thing": {"Type": "AWS::IoT::Thing",
            "Properties": {"ThingName": "x", "AttributePayload": [1]}}}}),
         {}, "InvalidTemplate",
         "Template t: cannot convert dictionary update sequence element #0 to a sequence"),
    ],
    ids=["disabled", "missing-parameter", "not-on-the-allow-list", "unknown-function",
         "wrong-shape"],
)  # fmt: skip
def test_a_template_refuses_with_the_reason(
    template: ProvisioningTemplate, parameters: dict[str, str], code: str, message: str
) -> None:
    with pytest.raises(Refusal) as refused:
        template.register(parameters, "c0ffee")
    assert (refused.value.error_code, refused.value.error_message) == (code, message)


def test_the_default_template_is_the_one_provision_writes_and_a_template_file_is_awss_format(
    tmp_path: Path,
) -> None:
    templates = load_templates(tmp_path / "templates")
    [written] = (tmp_path / "templates").glob("*.json")
    document = json.loads(written.read_text())
    assert document["templateName"] == "alleycat-bikes" and document["enabled"] is True
    assert set(document["templateBody"]) == {"Parameters", "Resources", "DeviceConfiguration"}
    assert templates["alleycat-bikes"] == default_template()
    # As AWS stores it, the body may be a JSON string; a template is disabled unless enabled.
    parsed = parse_template({"templateName": "x", "templateBody": json.dumps(BODY)}, "x.json")
    assert parsed.body == BODY and parsed.enabled is False
    with pytest.raises(TemplateFileError, match=r"x\.json needs templateName"):
        parse_template({"templateBody": BODY}, "x.json")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def service(tmp_path: Path) -> tuple[FleetProvisioning, Clock]:
    pki = make_dev_pki(tmp_path / "pki", [])
    clock = Clock()
    templates = {"t": ProvisioningTemplate(name="t", enabled=True, body=BODY)}
    registry = ThingRegistry(tmp_path / "things.json")
    return FleetProvisioning(LocalCa(pki), templates, registry, monotonic=clock), clock


def csr_request() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone-else")]))
        .sign(key, hashes.SHA256())
    )
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    return json.dumps({"certificateSigningRequest": pem}).encode()


def register(service: FleetProvisioning, token: str, serial: str = "7") -> Any:
    request = {"certificateOwnershipToken": token, "parameters": {"SerialNumber": serial,
               "RacerId": "12"}}  # fmt: skip
    return service.handle(provision_topic("t"), json.dumps(request).encode())


def test_an_ownership_token_registers_one_thing_once(
    service: tuple[FleetProvisioning, Clock],
) -> None:
    provisioning, _ = service
    made = provisioning.handle(CSR_TOPIC, csr_request())
    assert made is not None and made.topic == f"{CSR_TOPIC}/accepted"
    assert set(made.body) == {"certificateId", "certificatePem", "certificateOwnershipToken"}
    cert = x509.load_pem_x509_certificate(made.body["certificatePem"].encode())
    # Named by the stand-in, not by the CSR: the broker's user name is not the bike's to choose.
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value != "someone-else"
    assert made.body["certificateId"] == cert.fingerprint(hashes.SHA256()).hex()

    token = made.body["certificateOwnershipToken"]
    first = register(provisioning, token)
    assert (first.topic, first.body, first.registered) == (
        f"{provision_topic('t')}/accepted",
        {"thingName": "bike-7", "deviceConfiguration": {"topic": "alleycat-publish",
                                                         "classId": "2"}},
        True,
    )  # fmt: skip
    again = register(provisioning, token, "8")
    assert again.topic == f"{provision_topic('t')}/rejected"
    assert again.body["errorCode"] == "InvalidCertificateOwnershipToken"
    assert provisioning.registry.racers() == {"bike-7": 12}


def test_an_ownership_token_expires_after_an_hour(
    service: tuple[FleetProvisioning, Clock],
) -> None:
    provisioning, clock = service
    made = provisioning.handle(CSR_TOPIC, csr_request())
    assert made is not None
    clock.now = 3600.5
    late = register(provisioning, made.body["certificateOwnershipToken"])
    assert late.body == {
        "statusCode": 400,
        "errorCode": "InvalidCertificateOwnershipToken",
        "errorMessage": "Certificate ownership token is unknown, used or expired",
    }
    assert provisioning.registry.principals() == {}


def test_a_refused_registration_leaves_the_token_for_another_try_and_bad_requests_are_refused(
    service: tuple[FleetProvisioning, Clock],
) -> None:
    provisioning, _ = service
    made = provisioning.handle(CSR_TOPIC, csr_request())
    assert made is not None
    token = made.body["certificateOwnershipToken"]
    missing = provisioning.handle(
        provision_topic("t"), json.dumps({"certificateOwnershipToken": token}).encode()
    )
    assert missing is not None and missing.body["errorCode"] == "InvalidParameters"
    assert register(provisioning, token).topic.endswith("/accepted")
    unknown = provisioning.handle(provision_topic("nope"), b"{}")
    assert unknown is not None and unknown.body["errorCode"] == "InvalidCertificateOwnershipToken"
    garbage = provisioning.handle(CSR_TOPIC, b"not json")
    assert garbage is not None and garbage.body["errorCode"] == "InvalidRequest"
    bad_csr = provisioning.handle(CSR_TOPIC, b'{"certificateSigningRequest": "x"}')
    assert bad_csr is not None and bad_csr.topic == f"{CSR_TOPIC}/rejected"
    assert provisioning.handle("alleycat-publish/x", b"{}") is None


def test_create_keys_and_certificate_gives_a_key_that_matches_its_certificate(
    service: tuple[FleetProvisioning, Clock],
) -> None:
    provisioning, _ = service
    made = provisioning.handle(CREATE_TOPIC, b"{}")
    assert made is not None and made.topic == f"{CREATE_TOPIC}/accepted"
    key = serialization.load_pem_private_key(made.body["privateKey"].encode(), None)
    cert = x509.load_pem_x509_certificate(made.body["certificatePem"].encode())
    assert cert.public_key() == key.public_key()
    assert register(provisioning, made.body["certificateOwnershipToken"]).registered


def test_the_standings_map_takes_the_racer_each_bike_enrolled_for(tmp_path: Path) -> None:
    registry = ThingRegistry(tmp_path / "things.json")
    racers = ClientMap({"bike-1": 1}, registry)
    assert racers.get("SN-9") is None
    registry.add("SN-9", {"racerId": "9"}, "enrolled-1")
    assert dict(racers) == {"bike-1": 1, "SN-9": 9}
    # Kept for the next start of the stack.
    assert ThingRegistry(tmp_path / "things.json").principals() == {"enrolled-1": "SN-9"}
    (tmp_path / "things.json").write_text("{")
    with pytest.raises(RegistryError, match=r"fix or remove the file \(bikes then enrol again\)"):
        ThingRegistry(tmp_path / "things.json")


# Real mosquitto with the stack's ACL and the service.

TAKEN = mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS
REFUSED = mqtt5.PubackReasonCode.NOT_AUTHORIZED


def publish(client: Any, topic: str, payload: bytes = b"{}") -> mqtt5.PubackReasonCode:
    packet = mqtt5.PublishPacket(topic=topic, payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE)
    code: mqtt5.PubackReasonCode = client._client.publish(packet).result(5).puback.reason_code
    return code


def subscribe(client: Any, topic: str) -> list[Any]:
    packet = mqtt5.SubscribePacket(
        subscriptions=[mqtt5.Subscription(topic_filter=topic, qos=mqtt5.QoS.AT_LEAST_ONCE)]
    )
    return list(client._client.subscribe(packet).result(5).reason_codes)


@pytest.fixture
def stand_in(tmp_path: Path) -> Any:
    with provisioning_broker(tmp_path / "stand-in") as running:
        yield running


def test_the_claim_certificate_may_only_enrol(stand_in: ProvisioningBroker) -> None:
    with stand_in.client(*stand_in.claim, "SN-1") as claim:
        # No ride, on any topic, and no standings: as the claim policy of IoT Core.
        for topic in ("alleycat-publish/SN-1", "alleycat-publish/alleycat-claim",
                      "alleycat-publish", "alleycat-subscribe"):  # fmt: skip
            assert publish(claim, topic) == REFUSED, topic
        # mosquitto grants any subscription, but delivers only what the ACL lets it read.
        claim.subscribe("alleycat-publish/#")
        with stand_in.device("bike-1") as bike:
            assert publish(bike, "alleycat-publish/bike-1") == mqtt5.PubackReasonCode.SUCCESS
        # Another template than the stack's: refused too.
        assert publish(claim, provision_topic("other")) == REFUSED
        # Enrolment's topics are open: the request reaches the service, the answer comes back.
        accepted = f"{CSR_TOPIC}/accepted"
        assert subscribe(claim, accepted) == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
        assert subscribe(claim, f"{CSR_TOPIC}/rejected") == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
        assert publish(claim, CSR_TOPIC, csr_request()) == mqtt5.PubackReasonCode.SUCCESS
        claim.wait_for(1, timeout=10)
    assert claim.topics == [accepted]  # the answer, and not bike-1's ride before it


def test_a_bike_enrolled_with_keys_from_the_service_rides_on_its_own_topic_only(
    stand_in: ProvisioningBroker, tmp_path: Path
) -> None:
    claim = Claim(
        settings=stand_in.settings(*stand_in.claim, "SN-42"),
        template="alleycat-bikes",
        parameters={"SerialNumber": "SN-42", "RacerId": "42"},
        keys="service",
    )
    identity = enrol(claim, tmp_path / "state")
    assert identity.thing_name == "SN-42"
    assert identity.device_configuration["ownTopic"] == "true"
    with stand_in.client(identity.cert, identity.key, identity.thing_name) as bike:
        assert publish(bike, "alleycat-publish/SN-42") == TAKEN
        assert publish(bike, "alleycat-publish/bike-1") == REFUSED
        assert publish(bike, CSR_TOPIC, csr_request()) == REFUSED
    assert stand_in.registry.racers() == {"SN-42": 42}


def test_a_certificate_made_but_not_registered_may_do_nothing(
    stand_in: ProvisioningBroker, tmp_path: Path
) -> None:
    made = stand_in.service.handle(CREATE_TOPIC, b"{}")
    assert made is not None
    cert, key = tmp_path / "pending.crt", tmp_path / "pending.key"
    cert.write_text(made.body["certificatePem"])
    key.write_text(made.body["privateKey"])
    with stand_in.client(cert, key, "SN-5") as pending:
        assert publish(pending, "alleycat-publish/SN-5") == REFUSED


def test_an_enrolled_bike_rides_again_after_the_broker_and_the_service_restart(
    tmp_path: Path,
) -> None:
    with provisioning_broker(tmp_path / "stand-in") as first:
        claim = Claim(
            settings=first.settings(*first.claim, "SN-43"),
            template="alleycat-bikes",
            parameters={"SerialNumber": "SN-43", "RacerId": "43"},
        )
        identity = enrol(claim, tmp_path / "state")
    # The things are kept in the folder: the next start's ACL knows the bike's certificate.
    with (
        provisioning_broker(tmp_path / "stand-in") as second,
        second.client(identity.cert, identity.key, "SN-43") as bike,
    ):
        assert publish(bike, "alleycat-publish/SN-43") == TAKEN
        assert publish(bike, "alleycat-publish/SN-44") == REFUSED
