"""A bike's first boot: ``alleycat ride`` with only a claim certificate enrols by fleet
provisioning, against real mosquitto with mutual TLS and a responder answering IoT Core's fleet
provisioning MQTT API with the development CA."""

from __future__ import annotations

import datetime
import json
import signal
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from alleycat_rider.agent.enrol import Claim, enrol, stored_identity
from alleycat_rider.mqtt import MqttSettings
from tests.alleycat_rider.test_agent_broker import agent
from tests.servers.mosquitto import MqttClient, RunningBroker

TEMPLATE = "alleycat-bikes"
CSR_TOPIC = "$aws/certificates/create-from-csr/json"
PROVISION_TOPIC = "$aws/provisioning-templates/+/provision/json"


class Responder:
    """IoT Core's fleet provisioning API, as far as a bike sees it: certificates from CSRs signed
    by the broker's CA (common name: the serial number, mosquitto's user name), single-use
    tokens, and RegisterThing for one template, refusing serial numbers it is told to."""

    def __init__(self, client: MqttClient, broker: RunningBroker) -> None:
        self.client = client
        self.ca_cert = x509.load_pem_x509_certificate(broker.pki.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(broker.pki.ca_key.read_bytes(), None)
        self.ca_key: Any = ca_key
        self.tokens: dict[str, str] = {}
        self.refused_serials: set[str] = set()
        self.csr_to_drop = 0
        self.answer_register = threading.Event()
        self.answer_register.set()
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        done = 0
        while not self._stop.is_set():
            with self.client._received:
                if len(self.client.messages) == done:
                    self.client._received.wait(0.2)
                pending = list(zip(self.client.topics, self.client.messages, strict=True))[done:]
            for topic, payload in pending:
                done += 1
                self._answer(topic, json.loads(payload))

    def _answer(self, topic: str, request: dict[str, Any]) -> None:
        self.requests.append(topic)
        if topic == CSR_TOPIC and self.csr_to_drop:
            self.csr_to_drop -= 1  # lost on the way
            return
        if topic == CSR_TOPIC:
            csr = x509.load_pem_x509_csr(request["certificateSigningRequest"].encode())
            serial = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            now = datetime.datetime.now(datetime.UTC)
            cert = (
                x509.CertificateBuilder()
                .subject_name(csr.subject)
                .issuer_name(self.ca_cert.subject)
                .public_key(csr.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .sign(self.ca_key, hashes.SHA256())
            )
            token = str(uuid.uuid4())
            self.tokens[token] = str(serial)
            self._reply(
                topic,
                True,
                {
                    "certificateId": cert.fingerprint(hashes.SHA256()).hex(),
                    "certificatePem": cert.public_bytes(serialization.Encoding.PEM).decode(),
                    "certificateOwnershipToken": token,
                },
            )
            return
        if not self.answer_register.is_set():
            return  # the bike loses power before the answer
        template = topic.split("/")[2]
        serial = request.get("parameters", {}).get("SerialNumber")
        owner = self.tokens.pop(request.get("certificateOwnershipToken", ""), None)
        if template != TEMPLATE or owner is None or serial in self.refused_serials:
            reason = "No template" if template != TEMPLATE else "Serial number not allowed"
            self._reply(
                topic,
                False,
                {"statusCode": 400, "errorCode": "InvalidParameters", "errorMessage": reason},
            )
            return
        self._reply(
            topic,
            True,
            {
                "thingName": serial,
                "deviceConfiguration": {
                    "topic": "alleycat-publish",
                    "ownTopic": "true",
                    "resultsTopic": "alleycat-subscribe",
                },
            },
        )

    def _reply(self, topic: str, accepted: bool, body: dict[str, Any]) -> None:
        suffix = "accepted" if accepted else "rejected"
        self.client.publish(f"{topic}/{suffix}", json.dumps(body).encode())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def responder(mqtt_broker: RunningBroker) -> Iterator[Responder]:
    with mqtt_broker.client("bike-3", client_id="fleet-provisioning") as client:
        client.subscribe(CSR_TOPIC)
        client.subscribe(PROVISION_TOPIC)
        service = Responder(client, mqtt_broker)
        service.start()
        try:
            yield service
        finally:
            service.stop()


def first_boot_args(broker: RunningBroker, state: Path, serial: str, *extra: str) -> list[str]:
    """A factory image's settings: the claim certificate (bike-1's here), no certificate of its
    own."""
    claim_cert, claim_key = broker.pki.client("bike-1")
    return [
        "--endpoint", broker.host, "--port", str(broker.port), "--ca", str(broker.pki.ca_cert),
        "--claim-cert", str(claim_cert), "--claim-key", str(claim_key),
        "--fleet-template", TEMPLATE, "--serial-number", serial, "--racer-id", "17",
        "--spool", str(state / "spool.sqlite3"), "--sensor", "mock", "--seed", "3",
        "--log-format", "json", "--log-level", "debug", *extra,
    ]  # fmt: skip


def test_a_bike_with_only_the_claim_enrols_rides_under_its_thing_name_and_enrols_once(
    mqtt_broker: RunningBroker, responder: Responder, tmp_path: Path
) -> None:
    # The serial number is a device name the broker's ACL-free user names accept.
    args = first_boot_args(mqtt_broker, tmp_path, "SN-1001")
    with mqtt_broker.subscriber("alleycat-publish/SN-1001") as rides:
        with agent(args) as rider:
            assert rider.wait_for("enrolled")["thing_name"] == "SN-1001"
            starting = rider.wait_for("starting")
            rider.wait_for("connected")
            rider.wait_for("message", count=len(rider.events("message")) + 2)
            assert rider.stop() == 0
            first = rider.events("stopped")[0]
        rides.wait_for(first["acked"], timeout=10)
        assert (starting["client_id"], starting["topic"]) == ("SN-1001", "alleycat-publish/SN-1001")
        assert first["acked"] == first["produced"] >= 3

        identity = stored_identity(tmp_path)
        assert identity is not None and identity.thing_name == "SN-1001"
        assert stat.S_IMODE(identity.key.stat().st_mode) == 0o600
        assert responder.requests.count(CSR_TOPIC) == 1

        # Started again, it rides with the stored identity: no second enrolment.
        with agent(args) as rider:
            rider.wait_for("connected")
            assert rider.events("enrolling") == []
            rider.wait_for("message", count=len(rider.events("message")) + 1)
            assert rider.stop() == 0
            second = rider.events("stopped")[0]
        rides.wait_for(first["acked"] + second["acked"], timeout=10)
    assert responder.requests.count(CSR_TOPIC) == 1
    assert len(rides.messages) == first["acked"] + second["acked"]


def test_a_bike_killed_between_the_two_steps_enrols_cleanly_on_the_next_start(
    mqtt_broker: RunningBroker, responder: Responder, tmp_path: Path
) -> None:
    args = first_boot_args(mqtt_broker, tmp_path, "SN-1002")
    responder.answer_register.clear()
    with agent(args) as rider:
        rider.wait_for("enrolling")
        rider.wait_until(lambda: any("/provision/" in t for t in responder.requests), 20)
        rider.stop(signal.SIGKILL)
    assert stored_identity(tmp_path) is None  # certificate made, thing not registered

    responder.answer_register.set()
    with agent(args) as rider:
        assert rider.wait_for("enrolled")["thing_name"] == "SN-1002"
        rider.wait_for("connected")
        assert rider.stop() == 0
    assert responder.requests.count(CSR_TOPIC) == 2  # a new key and certificate the second time
    identity = stored_identity(tmp_path)
    assert identity is not None and identity.thing_name == "SN-1002"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ([], "Serial number not allowed (InvalidParameters)"),
        (["--fleet-template", "disabled-template"], "No template (InvalidParameters)"),
    ],
    ids=["unknown-serial", "unknown-template"],
)
def test_a_template_that_refuses_is_one_line_and_exit_1(
    mqtt_broker: RunningBroker,
    responder: Responder,
    tmp_path: Path,
    extra: list[str],
    reason: str,
) -> None:
    responder.refused_serials.add("SN-0000")
    args = first_boot_args(mqtt_broker, tmp_path, "SN-0000", *extra)
    with agent(args) as rider:
        status = rider.process.wait(60)
        rider.stop()
    assert status == 1
    [line] = [line for line in rider.stderr if line.strip()]
    assert line.startswith("Error: fleet provisioning with the template")
    assert line.rstrip().endswith(f"refused: {reason}")
    assert stored_identity(tmp_path) is None


def test_a_step_without_an_answer_is_asked_again_with_backoff(
    mqtt_broker: RunningBroker, responder: Responder, tmp_path: Path
) -> None:
    responder.csr_to_drop = 2
    claim_cert, claim_key = mqtt_broker.pki.client("bike-1")
    claim = Claim(
        settings=MqttSettings(
            endpoint=mqtt_broker.host,
            port=mqtt_broker.port,
            client_id="SN-1003",
            cert=claim_cert,
            key=claim_key,
            ca=mqtt_broker.pki.ca_cert,
        ),
        template=TEMPLATE,
        parameters={"SerialNumber": "SN-1003", "RacerId": "3"},
        timeout=1,
    )
    events: list[tuple[str, str, dict[str, Any]]] = []
    pauses: list[float] = []
    identity = enrol(
        claim,
        tmp_path,
        report=lambda level, message, **fields: events.append((level, message, fields)),
        sleep=pauses.append,
    )
    stored = stored_identity(tmp_path)
    assert stored is not None and stored.thing_name == identity.thing_name == "SN-1003"
    assert responder.requests.count(CSR_TOPIC) == 3
    assert [(level, message) for level, message, _ in events] == [
        ("warning", "enrolment unanswered")
    ] * 2
    assert pauses == [1.0, 2.0]
