"""A worker's periodic reconciler, in a process of its own.

The worker's heartbeat must come every few seconds or the farm calls the worker
lost. A reconciler pass can take long (a queue of tens of thousands of stages,
a slow database), so the heartbeat never runs one: it starts `python -m
jobs.reconcile` and, on later heartbeats, only looks whether it has ended. A
pass still running when the next one is due is left to finish; one that hangs
far longer than a pass should is stopped and started anew.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from jobs import settings


class ReconcilerProcess:
    """At most one reconciler child per worker, started and polled, never waited on."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def due(self, logger: Any) -> None:
        """A pass is due: start one unless the last is still running."""
        if self.running(logger):
            return
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobs.reconcile"], stdin=subprocess.DEVNULL
        )
        self.started = time.monotonic()

    def running(self, logger: Any) -> bool:
        """Whether the last pass still runs; reaps it (and says so if it failed)."""
        if self.process is None:
            return False
        code = self.process.poll()
        if code is None:
            if time.monotonic() - self.started < self.hung_after_s():
                return True
            logger.warning("reconciler pass %s hung; stopping it", self.process.pid)
            self.process.kill()
            code = self.process.wait()
        elif code != 0:
            logger.warning("reconciler pass ended with exit code %s", code)
        self.process = None
        return False

    @staticmethod
    def hung_after_s() -> float:
        # Far past the lock's 30 s and several periods: nothing a healthy pass takes.
        return max(300.0, 10 * settings.reconcile_every_s())
