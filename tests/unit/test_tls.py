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
