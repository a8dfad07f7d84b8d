"""A Mac's side of joining a LAN farm: `farm worker --join TOKEN` once, then `farm worker`.

The token (`jobs.join_token`) is kept under FARM_HOME/join: the coordinator's
CA as `ca.pem` and the credential as `credential.json`, both 0600 in a 0700
folder. From then on the worker connects with TLS to the pinned CA only, and
its Redis and database URLs reach its children through their environment,
never a command line, a log or the UI.
"""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import asdict
from pathlib import Path

from jobs import settings
from jobs.join_token import JoinToken, TokenError, decode_token
from jobs.private_files import private_folder, write_private


def join_folder() -> Path:
    return settings.farm_home() / "join"


def store_token(text: str) -> JoinToken:
    """Check the token and keep it; TokenError says why one cannot be used."""
    token = decode_token(text)
    folder = private_folder(join_folder())
    write_private(folder / "ca.pem", ssl.DER_cert_to_PEM_cert(token.ca_der).encode())
    fields = asdict(token)
    fields.pop("ca_der")  # kept as ca.pem beside it
    write_private(folder / "credential.json", json.dumps(fields, indent=2).encode())
    return token


def stored_token() -> JoinToken | None:
    folder = join_folder()
    if not (folder / "credential.json").exists():
        return None
    fields = json.loads((folder / "credential.json").read_text())
    fields["ca_der"] = ssl.PEM_cert_to_DER_cert((folder / "ca.pem").read_text())
    return JoinToken(**fields)


def reachable_address(token: JoinToken, timeout: float = 3.0) -> str:
    """The first of the coordinator's addresses that accepts a connection to
    its Redis port (a Mac may see it on one network and not another)."""
    for address in token.addresses:
        try:
            with socket.create_connection((address, token.redis_port), timeout=timeout):
                return address
        except OSError:
            continue
    tried = ", ".join(f"{a}:{token.redis_port}" for a in token.addresses)
    raise TokenError(
        f"the coordinator answers at none of its addresses ({tried}): is `farm up --lan` "
        "running there, and is this Mac on the same network?"
    )


def joined_urls() -> tuple[JoinToken, str, str] | None:
    """(token, REDIS_URL, DATABASE_URL) of the farm this Mac joined, or None."""
    token = stored_token()
    if token is None:
        return None
    address = reachable_address(token)
    ca = str(join_folder() / "ca.pem")
    return token, token.redis_url(address, ca), token.database_url(address, ca)
