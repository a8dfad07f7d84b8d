"""The coordinator's CA and certificate (`farm tls`, `tools.local.tls`)."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from tools.cli import app
from tools.local.tls import coordinator_tls


def test_the_ca_is_made_once_and_each_certificate_chains_to_it(tmp_path: Path) -> None:
    files = coordinator_tls(tmp_path / "tls", ["192.168.1.10", "coordinator.local"])
    fingerprint = files.fingerprint()
    again = coordinator_tls(tmp_path / "tls", ["192.168.1.11"])  # a new address
    assert again.fingerprint() == fingerprint  # the Macs keep trusting the same CA
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    cert = x509.load_pem_x509_certificate(again.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.168.1.11")]
    for path in (files.ca, files.ca_key, files.cert, files.key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700


def test_farm_tls_prints_the_fingerprint_and_the_urls_that_pin_the_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FARM_HOME", str(tmp_path))
    shown = CliRunner().invoke(app, ["tls", "--address", "192.168.1.10"])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    fingerprint = coordinator_tls(tmp_path / "tls", ["192.168.1.10"]).fingerprint()
    assert f"sha256 {fingerprint}" in text
    assert "rediss://:PASSWORD@192.168.1.10:6379/0?ssl_cert_reqs=required" in text
    assert "sslmode=verify-full&sslrootcert=" in text


def test_farm_web_tls_without_a_certificate_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FARM_HOME", str(tmp_path))
    refused = CliRunner().invoke(app, ["web", "--tls"])
    assert refused.exit_code == 1
    assert f"no certificate in {tmp_path / 'tls'}: run `farm tls --address ADDRESS`" in (
        refused.output
    )


def test_a_worker_advertising_a_host_name_is_refused_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLX's ring connects ranks by IP address: a name would fail in a collective."""
    monkeypatch.setenv("FARM_HOME", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    refused = CliRunner().invoke(app, ["worker", "--advertise-address", "studio.local"])
    assert refused.exit_code == 2
    text = " ".join(refused.output.split())
    assert "--advertise-address 'studio.local' is not an IP address" in text
    assert not (tmp_path / "farm.db").exists()  # nothing started, nothing written


def test_a_fingerprint_is_printed_as_it_is_whatever_its_hex_pairs_spell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ ":AB:" is an emoji code to the console: a fingerprint must never become one."""
    from tools.local.tls import TlsFiles

    monkeypatch.setenv("FARM_HOME", str(tmp_path))
    monkeypatch.setattr(TlsFiles, "fingerprint", lambda self: "12:AB:CD:0A")
    shown = CliRunner().invoke(app, ["tls", "--address", "192.168.1.10"])
    assert "sha256  12:AB:CD:0A\n" in shown.output
