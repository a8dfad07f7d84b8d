"""`farm up --lan ADDRESS`: the coordinator of a farm whose workers are other Macs.

What plain `farm up` keeps on loopback is served to the LAN over TLS only:
the embedded Redis listens on the given addresses with the coordinator's
certificate (`tools.local.tls`), the UI serves https, and the farm's
PostgreSQL (SQLite cannot be shared) is checked to serve TLS with the same
certificate. Each Mac joins with a token (`jobs.join_token`) that pins the
coordinator's CA and carries a credential of its own (`tools.local.credentials`).

`FARM_HOME/lan/coordinator.json` (0600) remembers where the Macs reach the
coordinator and the admin Redis URL, so `farm workers add|revoke` work while
`farm up --lan` runs.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from jobs import settings
from jobs.access import is_loopback
from jobs.private_files import private_folder, write_private
from tools.local.credentials import Coordinator
from tools.local.tls import TlsFiles

DEFAULT_REDIS_PORT = 6380  # beside a Redis the Mac may already run on 6379


class LanError(RuntimeError):
    """What keeps `farm up --lan` or `farm workers` from going on, in one line."""


@dataclass(frozen=True)
class Lan:
    addresses: list[str]
    redis_port: int
    tls: TlsFiles


def database_for_macs(url: str) -> tuple[str | None, int, str]:
    """Where the Macs reach the farm's database: (host, port, name); host None
    means the coordinator's own address (the database runs beside it)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise LanError(
            f"the farm's database is {parsed.get_backend_name()}, which other Macs cannot "
            "reach: set DATABASE_URL to a PostgreSQL (docker-compose.yml runs one over TLS), "
            "e.g. DATABASE_URL=postgresql://farm@127.0.0.1:5432/farm"
        )
    host = parsed.host or ""
    return (None if is_loopback(host) or host.startswith("/") else host,
            parsed.port or 5432, parsed.database or "postgres")  # fmt: skip


def redis_port_of(url: str) -> int:
    return urlsplit(url).port or 6379


def coordinator_file(home: Path | None = None) -> Path:
    return (home or settings.farm_home()) / "lan" / "coordinator.json"


def save_coordinator(coordinator: Coordinator, admin_redis_url: str) -> None:
    fields = asdict(coordinator) | {"admin_redis_url": admin_redis_url}
    fields["ca_der"] = base64.b64encode(coordinator.ca_der).decode()
    path = coordinator_file()
    private_folder(path.parent)
    write_private(path, json.dumps(fields, indent=2).encode())


def load_coordinator() -> tuple[Coordinator, str]:
    """The coordinator as `farm up --lan` last described it, and its admin Redis URL."""
    path = coordinator_file()
    if not path.exists():
        raise LanError(
            f"no LAN farm was started from {settings.farm_home()}: run `farm up --lan ADDRESS` "
            "on the coordinator (with the same FARM_HOME) first"
        )
    fields = json.loads(path.read_text())
    admin = fields.pop("admin_redis_url")
    fields["ca_der"] = base64.b64decode(fields["ca_der"])
    return Coordinator(**fields), admin


def ca_der(tls: TlsFiles) -> bytes:
    import ssl

    return ssl.PEM_cert_to_DER_cert(tls.ca.read_text())


def check_database_tls(coordinator: Coordinator, ca: Path) -> str | None:
    """None if the database serves TLS with a certificate of the farm's CA at
    the address the Macs will use; else what to change, in one line."""
    import psycopg
    from sqlalchemy.engine import make_url

    from jobs.connection_errors import reason_line

    host = coordinator.db_host or coordinator.addresses[0]
    parsed = make_url(settings.database_url())
    try:
        psycopg.connect(
            host=host, port=coordinator.db_port, dbname=coordinator.db_name,
            user=parsed.username or "postgres", password=parsed.password,
            sslmode="verify-full", sslrootcert=str(ca), connect_timeout=10,
        ).close()  # fmt: skip
    except psycopg.Error as exc:
        return (
            f"the Macs will not reach PostgreSQL at {host}:{coordinator.db_port} over TLS: "
            f"{reason_line(str(exc))}. Serve it with the farm's certificate "
            f"(ssl = on, ssl_cert_file and ssl_key_file: copies of {ca.parent}/server.pem "
            "and server.key, and `hostssl` lines in pg_hba.conf), as docker-compose.yml does"
        )
    return None
