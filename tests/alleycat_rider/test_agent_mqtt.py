"""The MQTT adapter's translation of awscrt outcomes into events and errors."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from awscrt import mqtt5
from awscrt.exceptions import AwsCrtError

from alleycat_rider.errors import CertificateError
from alleycat_rider.mqtt import (
    Connected,
    LinkEvent,
    MqttLink,
    MqttSettings,
    PublishDone,
    check_credentials,
    describe_failure,
)

TLS = MqttSettings(
    endpoint="127.0.0.1", port=8883, client_id="bike-1", cert=Path("/d.crt"), key=Path("/d.key")
)


CONNACK_REFUSED = "AWS_ERROR_MQTT5_CONNACK_CONNECTION_REFUSED"
OFFLINE = "AWS_ERROR_MQTT5_OPERATION_FAILED_DUE_TO_OFFLINE_QUEUE_POLICY"


def crt_error(name: str) -> AwsCrtError:
    return AwsCrtError(code=0, name=name, message=name)


@pytest.mark.parametrize(
    ("error", "connack", "refused"),
    [
        ("AWS_IO_TLS_ERROR_READ_FAILURE", None, True),
        ("AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE", None, True),
        ("AWS_IO_SOCKET_CONNECTION_REFUSED", None, False),
        ("AWS_IO_DNS_INVALID_NAME", None, False),
        (CONNACK_REFUSED, mqtt5.ConnectReasonCode.NOT_AUTHORIZED, True),
        (CONNACK_REFUSED, mqtt5.ConnectReasonCode.SERVER_BUSY, False),
    ],
)
def test_only_failures_that_retrying_cannot_cure_count_as_refused(
    error: str, connack: mqtt5.ConnectReasonCode | None, refused: bool
) -> None:
    packet = None if connack is None else mqtt5.ConnackPacket(reason_code=connack)
    failure = describe_failure(crt_error(error), packet, TLS)
    assert failure.refused is refused
    assert "127.0.0.1:8883" in failure.message


def test_a_tls_refusal_says_which_certificate_and_what_to_do() -> None:
    failure = describe_failure(crt_error("AWS_IO_TLS_ERROR_READ_FAILURE"), None, TLS)
    assert "/d.crt" in failure.message
    assert "the system trust store" in failure.message
    assert "--ca" in failure.message


def test_tls_errors_without_a_certificate_are_not_a_refusal() -> None:
    plain = MqttSettings(endpoint="127.0.0.1", port=1883, client_id="bike-1")
    assert not describe_failure(crt_error("AWS_IO_TLS_ERROR_READ_FAILURE"), None, plain).refused


def completed(result: Any = None, error: BaseException | None = None) -> Future[Any]:
    future: Future[Any] = Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return future


def puback(code: mqtt5.PubackReasonCode) -> Any:
    return SimpleNamespace(puback=mqtt5.PubackPacket(reason_code=code))


@pytest.mark.parametrize(
    ("qos", "future", "delivered", "rejected", "code"),
    [
        (1, completed(puback(mqtt5.PubackReasonCode.SUCCESS)), True, False, "SUCCESS"),
        (1, completed(puback(mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS)), True, False,
         "NO_MATCHING_SUBSCRIBERS"),
        (1, completed(puback(mqtt5.PubackReasonCode.NOT_AUTHORIZED)), False, True,
         "NOT_AUTHORIZED"),
        (1, completed(error=crt_error(OFFLINE)), False, False, OFFLINE),
        (0, completed(SimpleNamespace(puback=None)), True, False, "WRITTEN"),
    ],
)  # fmt: skip
def test_publish_outcomes_become_events(
    qos: int, future: Future[Any], delivered: bool, rejected: bool, code: str
) -> None:
    events: list[LinkEvent] = []
    link = MqttLink.__new__(MqttLink)  # only the completion handler is under test
    link._sink = events.append
    link._on_publish_done(7, qos, future)
    assert events == [PublishDone(7, delivered=delivered, rejected=rejected, code=code)]


def test_missing_and_malformed_credentials_are_certificate_errors(tmp_path: Path) -> None:
    cert = tmp_path / "d.crt"
    key = tmp_path / "d.key"
    settings = MqttSettings(endpoint="h", port=8883, client_id="c", cert=cert, key=key)
    with pytest.raises(CertificateError, match="does not exist: check --cert"):
        check_credentials(settings)
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    check_credentials(settings)
    key.unlink()
    key.mkdir()  # it exists, but cannot be read as a file
    with pytest.raises(CertificateError, match="cannot read the private key"):
        check_credentials(settings)


def test_a_certificate_that_does_not_match_its_key_is_a_certificate_error(
    mqtt_pki: Any,
) -> None:
    cert, _ = mqtt_pki.client("bike-1")
    _, other_key = mqtt_pki.client("bike-2")
    settings = MqttSettings(
        endpoint="127.0.0.1", port=8883, client_id="bike-1", cert=cert, key=other_key,
        ca=mqtt_pki.ca_cert,
    )  # fmt: skip
    with pytest.raises(CertificateError, match="do they belong together"):
        MqttLink(settings, lambda event: None)


PLAIN = MqttSettings(endpoint="127.0.0.1", port=8883, client_id="bike-1")


def test_an_mqtt_3_1_1_answer_is_a_refusal_that_names_mqtt_5() -> None:
    failure = describe_failure(crt_error("AWS_ERROR_MQTT5_DECODE_PROTOCOL_ERROR"), None, PLAIN)
    assert failure.refused
    assert failure.message.startswith("127.0.0.1:8883 does not speak MQTT 5")


def test_a_closed_plain_connection_hints_at_tls_only_without_a_certificate() -> None:
    plain = describe_failure(crt_error("AWS_IO_SOCKET_CLOSED"), None, PLAIN)
    assert plain.refused
    assert "it probably wants TLS; pass --cert/--key/--ca" in plain.message
    # With TLS already, a closed connection says nothing certain: retried, not fatal.
    assert not describe_failure(crt_error("AWS_IO_SOCKET_CLOSED"), None, TLS).refused


@pytest.mark.parametrize("code", ["AWS_IO_SOCKET_CLOSED", "AWS_ERROR_MQTT5_DECODE_PROTOCOL_ERROR"])
def test_after_a_first_connection_a_closed_or_garbled_handshake_is_retried(code: str) -> None:
    # A backend's link must ride out a broker in trouble: it spoke MQTT 5 without TLS before.
    assert not describe_failure(crt_error(code), None, PLAIN, first=False).refused


def test_a_tls_failure_names_both_sides_and_the_server_first() -> None:
    message = describe_failure(crt_error("AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE"), None, TLS).message
    server = message.index("broker's certificate is not trusted")
    device = message.index("refused the device certificate /d.crt")
    assert server < device
    assert "not for host 127.0.0.1" in message


@pytest.mark.parametrize(
    ("negotiated", "expected"),
    [(mqtt5.QoS.AT_MOST_ONCE, 0), (mqtt5.QoS.AT_LEAST_ONCE, 1), (None, 2)],
)
def test_the_connack_maximum_qos_reaches_the_agent(
    negotiated: mqtt5.QoS | None, expected: int
) -> None:
    events: list[LinkEvent] = []
    link = MqttLink.__new__(MqttLink)  # only the lifecycle handler is under test
    link._sink = events.append
    link._threads_kept = {threading.get_ident()}
    settings = None if negotiated is None else SimpleNamespace(maximum_qos=negotiated)
    link._on_connection_success(SimpleNamespace(negotiated_settings=settings))
    assert events == [Connected(maximum_qos=expected)]
