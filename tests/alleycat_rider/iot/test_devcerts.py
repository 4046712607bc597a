"""The development PKI: what it makes, who it names, and what it keeps."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import NameOID

from alleycat.cli import cli
from alleycat_rider.errors import CertificateError, ConfigError
from alleycat_rider.iot.devcerts import make_dev_pki


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_keys_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    pki = make_dev_pki(tmp_path, ["bike-1"])
    for key in (pki.ca_key, pki.server_key, pki.client("bike-1")[1]):
        assert _mode(key) == 0o600, key


def test_server_certificate_is_valid_for_localhost_and_loopback(tmp_path: Path) -> None:
    pki = make_dev_pki(tmp_path, [])
    names = _load(pki.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.value.get_values_for_type(x509.IPAddress) == [ipaddress.IPv4Address("127.0.0.1")]


def test_every_certificate_is_signed_by_the_dev_ca(tmp_path: Path) -> None:
    pki = make_dev_pki(tmp_path, ["bike-1", "bike-2"])
    ca = _load(pki.ca_cert)
    for path in (pki.server_cert, pki.client("bike-1")[0], pki.client("bike-2")[0]):
        _load(path).verify_directly_issued_by(ca)


def test_device_certificate_names_its_client_id(tmp_path: Path) -> None:
    pki = make_dev_pki(tmp_path, ["bike-7"])
    subject = _load(pki.client("bike-7")[0]).subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "bike-7"


def test_second_run_keeps_existing_files_and_adds_new_devices(tmp_path: Path) -> None:
    first = make_dev_pki(tmp_path, ["bike-1"])
    before = {p: p.read_bytes() for p in (first.ca_cert, first.server_key, *first.client("bike-1"))}
    second = make_dev_pki(tmp_path, ["bike-1", "bike-2"])
    assert {p: p.read_bytes() for p in before} == before
    _load(second.client("bike-2")[0]).verify_directly_issued_by(_load(second.ca_cert))


def test_force_makes_a_new_ca_and_reissues_everything(tmp_path: Path) -> None:
    first = make_dev_pki(tmp_path, ["bike-1"])
    old_ca = first.ca_cert.read_bytes()
    second = make_dev_pki(tmp_path, ["bike-1"], force=True)
    assert second.ca_cert.read_bytes() != old_ca
    _load(second.client("bike-1")[0]).verify_directly_issued_by(_load(second.ca_cert))
    assert _mode(second.client("bike-1")[1]) == 0o600


def test_client_id_that_is_not_a_safe_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="client id '../etc'"):
        make_dev_pki(tmp_path, ["../etc"])
    assert not (tmp_path / "ca.crt").exists()


def test_asking_for_a_device_that_was_not_made_says_how_to_make_it(tmp_path: Path) -> None:
    pki = make_dev_pki(tmp_path, ["bike-1"])
    with pytest.raises(CertificateError, match="alleycat certs dev --client-id bike-9"):
        pki.client("bike-9")


def test_unreadable_ca_is_one_clear_error(tmp_path: Path) -> None:
    pki = make_dev_pki(tmp_path, [])
    pki.ca_key.write_text("not a key")
    with pytest.raises(CertificateError, match="--force"):
        make_dev_pki(tmp_path, ["bike-1"])


def test_certs_dev_command_writes_the_pki_and_points_to_the_broker(tmp_path: Path) -> None:
    directory = tmp_path / "dev"
    result = CliRunner().invoke(
        cli, ["certs", "dev", "--dir", str(directory), "--client-id", "bike-1", "--client-id", "b2"]
    )
    assert result.exit_code == 0, result.output
    for name in ("ca.crt", "server.crt", "devices/bike-1.crt", "devices/b2.crt"):
        assert (directory / name).is_file(), name
    assert _mode(directory / "devices" / "b2.key") == 0o600
    assert f"alleycat broker --dir {directory}" in result.output


def test_certs_dev_command_keeps_the_ca_unless_forced(tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(cli, ["certs", "dev", "--dir", str(tmp_path)])
    ca = (tmp_path / "ca.crt").read_bytes()
    kept = runner.invoke(cli, ["certs", "dev", "--dir", str(tmp_path)])
    assert "Kept the existing CA" in kept.output
    assert (tmp_path / "ca.crt").read_bytes() == ca
    runner.invoke(cli, ["certs", "dev", "--dir", str(tmp_path), "--force"])
    assert (tmp_path / "ca.crt").read_bytes() != ca


def test_certs_dev_command_rejects_a_bad_client_id_as_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["certs", "dev", "--dir", str(tmp_path), "--client-id", "a/b"])
    assert result.exit_code == 2
    assert "Invalid value for '--client-id'" in result.output
    assert not (tmp_path / "ca.crt").exists()


def test_under_umask_000_nothing_written_is_writable_by_others(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "dev"
    previous = os.umask(0)
    try:
        result = CliRunner().invoke(
            cli, ["certs", "dev", "--dir", str(directory), "--client-id", "bike-1"]
        )
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    modes = {path.relative_to(tmp_path).as_posix(): _mode(path) for path in tmp_path.rglob("*")}
    assert modes == {
        "new": 0o755,
        "new/dev": 0o755,
        "new/dev/devices": 0o755,
        "new/dev/ca.crt": 0o644,
        "new/dev/ca.key": 0o600,
        "new/dev/server.crt": 0o644,
        "new/dev/server.key": 0o600,
        "new/dev/devices/bike-1.crt": 0o644,
        "new/dev/devices/bike-1.key": 0o600,
    }


def test_a_folder_that_already_exists_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    make_dev_pki(tmp_path, ["bike-1"])
    assert _mode(tmp_path) == 0o700
    assert _mode(tmp_path / "devices") == 0o755


def test_certs_dev_claim_makes_a_claim_certificate_signed_by_the_dev_ca_and_keeps_it(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["certs", "dev", "--dir", str(tmp_path), "--claim"])
    assert result.exit_code == 0, result.output
    cert, key = tmp_path / "claim" / "claim.pem.crt", tmp_path / "claim" / "claim.private.pem.key"
    assert f"Claim:   {cert}  {key}" in result.output
    assert _mode(key) == 0o600 and _mode(cert) == 0o644
    claim = _load(cert)
    assert claim.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alleycat-claim"
    assert claim.issuer == _load(tmp_path / "ca.crt").subject
    before = cert.read_bytes()
    runner.invoke(cli, ["certs", "dev", "--dir", str(tmp_path), "--claim"])
    assert cert.read_bytes() == before
    # Without --claim, no claim is made.
    other = tmp_path / "other"
    assert "Claim:" not in runner.invoke(cli, ["certs", "dev", "--dir", str(other)]).output
    assert not (other / "claim").exists()
