"""`farm up`: the whole farm in one command, and nothing left behind after Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from redis import Redis
from redis.exceptions import RedisError

from tests.support import PROJECT_ROOT
from tests.support.processes import wait_until
from tools.local.services import free_port


def healthy(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).read() == b"ok"
    except OSError:
        return False


def embedded_redis_is_private(started: list[psutil.Process]) -> None:
    """The embedded Redis wants the password the workers and the UI got in their
    environment, and that password is on no command line on this machine."""
    worker = next(p for p in started if "tools.cli worker" in " ".join(p.cmdline()))
    url = urlsplit(worker.environ()["REDIS_URL"])
    assert url.hostname == "127.0.0.1" and url.password and len(url.password) >= 32
    with pytest.raises(RedisError, match="NOAUTH|[Aa]uthentication"):
        Redis(host="127.0.0.1", port=url.port, protocol=2).get("rq:workers")
    for process in psutil.process_iter(["cmdline"]):
        assert url.password not in " ".join(process.info["cmdline"] or [])


def test_farm_up_serves_the_ui_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["FARM_HOME"] = str(tmp_path / "home")
    # Exactly what the README says to type, in its own session so that the
    # SIGINT below reaches the whole foreground group, as a terminal's Ctrl-C does.
    up = subprocess.Popen(
        ["uv", "run", "farm", "up", "--workers", "2", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: healthy(f"http://127.0.0.1:{port}/_stcore/health"),
            timeout=90,
            what="the web UI",
        )
        started = psutil.Process(up.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in started]
        assert sum("tools.cli worker" in c for c in commands) == 2
        # The embedded Redis: redis-server from PATH, or the wheel's valkey-server.
        assert any("redis-server" in c or "valkey-server" in c for c in commands)
        assert any("streamlit" in c for c in commands)
        assert (tmp_path / "home" / "farm.db").exists()  # SQLite under FARM_HOME
        embedded_redis_is_private(started)

        farm = next(p for p in started if " up " in " ".join(p.cmdline()) + " ")
        os.killpg(up.pid, signal.SIGINT)
        # uv forwards a second SIGINT to farm, and users press Ctrl-C again:
        # more interrupts while farm stops its children must not cut that short.
        while farm.is_running() and farm.status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.02)
            try:
                farm.send_signal(signal.SIGINT)
            except psutil.NoSuchProcess:
                break
        output = up.communicate(timeout=60)[0].decode()
        assert f"http://127.0.0.1:{port}" in output
        gone, alive = psutil.wait_procs(started, timeout=15)
        assert alive == [], [p.cmdline() for p in alive]
    finally:
        if up.poll() is None:
            up.kill()
