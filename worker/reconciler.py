"""A worker's periodic reconciler, in a process of its own.

The worker's heartbeat must come every few seconds or the farm calls the worker
lost. A reconciler pass can take long (a queue of tens of thousands of stages,
a slow database), so the heartbeat never runs one. The worker starts one
long-lived child, `python -m jobs.reconcile --every S --parent PID`, that runs
a pass every S seconds and ends when the worker does (it watches its parent);
the heartbeat only looks that the child is alive and starts it again if not.
One child for the worker's life, not one per pass: starting Python and
importing the farm costs about 3 s of CPU, every pass, on every Mac.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from jobs import settings
from jobs.processes import stop_process

log = logging.getLogger(__name__)


class ReconcilerProcess:
    """The worker's reconciler child: started once, polled, restarted if it died."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        every = f"{settings.reconcile_every_s():g}"
        return [sys.executable, "-m", "jobs.reconcile", "--every", every,
                "--parent", str(os.getpid())]  # fmt: skip

    def ensure(self) -> None:
        """Start the child unless it runs; say so if it ended on its own."""
        if self.process is not None:
            code = self.process.poll()
            if code is None:
                return
            log.warning("reconciler process ended (exit code %s); starting it again", code)
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        """At the worker's end (the child also ends by itself when it sees its parent gone)."""
        if self.process is not None:
            stop_process(self.process)
        self.process = None
