"""Real `farm worker` processes for the end-to-end tests, and waiting without fixed sleeps."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.support import PROJECT_ROOT


class Workers:
    """Real `farm worker` processes, stopped (with their children) at teardown."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        name: str,
        memory_gb: float = 16.0,
        env: dict[str, str] | None = None,
        burst: bool = False,
    ) -> subprocess.Popen[bytes]:
        log = open(self.home / f"worker-{name}.log", "ab")
        argv = [
            sys.executable,
            "-m",
            "tools.cli",
            "worker",
            "--name",
            name,
            "--memory-gb",
            str(memory_gb),
        ] + (["--burst"] if burst else [])
        process = subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=PROJECT_ROOT,
        )
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.home / f"worker-{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                for child in psutil.Process(process.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()  # it may have exited since it was listed
                process.kill()
                process.wait()


def wait_until(predicate, timeout: float = 120.0, interval: float = 0.25, what: str = ""):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
