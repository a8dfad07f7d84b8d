"""The RQ job function: claim a stage, run it in a child process, record the outcome.

This runs in RQ's work horse and never imports MLX. The MLX work happens in a
child (`python -m worker.child STAGE_ID ATTEMPT`) so that a crash or an
out-of-memory kill takes down only that child, a cancel can kill it (RQ stops
a job by killing the horse's process group, the child included), and Metal
memory goes back to the OS when the stage ends.

While the child works, the horse beats the stage's heartbeat in the DB. A beat
that finds the stage cancelled or taken over by a newer attempt stops the
child; so does losing the DB for longer than FARM_LOST_AFTER_S, since by then
another worker has been given the stage.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rq import get_current_job

from jobs import lifecycle, settings
from jobs.db import Run, Stage, forget_engines_after_fork, session_scope
from jobs.diagnostics import record_config_diagnostics, record_run_diagnostics
from jobs.queue import push_all
from jobs.states import FINISHED

LOG_TAIL_CHARS = 4000
# Exit codes the child uses to say why it stopped (see worker/child.py).
EXIT_STALE = 75  # its attempt was superseded: nothing to record
EXIT_DISK_FULL = 74  # out of disk space: failed, not retried here


@dataclass(frozen=True)
class ChildEnd:
    returncode: int | None  # None: the horse stopped the child itself
    why: str = ""  # "stale" | "cancelled" | "no database" when the horse stopped it


def run_stage(stage_id: int) -> dict[str, Any]:
    forget_engines_after_fork()  # the horse was forked from the worker
    job = get_current_job()
    redis = job.connection if job else None
    worker = os.environ.get("FARM_WORKER_NAME") or (job.worker_name if job else "") or "?"
    with session_scope() as session:
        attempt = lifecycle.claim(session, stage_id, worker, socket.gethostname())
    if attempt is None:
        # Cancelled, skipped, or claimed through another ticket: a stage never runs twice.
        return {"stage_id": stage_id, "claimed": False}

    log_path = settings.farm_home() / "logs" / f"stage-{stage_id}.log"
    try:
        end = run_child(stage_id, attempt, log_path)
    except BaseException as exc:  # RQ's job timeout or a shutdown tears the horse down
        # A stage that ran out of time would run out of time again: no retry.
        timed_out = type(exc).__name__ == "JobTimeoutException"
        reason = "stage timed out (resources.timeout_hours)" if timed_out else f"stopped: {exc!r}"
        with session_scope() as session:
            tickets = lifecycle.fail(session, stage_id, attempt, reason, retry=not timed_out)
        push_all(redis, tickets)
        raise
    with session_scope() as session:
        tickets = record_end(session, stage_id, attempt, end, log_path)
    push_all(redis, tickets)
    after_stage(stage_id)
    return {"stage_id": stage_id, "attempt": attempt, "returncode": end.returncode}


def record_end(
    session: Any, stage_id: int, attempt: int, end: ChildEnd, log_path: Path
) -> list[Any]:
    """Turn how the child ended into a lifecycle transition."""
    if end.returncode == 0:
        return lifecycle.finish(session, stage_id, attempt)
    if end.why in ("stale", "cancelled") or end.returncode == EXIT_STALE:
        return []  # the DB already says what happened; this attempt has nothing to add
    if end.why == "no database":
        return []  # another worker has the stage by now; the reconciler saw to it
    tail = log_tail(log_path)
    if end.returncode == EXIT_DISK_FULL:
        return lifecycle.fail(session, stage_id, attempt, disk_full_line(tail), retry=False)
    assert end.returncode is not None
    error = describe_exit(end.returncode) + "\n" + tail
    # Killed by a signal (out of memory, a kill): retry. A Python error: it
    # would fail the same way again, so fail for good.
    return lifecycle.fail(session, stage_id, attempt, error, retry=end.returncode < 0)


def run_child(stage_id: int, attempt: int, log_path: Path) -> ChildEnd:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "worker.child", str(stage_id), str(attempt)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_environment(),
        )
        try:
            return watch_child(child, stage_id, attempt)
        except BaseException:
            # The horse is being torn down (timeout, shutdown): take the child with it.
            child.kill()
            child.wait()
            raise


def watch_child(child: subprocess.Popen[bytes], stage_id: int, attempt: int) -> ChildEnd:
    """Wait for the child, beating the stage's heartbeat; stop it when the beat
    says it no longer owns the stage or the DB has been unreachable too long."""
    every = settings.heartbeat_every_s()
    last_beat = time.monotonic()
    while True:
        try:
            return ChildEnd(child.wait(timeout=every))
        except subprocess.TimeoutExpired:
            pass
        try:
            with session_scope() as session:
                alive = lifecycle.heartbeat(session, stage_id, attempt)
                stage = session.get(Stage, stage_id)
                cancelled = stage is not None and stage.status == "cancelled"
            last_beat = time.monotonic()
        except Exception as exc:  # DB unreachable: keep working until we'd be lost
            print(f"stage {stage_id}: heartbeat failed: {exc!r}", file=sys.stderr, flush=True)
            if time.monotonic() - last_beat > settings.lost_after_s():
                stop(child)
                return ChildEnd(None, "no database")
            continue
        if not alive:
            stop(child)
            return ChildEnd(None, "cancelled" if cancelled else "stale")


def stop(child: subprocess.Popen[bytes]) -> None:
    child.kill()
    child.wait()


def child_environment() -> dict[str, str]:
    """The child talks to the DB, never to Redis: it gets no Redis secrets."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_PASSWORD")}
    env["FARM_HOME"] = str(settings.farm_home())
    env["DATABASE_URL"] = settings.database_url()
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
        return f"stage process killed by {name}{hint}"
    return f"stage process exited with code {returncode}"


def log_tail(log_path: Path) -> str:
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - LOG_TAIL_CHARS, 0))
            data = handle.read()
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", errors="replace")


def disk_full_line(tail: str) -> str:
    """The child's one-line disk-full report (it starts with "disk full"), else the tail."""
    for line in reversed(tail.splitlines()):
        if line.startswith("disk full"):
            return line
    return "disk full\n" + tail


def after_stage(stage_id: int) -> None:
    """Diagnose the run's results once an eval (or the whole run) has ended."""
    with session_scope() as session:
        stage = session.get(Stage, stage_id)
        assert stage is not None
        run = session.get(Run, stage.run_id)
        assert run is not None
        status, kind, run_id, fingerprint = run.status, stage.kind, run.id or 0, run.fingerprint
    if kind != "eval" and status not in FINISHED:
        return
    try:
        with session_scope() as session:
            record_run_diagnostics(session, run_id)
            if status in FINISHED:
                record_config_diagnostics(session, fingerprint)
    except Exception as exc:  # a diagnostics bug must never fail a finished stage
        print(f"diagnostics for run {run_id} failed: {exc!r}", file=sys.stderr)
