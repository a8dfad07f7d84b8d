"""Real faults for the fault tests: private Redis servers that can be stopped and
restarted, whole process trees killed with SIGKILL, and a timing log.

Nothing is simulated: a private `redis-server` listens on a spare loopback
port (with AOF when a test wants its data to survive a restart), and a kill
is `kill -9` of every PID in a worker's tree at once, as when a Mac panics.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import psutil
from redis import Redis

from tools.local.services import free_port, redis_server_binary


class PrivateRedis:
    """A redis-server of the test's own on 127.0.0.1:<spare port>."""

    def __init__(self, workdir: Path, appendonly: bool = False, password: str = "") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.appendonly = appendonly
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        config = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.workdir}",
            f"appendonly {'yes' if self.appendonly else 'no'}",
            'save ""',
            f"logfile {self.workdir / 'redis.log'}",
        ] + ([f"requirepass {self.password}"] if self.password else [])
        self.process = subprocess.Popen(
            [redis_server_binary(), "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdin is not None
        self.process.stdin.write("\n".join(config).encode() + b"\n")
        self.process.stdin.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                Redis.from_url(self.url).ping()
                return
            except Exception:
                time.sleep(0.05)
        raise AssertionError(f"private Redis on port {self.port} did not start")

    def stop(self) -> None:
        """Shut the server down (with AOF on, its data is on disk)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        self.process = None


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and all its descendants at once; returns the PIDs."""
    root = psutil.Process(pid)
    tree = [root, *root.children(recursive=True)]
    for proc in tree:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=10)
    return [p.pid for p in tree]


def record_timing(fault: str, **figures: object) -> None:
    """Append a fault's measured figures to FARM_FAULT_REPORT (a JSON-lines
    file), so the numbers in the docs come from a real run."""
    target = os.environ.get("FARM_FAULT_REPORT")
    line = json.dumps({"fault": fault, **figures})
    print(line)
    if target:
        with open(target, "a") as handle:
            handle.write(line + "\n")
