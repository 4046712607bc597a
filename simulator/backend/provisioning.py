"""IoT Core's fleet provisioning MQTT API, answered by ``alleycat stack`` with its local CA.

Requests and replies (JSON; each reply on the request's topic plus ``/accepted`` or
``/rejected``)::

    $aws/certificates/create/json                        -> certificateId, certificatePem,
                                                            privateKey, certificateOwnershipToken
    $aws/certificates/create-from-csr/json               -> certificateId, certificatePem,
                                                            certificateOwnershipToken
    $aws/provisioning-templates/<name>/provision/json    -> thingName, deviceConfiguration

A refusal is ``{statusCode, errorCode, errorMessage}``. AWS documents no codes; the stand-in's
are ``InvalidCertificateOwnershipToken`` (unknown, used or expired token), ``InvalidParameters``
(a parameter missing), ``AccessDenied`` (not on the template's allow-list), ``NotFound`` (no such
template), ``InvalidRequest`` (a disabled template, a request that is not JSON, a bad CSR) and
``InvalidTemplate``.

A certificate is made pending: its common name (the broker's user name for it) is an opaque name
of the stand-in's, not what the CSR asked for, and it may do nothing until RegisterThing has made
its thing and attached its policy. An ownership token is good for one RegisterThing within an
hour (``token_ttl``). This module is the pure part: the clock is injected, and
:meth:`FleetProvisioning.handle` takes a request and returns the reply; the MQTT side is in
:mod:`simulator.backend.services`.
"""

from __future__ import annotations

import datetime
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from alleycat_rider.iot.devcerts import DevPki, write_public
from simulator.backend.fleet_template import ProvisioningTemplate, Refusal
from simulator.errors import SimulatorError

CREATE_TOPIC = "$aws/certificates/create/json"
CSR_TOPIC = "$aws/certificates/create-from-csr/json"
PROVISION_PREFIX = "$aws/provisioning-templates/"
PROVISION_SUFFIX = "/provision/json"
#: What the provisioning service subscribes to (``+`` matches here: ``$aws`` is not a wildcard).
REQUEST_TOPICS = (CREATE_TOPIC, CSR_TOPIC, f"{PROVISION_PREFIX}+{PROVISION_SUFFIX}")
#: Seconds an ownership token may be used, as on IoT Core.
TOKEN_TTL = 3600.0
#: How long certificates the stand-in makes are valid.
VALIDITY = datetime.timedelta(days=825)
RACER_ATTRIBUTE = "racerId"


def provision_topic(template: str) -> str:
    """The RegisterThing request topic of ``template``."""
    return f"{PROVISION_PREFIX}{template}{PROVISION_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer: its topic, its JSON body, and whether it registered a thing (the broker's
    ACL must then know the new certificate before the bike hears back)."""

    topic: str
    body: dict[str, Any]
    registered: bool = False

    @property
    def payload(self) -> bytes:
        return json.dumps(self.body).encode()


@dataclass(frozen=True, slots=True)
class PendingCertificate:
    """A certificate made and not yet registered."""

    certificate_id: str
    principal: str
    expires: float


class RegistryError(SimulatorError):
    """The file of enrolled things cannot be read; the message names it."""


class LocalCa:
    """The stack's development CA, signing certificates for bikes that enrol."""

    def __init__(self, pki: DevPki) -> None:
        self._cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{pki.ca_key} is not an EC key")
        self._key = key

    def issue(self, public_key: Any, principal: str, now: datetime.datetime) -> str:
        """A client certificate (PEM) for ``public_key``, named ``principal``."""
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Alleycat development"),
                x509.NameAttribute(NameOID.COMMON_NAME, principal),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(self._cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()


class ThingRegistry:
    """The things enrolment made, kept in a JSON file: which certificate (by the broker's user
    name for it) is which thing, and each thing's attributes.

    Thread-safe: the provisioning service writes while the standings and the ACL read.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._things: dict[str, dict[str, str]] = {}
        self._principals: dict[str, str] = {}
        self.version = 0
        """Counts changes, so that readers can keep what they derived until the next one."""
        if path is not None and path.is_file():
            try:
                document = json.loads(path.read_text())
                self._things = {str(k): dict(v) for k, v in document["things"].items()}
                self._principals = {str(k): str(v) for k, v in document["principals"].items()}
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                raise RegistryError(
                    f"cannot read the enrolled things in {path} ({exc}): "
                    "fix or remove the file (bikes then enrol again)"
                ) from None

    def add(self, thing: str, attributes: Mapping[str, str], principal: str | None) -> None:
        """Make or update ``thing``; ``principal`` (a certificate) may now act as it."""
        with self._lock:
            self._things[thing] = {**self._things.get(thing, {}), **attributes}
            if principal is not None:
                self._principals[principal] = thing
            self.version += 1
            if self._path is not None:
                document = {"things": self._things, "principals": self._principals}
                partial = self._path.with_name(self._path.name + ".partial")
                write_public(partial, json.dumps(document, indent=2).encode() + b"\n")
                partial.replace(self._path)

    def principals(self) -> dict[str, str]:
        """Certificate user name -> thing name."""
        with self._lock:
            return dict(self._principals)

    def racers(self) -> dict[str, int]:
        """Thing name -> the racer it enrolled for (its ``racerId`` attribute)."""
        with self._lock:
            return {
                thing: int(attributes[RACER_ATTRIBUTE])
                for thing, attributes in self._things.items()
                if attributes.get(RACER_ATTRIBUTE, "").isdigit()
            }


class FleetProvisioning:
    """Answers the fleet provisioning API; see the module doc.

    Args:
        ca: Signs the certificates.
        templates: The provisioning templates by name.
        registry: Where registered things go.
        monotonic: The clock tokens expire on.
        token_ttl: Seconds a token may be used.
    """

    def __init__(
        self,
        ca: LocalCa,
        templates: Mapping[str, ProvisioningTemplate],
        registry: ThingRegistry,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        token_ttl: float = TOKEN_TTL,
    ) -> None:
        self._ca = ca
        self._templates = dict(templates)
        self.registry = registry
        self._monotonic = monotonic
        self._wall = wall
        self._token_ttl = token_ttl
        self._pending: dict[str, PendingCertificate] = {}
        self.counts = {"certificates": 0, "registered": 0, "refused": 0}

    def handle(self, topic: str, payload: bytes) -> Reply | None:
        """The reply to one request, or ``None`` for a topic that is no request."""
        if topic not in (CREATE_TOPIC, CSR_TOPIC) and not (
            topic.startswith(PROVISION_PREFIX) and topic.endswith(PROVISION_SUFFIX)
        ):
            return None
        try:
            request = json.loads(payload) if payload.strip() else {}
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            return self._refused(topic, Refusal(400, "InvalidRequest", f"Payload: {exc}"))
        try:
            if topic == CREATE_TOPIC:
                body = self._create_keys()
            elif topic == CSR_TOPIC:
                body = self._from_csr(request)
            else:
                name = topic[len(PROVISION_PREFIX) : -len(PROVISION_SUFFIX)]
                return Reply(f"{topic}/accepted", self._register(name, request), registered=True)
        except Refusal as refusal:
            return self._refused(topic, refusal)
        return Reply(f"{topic}/accepted", body)

    def _refused(self, topic: str, refusal: Refusal) -> Reply:
        self.counts["refused"] += 1
        return Reply(f"{topic}/rejected", refusal.payload())

    def _create_keys(self) -> dict[str, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        body = self._certificate(key.public_key())
        body["privateKey"] = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return body

    def _from_csr(self, request: Mapping[str, Any]) -> dict[str, Any]:
        pem = request.get("certificateSigningRequest")
        try:
            csr = x509.load_pem_x509_csr(str(pem or "").encode())
            valid = csr.is_signature_valid
        except Exception:  # whatever a bike sends: a bad CSR, an algorithm we cannot check
            valid = False
        if not valid:
            raise Refusal(400, "InvalidRequest", "certificateSigningRequest is not a valid CSR")
        return self._certificate(csr.public_key())

    def _certificate(self, public_key: Any) -> dict[str, Any]:
        from alleycat_rider.iot.fleet import certificate_id

        principal = f"enrolled-{secrets.token_hex(8)}"
        pem = self._ca.issue(public_key, principal, self._wall())
        cert_id = certificate_id(pem)
        token = secrets.token_urlsafe(32)
        self._expire()
        self._pending[token] = PendingCertificate(
            cert_id, principal, self._monotonic() + self._token_ttl
        )
        self.counts["certificates"] += 1
        return {
            "certificateId": cert_id,
            "certificatePem": pem,
            "certificateOwnershipToken": token,
        }

    def _expire(self) -> None:
        now = self._monotonic()
        for token in [t for t, pending in self._pending.items() if pending.expires <= now]:
            del self._pending[token]  # an unused certificate goes with its token, as on IoT Core

    def _register(self, name: str, request: Mapping[str, Any]) -> dict[str, Any]:
        token = request.get("certificateOwnershipToken")
        self._expire()
        pending = self._pending.get(token) if isinstance(token, str) else None
        if pending is None or not isinstance(token, str):
            raise Refusal(
                400,
                "InvalidCertificateOwnershipToken",
                "Certificate ownership token is unknown, used or expired",
            )
        template = self._templates.get(name)
        if template is None:
            raise Refusal(404, "NotFound", f"Template {name} does not exist")
        parameters = request.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise Refusal(400, "InvalidParameters", "parameters must be an object")
        registration = template.register(parameters, pending.certificate_id)
        del self._pending[token]  # single use: only a registration spends it
        allowed = registration.certificate_active and bool(registration.policies)
        self.registry.add(
            registration.thing_name,
            registration.attributes,
            pending.principal if allowed else None,
        )
        self.counts["registered"] += 1
        return {
            "thingName": registration.thing_name,
            "deviceConfiguration": registration.device_configuration,
        }


class ClientMap(Mapping[str, int]):
    """Thing name -> racer id for the standings: a fixed map (``--client-map``) and, over it,
    the racer each enrolled bike enrolled for, read live."""

    def __init__(self, fixed: Mapping[str, int], registry: ThingRegistry) -> None:
        self._fixed = dict(fixed)
        self._registry = registry
        self._merged = dict(fixed)
        self._version = -1

    def _current(self) -> dict[str, int]:
        version = self._registry.version
        if version != self._version:  # a bike enrolled: merge again, once
            self._merged = {**self._fixed, **self._registry.racers()}
            self._version = version
        return self._merged

    def __getitem__(self, key: str) -> int:
        return self._current()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())
