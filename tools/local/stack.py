"""The whole farm on one machine: Redis, the DB, N workers and (optionally) the web UI.

Used by `farm up` and `farm demo`. Everything started here is stopped here:
workers get SIGTERM (RQ's warm shutdown) then SIGKILL, the embedded Redis last.
Secrets travel to child processes through their environment, never argv.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from redis import Redis

from jobs import settings
from jobs.db import migrate
from jobs.processes import stop_process_tree
from jobs.reconcile import reconcile
from tools.local.services import EmbeddedRedis, start_embedded_redis

if TYPE_CHECKING:  # cryptography is imported only when TLS is asked for
    from tools.local.lan import Lan
    from tools.local.tls import TlsFiles

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = PROJECT_ROOT / "data"
WEB_APP = PROJECT_ROOT / "web" / "app.py"  # the Streamlit script of the web UI


@dataclass
class Stack:
    redis_url: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    embedded: EmbeddedRedis | None = None
    web_url: str | None = None

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]


def child_env(redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["REDIS_URL"] = redis_url
    env["FARM_HOME"] = str(settings.farm_home())
    env["DATABASE_URL"] = settings.database_url()
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_worker(
    stack: Stack, name: str, memory_gb: float | None = None
) -> subprocess.Popen[bytes]:
    logs = settings.farm_home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "tools.cli", "worker", "--name", name]
    if memory_gb is not None:
        argv += ["--memory-gb", str(memory_gb)]
    log = open(logs / f"worker-{name}.log", "ab")
    process = subprocess.Popen(
        argv,
        env=child_env(stack.redis_url),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    stack.processes.append(process)
    return process


# What an anonymous browser can reach is hardened here, on the command line,
# so it holds however the UI is started: no tracebacks or server paths in the
# page (errors are logged on the server), no developer menu (rerun, clear
# cache), uploads no bigger than a spec file, and modest websocket messages.
STREAMLIT_HARDENING = {
    "client.showErrorDetails": "none",
    "client.toolbarMode": "viewer",
    "server.maxUploadSize": "1",  # MB, Streamlit's minimum; spec files are ≤ 1 MB
    "server.maxMessageSize": "16",  # MB; the largest page (25 eval rows) is far below
    "server.enableXsrfProtection": "true",
    "server.headless": "true",
    "browser.gatherUsageStats": "false",
}


def streamlit_argv(port: int, address: str, tls: TlsFiles | None = None) -> list[str]:
    """The command that serves the web UI (for `farm up`, `farm demo` and `farm web`):
    the one place the Streamlit command line is built, so every way of starting
    the UI gets the same hardening. With `tls`, https only (`farm tls`)."""
    argv = [sys.executable, "-m", "streamlit", "run", str(WEB_APP)]
    argv += ["--server.port", str(port), "--server.address", address]
    if tls is not None:
        argv += [f"--server.sslCertFile={tls.cert}", f"--server.sslKeyFile={tls.key}"]
    for option, value in STREAMLIT_HARDENING.items():
        argv.append(f"--{option}={value}")
    return argv


def start_web(
    stack: Stack, port: int, address: str = "127.0.0.1", tls: TlsFiles | None = None
) -> subprocess.Popen[bytes]:
    logs = settings.farm_home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    argv = streamlit_argv(port, address, tls)
    log = open(logs / "web.log", "ab")
    process = subprocess.Popen(
        argv,
        env=child_env(stack.redis_url) | {"FORWARDED_ALLOW_IPS": settings.forwarded_allow_ips()},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=PROJECT_ROOT,
    )
    stack.processes.append(process)
    stack.web_url = f"{'https' if tls else 'http'}://{address}:{port}"
    return process


@contextmanager
def farm_stack(
    workers: int = 1,
    web_port: int | None = None,
    web_address: str = "127.0.0.1",
    lan: Lan | None = None,
) -> Iterator[Stack]:
    """`lan` (`farm up --lan`): the embedded Redis listens on the LAN addresses
    too, TLS only, and the UI serves https; REDIS_URL, if set, is used as is."""
    migrate()
    embedded = None
    redis_url = settings.redis_url()
    if redis_url is None:
        embedded = start_embedded_redis(
            settings.farm_home() / "redis",
            port=lan.redis_port if lan else None,
            bind=tuple(dict.fromkeys(["127.0.0.1", *lan.addresses])) if lan else ("127.0.0.1",),
            tls=lan.tls if lan else None,
        )
        redis_url = embedded.url
    stack = Stack(redis_url=redis_url, embedded=embedded)
    try:
        # The embedded Redis starts empty: work the DB says is queued or lost
        # from an earlier session goes back on the queues before workers start.
        repairs = reconcile(Redis.from_url(redis_url), wait_for_lock=10.0)
        if repairs:
            print("reconciled: " + "; ".join(repairs.lines()), flush=True)
        host = os.uname().nodename.split(".")[0]
        for index in range(workers):
            start_worker(stack, f"{host}-{index + 1}")
        if web_port is not None:
            start_web(stack, web_port, web_address, lan.tls if lan else None)
        yield stack
    finally:
        # A second Ctrl-C (uv forwards one) must not interrupt the shutdown.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for process in stack.processes:
            stop_process_tree(process)
        if embedded is not None:
            embedded.stop()


def wait_for_workers(redis_url: str, count: int, timeout: float = 60.0) -> None:
    from redis import Redis
    from rq import Worker

    redis = Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(Worker.all(connection=redis)) >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{count} workers did not start within {timeout:.0f} s")
