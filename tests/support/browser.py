"""Headless Chromium for the browser tests: where it is, how it starts, where
screenshots go, and whether a Streamlit server answers."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import PROJECT_ROOT

SHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LOAD_S = 120_000  # ms: Streamlit's first page load on a slow 2-core machine


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.read().strip() == b"ok"
    except OSError:
        return False


@contextmanager
def farm_web(tmp_path: Path) -> Iterator[str]:
    """`farm web` on a free port, without the UI password, for as long as the
    block runs; its address. Its output goes to tmp_path/farm-web.log."""
    from tests.support.processes import wait_until
    from tools.local.services import free_port

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium chromium-driver")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "FARM_UI_PASSWORD"}
    log = tmp_path / "farm-web.log"
    process = subprocess.Popen(
        ["uv", "run", "farm", "web", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is not None or healthy(url), timeout=120,
                   what="farm web to serve the UI")  # fmt: skip
        assert process.poll() is None, log.read_text(errors="replace")
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
