"""The coordinator's private CA and server certificate, for TLS across the LAN.

`farm tls --address 192.168.1.10` makes, under FARM_HOME/tls, a CA of the
farm's own (kept on the coordinator, never sent anywhere) and one server
certificate for the coordinator's addresses, used by Redis, PostgreSQL and
the web UI alike. Every file is written 0600. A Mac trusts the coordinator by
holding `ca.pem` and checking its fingerprint against the one the coordinator
printed: Redis (`rediss://…?ssl_ca_certs=…&ssl_cert_reqs=required`) and
PostgreSQL (`?sslmode=verify-full&sslrootcert=…`) then refuse any server
whose certificate does not chain to it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jobs.private_files import private_folder, write_private

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest macOS accepts for a server certificate


@dataclass(frozen=True)
class TlsFiles:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def key(self) -> Path:
        return self.folder / "server.key"

    def fingerprint(self) -> str:
        return ca_fingerprint(self.ca.read_bytes())


def ca_fingerprint(ca_pem: bytes) -> str:
    """sha256 of the CA certificate's DER bytes, as `openssl x509 -fingerprint -sha256` shows it."""
    der = x509.load_pem_x509_certificate(ca_pem).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(files: TlsFiles) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    # A name of its own: a Mac holding another farm's CA is told "unknown
    # issuer", not a confusing signature failure between two same-named CAs.
    name = _name(f"lorafarm coordinator CA {secrets.token_hex(4)}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),  # fmt: skip
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    write_private(files.ca_key, _key_pem(key))
    write_private(files.ca, cert.public_bytes(serialization.Encoding.PEM))


def make_server_cert(files: TlsFiles, addresses: list[str]) -> None:
    """A certificate for the coordinator at `addresses` (IP addresses or host
    names), signed by the farm's CA."""
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(files.ca.read_bytes())
    names: list[x509.GeneralName] = []
    for address in addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            names.append(x509.DNSName(address))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(addresses[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    write_private(files.key, _key_pem(key))
    write_private(files.cert, cert.public_bytes(serialization.Encoding.PEM))


def coordinator_tls(folder: Path, addresses: list[str]) -> TlsFiles:
    """The CA (made once, kept) and a server certificate for `addresses` (made
    again each time, so a new address is one command away)."""
    files = TlsFiles(private_folder(folder))
    if not (files.ca.exists() and files.ca_key.exists()):
        make_ca(files)
    make_server_cert(files, addresses)
    return files
