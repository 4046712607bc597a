"""The quick TLS check against a real mosquitto: it names the side that refuses, or says nothing."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from alleycat_rider.iot.broker import MosquittoBroker
from alleycat_rider.iot.devcerts import make_dev_pki
from alleycat_rider.mqtt import ConnectionFailed, MqttSettings
from alleycat_rider.tlscheck import check_tls, device_refused
from tests.servers.mosquitto import RunningBroker, TestPki
from tests.servers.ports import free_port


def settings(
    broker_port: int, pki: TestPki, *, ca: Path | None, device: str = "bike-1"
) -> MqttSettings:
    cert, key = pki.client(device)
    return MqttSettings(
        endpoint="127.0.0.1", port=broker_port, client_id=device, cert=cert, key=key, ca=ca
    )


def refusal(outcome: ConnectionFailed | None) -> ConnectionFailed:
    assert outcome is not None
    assert outcome.refused
    return outcome


def test_a_broker_that_accepts_the_device_gives_no_verdict(mqtt_broker: RunningBroker) -> None:
    assert (
        check_tls(settings(mqtt_broker.port, mqtt_broker.pki, ca=mqtt_broker.pki.ca_cert)) is None
    )


def test_a_ca_that_did_not_sign_the_server_certificate_is_named(
    mqtt_broker: RunningBroker, tmp_path: Path
) -> None:
    other = make_dev_pki(tmp_path / "other", [], ca_name="Another CA")
    failure = refusal(check_tls(settings(mqtt_broker.port, mqtt_broker.pki, ca=other.ca_cert)))
    assert failure.code == "SERVER_CERTIFICATE_UNTRUSTED"
    assert f"the server's certificate is not trusted by --ca {other.ca_cert}" in failure.message
    assert "device certificate" not in failure.message


def test_no_ca_means_the_system_trust_store_which_does_not_know_a_private_ca(
    mqtt_broker: RunningBroker,
) -> None:
    failure = refusal(check_tls(settings(mqtt_broker.port, mqtt_broker.pki, ca=None)))
    assert "not trusted by the system trust store" in failure.message
    assert "pass --ca" in failure.message


def test_a_device_certificate_from_another_ca_is_refused_by_the_broker(
    mqtt_broker: RunningBroker,
) -> None:
    cert, key = mqtt_broker.foreign_client
    own = settings(mqtt_broker.port, mqtt_broker.pki, ca=mqtt_broker.pki.ca_cert)
    failure = refusal(check_tls(replace(own, cert=cert, key=key)))
    assert failure.code == "DEVICE_CERTIFICATE_REFUSED"
    assert f"the broker refused the device certificate {cert}" in failure.message


def server_certificate_for(pki: TestPki, host: str, directory: Path) -> tuple[Path, Path]:
    """A server certificate for ``host`` only, signed by the PKI's own CA."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def broker_for_another_host(mqtt_pki: TestPki, tmp_path: Path) -> Iterator[int]:
    """mosquitto on 127.0.0.1 whose certificate is for ``broker.example`` only."""
    cert, key = server_certificate_for(mqtt_pki, "broker.example", tmp_path)
    pki = replace(mqtt_pki, server_cert=cert, server_key=key)
    port = free_port()
    with (tmp_path / "mosquitto.log").open("ab") as log, MosquittoBroker(pki, port=port, log=log):
        yield port


def test_a_server_certificate_for_another_host_is_named(
    broker_for_another_host: int, mqtt_pki: TestPki
) -> None:
    failure = refusal(check_tls(settings(broker_for_another_host, mqtt_pki, ca=mqtt_pki.ca_cert)))
    assert failure.code == "SERVER_CERTIFICATE_WRONG_HOST"
    assert "the server's certificate is not for host 127.0.0.1" in failure.message
    assert "--endpoint" in failure.message


def test_nothing_listening_gives_no_verdict(mqtt_pki: TestPki) -> None:
    assert check_tls(settings(free_port(), mqtt_pki, ca=mqtt_pki.ca_cert)) is None


def test_alerts_not_about_the_certificate_give_no_verdict() -> None:
    plain = MqttSettings(endpoint="h", port=8883, client_id="c", cert=Path("d.crt"))
    assert device_refused(plain, "TLSV1_ALERT_PROTOCOL_VERSION") is None
    assert device_refused(plain, "WRONG_VERSION_NUMBER") is None
    assert device_refused(plain, "SSLV3_ALERT_BAD_CERTIFICATE") is not None
