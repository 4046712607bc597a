"""A bike's first boot: enrol by claim with AWS IoT Core's fleet provisioning MQTT API.

With only the factory's claim certificate, the bike makes a key of its own (which never leaves
it), asks for a certificate from a CSR (``$aws/certificates/create-from-csr/json``), registers
its thing with the provisioning template (``$aws/provisioning-templates/<name>/provision/json``,
parameters ``SerialNumber`` and ``RacerId``), and stores what it got in ``<state>/identity/``::

    certificate.pem.crt  private.pem.key (0600)  identity.json

``identity.json`` (thing name, device configuration) is written last, atomically: it is what says
the enrolment is complete. A bike stopped between the two steps finds no ``identity.json`` and
enrols again from the start with a new key (IoT Core deletes the unused certificate after an hour).
With ``keys="service"`` the key is made by IoT Core instead (``$aws/certificates/create/json``,
CreateKeysAndCertificate) and comes over the connection: for bikes that cannot make a key.

The SDK's identity client (``IotIdentityClientV2``) waits for one request at a time over one
MQTT 5 connection made with the claim certificate; the connection retries by itself with backoff.
A certificate that is not for the bike's key (another bike's answer, on a broker that sends
answers to every subscriber) is never stored: the bike asks again.

::

    AlleycatError
    └── EnrolmentError   the template refused the bike, or the claim certificate was refused
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alleycat_rider.errors import AlleycatError
from alleycat_rider.iot.devcerts import make_directory, write_private, write_public
from alleycat_rider.mqtt import Connected, ConnectionFailed, MqttLink, MqttSettings

IDENTITY_DIR = "identity"
IDENTITY_FILE = "identity.json"
CERT_FILE = "certificate.pem.crt"
KEY_FILE = "private.pem.key"
#: Seconds to wait for each answer of the provisioning API.
OPERATION_TIMEOUT = 30
#: Seconds between attempts when a step gets no answer: doubling from the first to the last.
RETRY_BACKOFF = (1.0, 60.0)


class EnrolmentError(AlleycatError):
    """Enrolment cannot succeed as things are: the reason AWS gave, or the claim refused."""


@dataclass(frozen=True, kw_only=True)
class Claim:
    """How this bike enrols.

    Attributes:
        settings: The connection with the claim certificate and key.
        template: The provisioning template's name.
        parameters: The template's parameters (``SerialNumber``, ``RacerId``).
    """

    settings: MqttSettings
    template: str
    parameters: dict[str, str] = field(default_factory=dict)
    timeout: int = OPERATION_TIMEOUT
    """Seconds to wait for each answer before asking again."""
    keys: str = "bike"
    """``bike``: the key is made here and never sent (a CSR); ``service``: IoT Core makes it."""


@dataclass(frozen=True, kw_only=True)
class Identity:
    """The bike's own identity, as the template made it."""

    thing_name: str
    cert: Path
    key: Path
    device_configuration: dict[str, str]


def identity_dir(state_dir: Path) -> Path:
    """Where the identity lives in the agent's state directory."""
    return state_dir / IDENTITY_DIR


def stored_identity(state_dir: Path) -> Identity | None:
    """The identity of a completed enrolment, or ``None`` (never enrolled, or interrupted)."""
    directory = identity_dir(state_dir)
    try:
        record = json.loads((directory / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return None
    cert, key = directory / CERT_FILE, directory / KEY_FILE
    if not (isinstance(record, dict) and cert.is_file() and key.is_file()):
        return None
    configuration = record.get("deviceConfiguration") or {}
    return Identity(
        thing_name=str(record["thingName"]),
        cert=cert,
        key=key,
        device_configuration={str(k): str(v) for k, v in configuration.items()},
    )


def enrol(
    claim: Claim,
    state_dir: Path,
    *,
    report: Callable[..., None] = lambda *_args, **_fields: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Identity:
    """Enrol with ``claim`` and store the identity in ``state_dir``; return it.

    A step that gets no answer (the network, or IoT Core, lost it) is asked again with backoff,
    for as long as it takes, each time reported as a warning through ``report`` (a reporter's
    ``event``).

    Raises:
        EnrolmentError: The claim certificate was refused, or the template refused the bike.
    """
    from awscrt import mqtt_request_response
    from awsiot import V2ServiceException, iotidentity
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    connected = threading.Event()
    refused: list[str] = []

    def sink(event: Any) -> None:
        if isinstance(event, Connected):
            connected.set()
        elif isinstance(event, ConnectionFailed) and event.refused:
            refused.append(event.message)
            connected.set()

    link = MqttLink(claim.settings, sink)
    link.start()
    try:
        connected.wait()
        if refused:
            raise EnrolmentError(f"the claim certificate was refused: {refused[0]}")
        client = iotidentity.IotIdentityClientV2(
            link.client,
            mqtt_request_response.ClientOptions(
                max_request_response_subscriptions=2,
                max_streaming_subscriptions=0,
                operation_timeout_in_seconds=claim.timeout,
            ),
        )
        key = ec.generate_private_key(ec.SECP256R1())
        serial = claim.parameters.get("SerialNumber", claim.settings.client_id)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        backoff = RETRY_BACKOFF[0]
        while True:
            try:
                if claim.keys == "service":
                    made = client.create_keys_and_certificate(
                        iotidentity.CreateKeysAndCertificateRequest()
                    ).result()
                    key_pem = made.private_key.encode()
                else:
                    made = client.create_certificate_from_csr(
                        iotidentity.CreateCertificateFromCsrRequest(
                            certificate_signing_request=csr.public_bytes(
                                serialization.Encoding.PEM
                            ).decode()
                        )
                    ).result()
                if not _matches(made.certificate_pem, key_pem):
                    # Not this bike's: another bike's answer (a broker that sends answers to
                    # every subscriber, as mosquitto does) or a damaged one. Stored, it would
                    # lock the bike out: ask again.
                    report("warning", "enrolment answer for another key", retry_in=backoff)
                    sleep(backoff)
                    backoff = min(2 * backoff, RETRY_BACKOFF[1])
                    continue
                registered = client.register_thing(
                    iotidentity.RegisterThingRequest(
                        template_name=claim.template,
                        certificate_ownership_token=made.certificate_ownership_token,
                        parameters=claim.parameters,
                    )
                ).result()
                break
            except V2ServiceException as exc:
                if exc.modeled_error is not None:  # IoT Core answered: refused
                    raise EnrolmentError(_refusal(claim.template, exc)) from exc
                report("warning", "enrolment unanswered", reason=exc.message, retry_in=backoff)
                sleep(backoff)
                backoff = min(2 * backoff, RETRY_BACKOFF[1])
    finally:
        link.stop()
    return _store(
        identity_dir(state_dir),
        thing_name=registered.thing_name,
        cert_pem=made.certificate_pem.encode(),
        key_pem=key_pem,
        configuration=dict(registered.device_configuration or {}),
    )


def _matches(certificate_pem: str, key_pem: bytes) -> bool:
    """Whether the certificate is for this private key: an answer meant for this bike."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        certified = x509.load_pem_x509_certificate(certificate_pem.encode()).public_key()
        own = serialization.load_pem_private_key(key_pem, password=None).public_key()
    except (ValueError, TypeError):  # not a certificate, or not a key
        return False
    return certified.public_bytes(*spki) == own.public_bytes(*spki)


def _refusal(template: str, exc: Any) -> str:
    error = getattr(exc, "modeled_error", None)
    if error is not None and getattr(error, "error_message", None):
        code = f" ({error.error_code})" if getattr(error, "error_code", None) else ""
        return (
            f"fleet provisioning with the template {template} refused: {error.error_message}{code}"
        )
    return f"fleet provisioning with the template {template} failed: {exc.message}"


def _store(
    directory: Path,
    *,
    thing_name: str,
    cert_pem: bytes,
    key_pem: bytes,
    configuration: dict[str, str],
) -> Identity:
    make_directory(directory)
    write_private(directory / KEY_FILE, key_pem)
    write_public(directory / CERT_FILE, cert_pem)
    for name in (KEY_FILE, CERT_FILE):
        _sync(directory / name)
    record = {"thingName": thing_name, "deviceConfiguration": configuration}
    partial = directory / (IDENTITY_FILE + ".partial")
    write_public(partial, json.dumps(record, indent=2).encode() + b"\n")
    _sync(partial)
    os.replace(partial, directory / IDENTITY_FILE)  # the enrolment is complete from here
    _sync(directory)
    return Identity(
        thing_name=thing_name,
        cert=directory / CERT_FILE,
        key=directory / KEY_FILE,
        device_configuration=configuration,
    )


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
