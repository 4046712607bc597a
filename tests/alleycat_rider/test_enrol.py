"""A bike's first boot: ``alleycat ride`` with only a claim certificate enrols by fleet
provisioning, against real mosquitto with mutual TLS, the stack's ACL and the stack's fleet
provisioning service (:mod:`simulator.backend.provisioning`) with the development CA."""

from __future__ import annotations

import json
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from alleycat_rider.agent.enrol import Claim, Identity, enrol, stored_identity
from simulator.backend.acl import RULE_CLIENT_ID
from simulator.backend.fleet_template import ProvisioningTemplate, default_template
from simulator.backend.provisioning import CSR_TOPIC, Reply
from tests.alleycat_rider.test_agent_broker import agent
from tests.servers.provisioning import ProvisioningBroker, provisioning_broker

TEMPLATE = "alleycat-bikes"
#: The fleet's template allows these serial numbers only; ``retired`` is disabled.
TEMPLATES = {
    TEMPLATE: ProvisioningTemplate(
        name=TEMPLATE, body=default_template().body, allow_list={"SerialNumber": ("SN-1*",)}
    ),
    "retired": ProvisioningTemplate(name="retired", enabled=False, body=default_template().body),
}


def _another_csr() -> str:
    """A CSR of a key that is not the bike's: as another bike enrolling at once would send."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SN-OTHER")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


class Requests:
    """What the service was asked, and a hand on its answers: requests to drop, and
    RegisterThing held back (the bike loses power before the answer)."""

    def __init__(self, handle: Callable[[str, bytes], Reply | None]) -> None:
        self._handle = handle
        self.topics: list[str] = []
        self.csr_to_drop = 0
        self.csr_for_another_key = 0
        self.answer_register = threading.Event()
        self.answer_register.set()
        self.register_asked = threading.Event()

    def __call__(self, topic: str, payload: bytes) -> Reply | None:
        self.topics.append(topic)
        if topic == CSR_TOPIC and self.csr_to_drop:
            self.csr_to_drop -= 1  # lost on the way
            return None
        if topic == CSR_TOPIC and self.csr_for_another_key:
            self.csr_for_another_key -= 1  # the answer another bike's request got
            payload = json.dumps({"certificateSigningRequest": _another_csr()}).encode()
        if "/provision/" in topic:
            self.register_asked.set()
            if not self.answer_register.is_set():
                return None
        return self._handle(topic, payload)


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[ProvisioningBroker]:
    with provisioning_broker(tmp_path / "stand-in", TEMPLATES) as running:
        yield running


@pytest.fixture
def requests(stand_in: ProvisioningBroker) -> Requests:
    recorder = Requests(stand_in.service.handle)
    stand_in.service.handle = recorder  # type: ignore[method-assign]
    return recorder


def first_boot_args(broker: ProvisioningBroker, state: Path, serial: str, *extra: str) -> list[str]:
    """A factory image's settings: the claim certificate, no certificate of its own."""
    claim_cert, claim_key = broker.claim
    return [
        "--endpoint", broker.host, "--port", str(broker.port), "--ca", str(broker.pki.ca_cert),
        "--claim-cert", str(claim_cert), "--claim-key", str(claim_key),
        "--fleet-template", TEMPLATE, "--serial-number", serial, "--racer-id", "17",
        "--spool", str(state / "spool.sqlite3"), "--sensor", "mock", "--seed", "3",
        "--log-format", "json", "--log-level", "debug", *extra,
    ]  # fmt: skip


def test_a_bike_with_only_the_claim_enrols_rides_under_its_thing_name_and_enrols_once(
    stand_in: ProvisioningBroker, requests: Requests, tmp_path: Path
) -> None:
    args = first_boot_args(stand_in, tmp_path, "SN-1001")
    with stand_in.device(RULE_CLIENT_ID) as rides:
        rides.subscribe("alleycat-publish/#")
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
        assert requests.topics.count(CSR_TOPIC) == 1

        # Started again, it rides with the stored identity: no second enrolment.
        with agent(args) as rider:
            rider.wait_for("connected")
            assert rider.events("enrolling") == []
            rider.wait_for("message", count=len(rider.events("message")) + 1)
            assert rider.stop() == 0
            second = rider.events("stopped")[0]
        rides.wait_for(first["acked"] + second["acked"], timeout=10)
    assert requests.topics.count(CSR_TOPIC) == 1
    assert len(rides.messages) == first["acked"] + second["acked"]


def test_a_bike_killed_between_the_two_steps_enrols_cleanly_on_the_next_start(
    stand_in: ProvisioningBroker, requests: Requests, tmp_path: Path
) -> None:
    args = first_boot_args(stand_in, tmp_path, "SN-1002")
    requests.answer_register.clear()
    with agent(args) as rider:
        rider.wait_for("enrolling")
        assert requests.register_asked.wait(20)
        rider.stop(signal.SIGKILL)
    assert stored_identity(tmp_path) is None  # certificate made, thing not registered

    requests.answer_register.set()
    with agent(args) as rider:
        assert rider.wait_for("enrolled")["thing_name"] == "SN-1002"
        rider.wait_for("connected")
        assert rider.stop() == 0
    assert requests.topics.count(CSR_TOPIC) == 2  # a new key and certificate the second time
    identity = stored_identity(tmp_path)
    assert identity is not None and identity.thing_name == "SN-1002"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ([], "SerialNumber 'SN-0000' is not allowed by the template alleycat-bikes (AccessDenied)"),
        (["--fleet-template", "retired"], "Template retired is disabled (InvalidRequest)"),
    ],
    ids=["unknown-serial", "disabled-template"],
)
def test_a_template_that_refuses_is_one_line_and_exit_1(
    stand_in: ProvisioningBroker, tmp_path: Path, extra: list[str], reason: str
) -> None:
    args = first_boot_args(stand_in, tmp_path, "SN-0000", *extra)
    with agent(args) as rider:
        status = rider.process.wait(60)
        rider.stop()
    assert status == 1
    [line] = [line for line in rider.stderr if line.strip()]
    assert line.startswith("Error: fleet provisioning with the template")
    assert line.rstrip().endswith(f"refused: {reason}")
    assert stored_identity(tmp_path) is None


def _enrol(
    stand_in: ProvisioningBroker, state: Path, serial: str, *, racer_id: int, timeout: int
) -> tuple[Identity, list[tuple[str, str, dict[str, Any]]], list[float]]:
    """Enrol in this process; the identity, the events reported and the pauses asked for."""
    claim = Claim(
        settings=stand_in.settings(*stand_in.claim, serial),
        template=TEMPLATE,
        parameters={"SerialNumber": serial, "RacerId": str(racer_id)},
        timeout=timeout,
    )
    events: list[tuple[str, str, dict[str, Any]]] = []
    pauses: list[float] = []
    identity = enrol(
        claim,
        state,
        report=lambda level, message, **fields: events.append((level, message, fields)),
        sleep=pauses.append,
    )
    return identity, events, pauses


def test_a_step_without_an_answer_is_asked_again_with_backoff(
    stand_in: ProvisioningBroker, requests: Requests, tmp_path: Path
) -> None:
    requests.csr_to_drop = 2
    identity, events, pauses = _enrol(stand_in, tmp_path, "SN-1003", racer_id=3, timeout=1)
    stored = stored_identity(tmp_path)
    assert stored is not None and stored.thing_name == identity.thing_name == "SN-1003"
    assert requests.topics.count(CSR_TOPIC) == 3
    assert stand_in.registry.racers()["SN-1003"] == 3
    assert [(level, message) for level, message, _ in events] == [
        ("warning", "enrolment unanswered")
    ] * 2
    assert pauses == [1.0, 2.0]


def test_a_certificate_for_another_key_is_never_stored_and_the_bike_asks_again(
    stand_in: ProvisioningBroker, requests: Requests, tmp_path: Path
) -> None:
    # Against a broker that sends every answer to every subscriber (mosquitto, unlike IoT Core),
    # a bike may receive the certificate another bike asked for.
    requests.csr_for_another_key = 1
    identity, events, pauses = _enrol(stand_in, tmp_path, "SN-1004", racer_id=4, timeout=5)
    assert [(level, message) for level, message, _ in events] == [
        ("warning", "enrolment answer for another key")
    ]
    assert pauses == [1.0] and requests.topics.count(CSR_TOPIC) == 2
    assert identity.thing_name == "SN-1004"
    certified = x509.load_pem_x509_certificate(identity.cert.read_bytes()).public_key()
    own = serialization.load_pem_private_key(identity.key.read_bytes(), None).public_key()
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert certified.public_bytes(*spki) == own.public_bytes(*spki)
    # Two certificates made, one registered: the one for the bike's key.
    assert (stand_in.service.counts["certificates"], stand_in.service.counts["registered"]) == (
        2,
        1,
    )
    assert stand_in.registry.racers()["SN-1004"] == 4
