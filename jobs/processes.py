"""Stopping a child process the one way the farm does: ask it, then insist.

The worker's reconciler, `farm up`'s embedded Redis and the benchmark's model
server each end with SIGTERM, which lets them close what they hold, and SIGKILL
when they have not ended after a grace period: a server busy answering, or a
process stuck inside a C call, may not stop on the first signal.
"""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(process: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if `process` is still running after `grace_s`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
