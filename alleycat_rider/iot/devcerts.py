"""A development PKI: a local CA, a server certificate and one device certificate per bike.

These certificates stand in for AWS IoT Core's during development and tests: the server
certificate is valid for ``localhost`` and ``127.0.0.1``, each device certificate carries its MQTT
client id as common name (mosquitto uses it as the user name, as IoT Core uses the thing name).
Keys are EC P-256, which is fast to generate and accepted by mosquitto and awscrt alike.

Layout of the directory::

    ca.crt  ca.key                 the development CA
    server.crt  server.key         the broker's certificate, signed by the CA
    devices/ID.crt  devices/ID.key one device certificate per client id, signed by the CA
    claim/claim.pem.crt  claim/claim.private.pem.key
                                   the fleet's claim certificate (``certs dev --claim``)

Modes are set explicitly, whatever the umask: private keys 0600, certificates 0644, and the
folders this module creates 0755, so no other local user can read a key or swap the CA. Existing
files are kept, so a second run only adds the missing devices; ``force=True`` makes everything
anew.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from alleycat_rider.errors import CertificateError, ConfigError

#: Where ``alleycat certs dev`` writes by default, relative to the working directory.
DEFAULT_DEV_DIR = Path("certs/dev")
#: How long development certificates are valid.
VALIDITY = datetime.timedelta(days=825)
#: Client ids usable as file names and as AWS IoT thing names.
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_:-]{1,128}$")

_KEY_MODE = 0o600
#: Mode of certificates and other files anyone may read but only their owner write.
PUBLIC_MODE = 0o644
#: Mode of the folders created for certificates and keys.
DIRECTORY_MODE = 0o755


@dataclass(frozen=True, kw_only=True)
class DevPki:
    """The files of a development PKI.

    Attributes:
        directory: The directory holding every file.
        ca_cert: The CA certificate (PEM) that brokers and devices trust.
        ca_key: The CA's private key (PEM), used to sign more device certificates.
        server_cert: The broker's certificate (PEM) for ``localhost`` and ``127.0.0.1``.
        server_key: The broker's private key (PEM).
        client_ids: The client ids that have a device certificate.
    """

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_ids: tuple[str, ...] = field(default=())

    def client(self, client_id: str) -> tuple[Path, Path]:
        """The certificate and key of one device.

        Args:
            client_id: The device's MQTT client id.

        Returns:
            ``(certificate_path, key_path)``.

        Raises:
            CertificateError: No certificate was made for this client id.
        """
        if client_id not in self.client_ids:
            raise CertificateError(
                f"no development certificate for client id {client_id!r}: "
                f"run `alleycat certs dev --client-id {client_id}`"
            )
        return device_paths(self.directory, client_id)


def device_paths(directory: Path, client_id: str) -> tuple[Path, Path]:
    """Where the certificate and key of ``client_id`` live inside a PKI directory."""
    devices = directory / "devices"
    return devices / f"{client_id}.crt", devices / f"{client_id}.key"


def make_dev_pki(
    directory: Path,
    client_ids: Sequence[str],
    *,
    force: bool = False,
    now: datetime.datetime | None = None,
    ca_name: str = "Alleycat development CA",
) -> DevPki:
    """Make (or complete) a development PKI in ``directory``.

    Args:
        directory: Where to write the files; created if missing.
        client_ids: One device certificate is made for each client id.
        force: Make every file anew, even those that exist.
        now: The start of the certificates' validity (default: the current time).
        ca_name: The CA's common name, to tell two development CAs apart.

    Returns:
        The paths of the PKI, listing every requested client id.

    Raises:
        ConfigError: A client id cannot be used as a file name or thing name.
        CertificateError: An existing CA cannot be read or the files cannot be written.
    """
    for client_id in client_ids:
        validate_client_id(client_id)
    issued = now or datetime.datetime.now(datetime.UTC)
    pki = DevPki(
        directory=directory,
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_ids=tuple(dict.fromkeys(client_ids)),
    )
    try:
        make_directory(directory / "devices")
        fresh_ca = force or not (pki.ca_cert.exists() and pki.ca_key.exists())
        if fresh_ca:
            ca_key = ec.generate_private_key(ec.SECP256R1())
            ca_cert = _ca_certificate(ca_key, ca_name, issued)
            _write_key(pki.ca_key, ca_key)
            _write_cert(pki.ca_cert, ca_cert)
        else:
            ca_key, ca_cert = _load_ca(pki.ca_cert, pki.ca_key)
        if fresh_ca or not (pki.server_cert.exists() and pki.server_key.exists()):
            key = ec.generate_private_key(ec.SECP256R1())
            _write_key(pki.server_key, key)
            _write_cert(pki.server_cert, _server_certificate(key, ca_key, ca_cert, issued))
        for client_id in pki.client_ids:
            cert_path, key_path = device_paths(directory, client_id)
            if fresh_ca or not (cert_path.exists() and key_path.exists()):
                key = ec.generate_private_key(ec.SECP256R1())
                _write_key(key_path, key)
                cert = _device_certificate(key, client_id, ca_key, ca_cert, issued)
                _write_cert(cert_path, cert)
    except OSError as exc:
        raise CertificateError(f"cannot write certificates in {directory}: {exc}") from exc
    return pki


#: Where ``alleycat certs dev --claim`` writes the claim certificate, inside the PKI directory.
CLAIM_DIR = "claim"
CLAIM_COMMON_NAME = "alleycat-claim"


def claim_paths(directory: Path) -> tuple[Path, Path]:
    """The claim certificate and key inside a PKI directory (the file names of
    ``alleycat provision --fleet-template``)."""
    claim = directory / CLAIM_DIR
    return claim / "claim.pem.crt", claim / "claim.private.pem.key"


def make_dev_claim(directory: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Make (or keep) a claim certificate signed by the development CA of ``directory``.

    Every bike of a factory image shares it; the local broker lets it use only the fleet
    provisioning topics. The CA is made first when missing; ``force`` makes the claim
    certificate anew (not the CA).

    Returns:
        ``(certificate_path, key_path)``.

    Raises:
        CertificateError: The CA cannot be read or the files cannot be written.
    """
    pki = make_dev_pki(directory, [])
    cert_path, key_path = claim_paths(directory)
    if cert_path.exists() and key_path.exists() and not force:
        return cert_path, key_path
    ca_key, ca_cert = _load_ca(pki.ca_cert, pki.ca_key)
    issued = datetime.datetime.now(datetime.UTC)
    try:
        make_directory(cert_path.parent)
        key = ec.generate_private_key(ec.SECP256R1())
        _write_key(key_path, key)
        _write_cert(cert_path, _device_certificate(key, CLAIM_COMMON_NAME, ca_key, ca_cert, issued))
    except OSError as exc:
        raise CertificateError(f"cannot write the claim certificate in {directory}: {exc}") from exc
    return cert_path, key_path


def validate_client_id(client_id: str) -> str:
    """Return ``client_id`` if it is a usable MQTT client id, file name and thing name.

    Raises:
        ConfigError: It is empty, too long or has characters other than letters, digits, ``_:-``.
    """
    if not CLIENT_ID_RE.match(client_id):
        raise ConfigError(f"client id {client_id!r} must be 1-128 letters, digits, '_', ':' or '-'")
    return client_id


def _load_ca(
    cert_path: Path, key_path: Path
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CertificateError(
            f"cannot read the development CA in {cert_path.parent}: {exc}; "
            "make a new one with --force"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{key_path} is not an EC key: make a new CA with --force")
    return key, cert


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Alleycat development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issued: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(issued - datetime.timedelta(minutes=5))
        .not_valid_after(issued + VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey, name: str, issued: datetime.datetime
) -> x509.Certificate:
    subject = _name(name)
    return (
        _builder(subject, subject, key, issued)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


def _leaf(
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    issued: datetime.datetime,
    usage: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    return (
        _builder(_name(common_name), ca_cert.subject, key, issued)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )


def _server_certificate(
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    issued: datetime.datetime,
) -> x509.Certificate:
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
    ]
    return (
        _leaf(key, "localhost", ca_key, ca_cert, issued, ExtendedKeyUsageOID.SERVER_AUTH)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _device_certificate(
    key: ec.EllipticCurvePrivateKey,
    client_id: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    issued: datetime.datetime,
) -> x509.Certificate:
    return _leaf(key, client_id, ca_key, ca_cert, issued, ExtendedKeyUsageOID.CLIENT_AUTH).sign(
        ca_key, hashes.SHA256()
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, pem)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (mode 0600), replacing any file.

    The file is created with mode 0600, so the key is never readable by others, not even briefly.
    """
    _write_file(path, data, _KEY_MODE)


def write_public(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0644 whatever the umask, replacing any file."""
    _write_file(path, data, PUBLIC_MODE)


def make_directory(path: Path) -> None:
    """Create ``path`` and its missing parents with mode 0755 whatever the umask.

    Folders that already exist keep their mode: they are the user's, not ours.
    """
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=DIRECTORY_MODE, exist_ok=True)
        os.chmod(folder, DIRECTORY_MODE)  # mkdir's mode goes through the umask


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with a new file of ``mode`` holding ``data``."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(file.fileno(), mode)  # the umask narrows (or, at 000, keeps) the mode asked for
        file.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    write_public(path, cert.public_bytes(serialization.Encoding.PEM))
