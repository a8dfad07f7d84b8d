"""The one-line token a Mac joins a LAN farm with (`farm worker --join TOKEN`).

A token carries what a worker needs and nothing it must be told separately:
the coordinator's addresses, its Redis and PostgreSQL ports, the coordinator's
CA (and its sha256, so a token cut short or mistyped is refused instead of
trusting a damaged CA) and this Mac's own credential, a Redis ACL user and a
PostgreSQL role that `farm workers revoke NAME` can shut out alone.

Pure: encoding, decoding and the URLs a joined worker connects with. Storing
the credential (0600, under FARM_HOME) is `worker.join`'s business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import zlib
from dataclasses import asdict, dataclass
from urllib.parse import quote

PREFIX = "lorafarm1."
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


class TokenError(ValueError):
    """A token that cannot be used, said in one line."""


@dataclass(frozen=True)
class JoinToken:
    name: str  # the worker's name on the farm
    addresses: list[str]  # where a Mac may reach the coordinator, tried in order
    redis_port: int
    redis_user: str
    redis_password: str
    db_host: str | None  # None: the coordinator's address the Mac reached Redis at
    db_port: int
    db_name: str
    db_user: str
    db_password: str
    ca_der: bytes  # the coordinator's CA: the only issuer this Mac trusts
    ca_sha256: str  # hex sha256 of ca_der

    def redis_url(self, address: str, ca_file: str) -> str:
        """TLS only, the server's certificate checked against the pinned CA."""
        return (
            f"rediss://{quote(self.redis_user, safe='')}:{quote(self.redis_password, safe='')}"
            f"@{_host(address)}:{self.redis_port}/0"
            f"?ssl_cert_reqs=required&ssl_ca_certs={quote(ca_file)}"
        )

    def database_url(self, address: str, ca_file: str) -> str:
        """verify-full: the certificate must chain to the pinned CA and name the host."""
        host = self.db_host or address
        return (
            f"postgresql://{quote(self.db_user, safe='')}:{quote(self.db_password, safe='')}"
            f"@{_host(host)}:{self.db_port}/{quote(self.db_name, safe='')}"
            f"?sslmode=verify-full&sslrootcert={quote(ca_file)}"
        )


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def fingerprint(ca_der: bytes) -> str:
    """The CA's sha256 as `farm tls` and `openssl x509 -fingerprint -sha256` print it."""
    digest = hashlib.sha256(ca_der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def check_name(name: str) -> str:
    """A worker name fit for a Redis user and a PostgreSQL role: [a-z0-9-], ≤ 40."""
    if not NAME.match(name):
        raise TokenError(
            f"worker name {name!r}: use lower-case letters, digits and '-' "
            "(at most 40, starting with a letter or digit)"
        )
    return name


def redis_user_of(name: str) -> str:
    return f"farm-worker-{check_name(name)}"


def db_role_of(name: str) -> str:
    return f"farm_worker_{check_name(name).replace('-', '_')}"


def encode_token(token: JoinToken) -> str:
    fields = asdict(token)
    fields["ca_der"] = base64.b64encode(token.ca_der).decode()
    packed = zlib.compress(json.dumps(fields, separators=(",", ":")).encode(), 9)
    return PREFIX + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def decode_token(text: str) -> JoinToken:
    """The token in `text` (spaces and line breaks a terminal added are ignored);
    TokenError says why one cannot be used."""
    text = "".join(text.split())
    if not text.startswith(PREFIX):
        raise TokenError(
            f"not a lorafarm join token (it starts with {PREFIX!r}): copy the whole "
            "line `farm up --lan` or `farm workers add NAME` printed on the coordinator"
        )
    body = text.removeprefix(PREFIX)
    try:
        packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        fields = json.loads(zlib.decompress(packed))
        fields["ca_der"] = base64.b64decode(fields["ca_der"])
        token = JoinToken(**fields)
    except (binascii.Error, zlib.error, ValueError, KeyError, TypeError) as exc:
        raise TokenError(
            f"the join token is damaged or cut short ({type(exc).__name__}): copy the "
            "whole line again"
        ) from None
    if fingerprint(token.ca_der) != token.ca_sha256:
        raise TokenError(
            "the join token's CA does not match its own sha256: the token was altered "
            "or cut short; copy the whole line again"
        )
    check_name(token.name)
    return token
