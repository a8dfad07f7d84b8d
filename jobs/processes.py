"""Stopping a child process the one way the farm does: ask it, then insist.

The worker's reconciler, `farm up`'s embedded Redis and the benchmarks' servers
each end with SIGTERM, which lets them close what they hold, and SIGKILL when
they have not ended after a grace period: a server busy answering, or a
process stuck inside a C call, may not stop on the first signal. `farm up`'s
workers and UI are stopped with their whole trees (`stop_process_tree`).
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import psutil


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


def stop_process_tree(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """`farm up`'s children: SIGTERM to the process group (RQ's warm shutdown,
    Streamlit's exit), then SIGKILL for anything left, including descendants in
    other process groups, such as a worker's work horse and its stage process."""
    if process.poll() is not None:
        return
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    _, alive = psutil.wait_procs(descendants, timeout=timeout)
    for leftover in alive:
        try:
            leftover.kill()
        except psutil.NoSuchProcess:
            pass
