"""The RQ job function: claim a stage, run it in a child process, record the outcome.

This runs in RQ's work horse and never imports MLX. The MLX work happens in a
child (`python -m worker.child STAGE_ID`) so that a crash or an out-of-memory
kill takes down only that child, a cancel can kill it (RQ stops a job by
killing the horse's process group, the child included), and Metal memory goes
back to the OS when the stage ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from rq import get_current_job
from sqlalchemy import update
from sqlmodel import select

from jobs import settings
from jobs.db import Run, Stage, WorkerRow, forget_engines_after_fork, session_scope, utcnow
from jobs.diagnostics import record_config_diagnostics, record_run_diagnostics
from jobs.queue import FINISHED, release_after_checkpoints, skip_descendants, update_run_status

LOG_TAIL_CHARS = 4000


class StageFailed(RuntimeError):
    """A stage's child exited non-zero or was killed; the message holds its log tail."""


def run_stage(stage_id: int) -> dict[str, Any]:
    forget_engines_after_fork()  # the horse was forked from the worker
    job = get_current_job()
    worker_name = os.environ.get("FARM_WORKER_NAME") or (job.worker_name if job else "") or "?"
    stage = claim_stage(stage_id, worker_name)
    if stage is None:
        # Cancelled, skipped, or already taken: a stage never runs twice.
        return {"stage_id": stage_id, "kind": "none", "claimed": False}

    log_path = settings.farm_home() / "logs" / f"stage-{stage_id}.log"
    returncode = run_child(stage_id, log_path)
    if returncode == 0:
        return finish_stage(stage_id, worker_name, job.connection if job else None)
    error = describe_exit(returncode) + "\n" + log_tail(log_path)
    fail_stage(stage_id, error, job.connection if job else None)
    raise StageFailed(error)


def claim_stage(stage_id: int, worker_name: str) -> Stage | None:
    """Mark a queued stage running, atomically; None if it is not ours to run."""
    with session_scope() as session:
        claimed = session.exec(  # type: ignore[call-overload]
            update(Stage)
            .where(Stage.id == stage_id, Stage.status.in_(["queued", "waiting"]))  # type: ignore[attr-defined]
            .values(status="running", worker=worker_name, started_at=utcnow(), error=None)
        )
        if claimed.rowcount != 1:
            return None
        stage = session.get(Stage, stage_id)
        assert stage is not None
        session.refresh(stage)
        if stage.kind == "train":
            run = session.get(Run, stage.run_id)
            assert run is not None
            run.host = worker_name
            session.add(run)
        update_run_status(session, stage.run_id)
        _set_worker_stage(session, worker_name, stage_id)
        return stage


def run_child(stage_id: int, log_path: Path) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = child_environment()
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "worker.child", str(stage_id)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        try:
            return child.wait()
        except BaseException:
            # The horse is being torn down (timeout, shutdown): take the child with it.
            child.kill()
            child.wait()
            raise


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
        data = log_path.read_bytes()
    except FileNotFoundError:
        return ""
    return data[-LOG_TAIL_CHARS:].decode("utf-8", errors="replace")


def finish_stage(stage_id: int, worker_name: str, redis: Any = None) -> dict[str, Any]:
    with session_scope() as session:
        stage = session.get(Stage, stage_id)
        assert stage is not None
        if stage.status == "running":
            stage.status, stage.finished_at = "done", utcnow()
            session.add(stage)
        _count_job(session, worker_name)
    after_stage(stage_id, redis)
    with session_scope() as session:
        stage = session.get(Stage, stage_id)
        assert stage is not None
        return {
            "stage_id": stage_id,
            "kind": stage.kind,
            "run_id": stage.run_id,
            "worker": worker_name,
        }


def fail_stage(stage_id: int, error: str, redis: Any) -> None:
    with session_scope() as session:
        stage = session.get(Stage, stage_id)
        assert stage is not None
        if stage.status not in FINISHED:
            stage.status, stage.finished_at, stage.error = "failed", utcnow(), error
            session.add(stage)
        skip_descendants(session, stage, redis, f"skipped: {stage.kind} {stage.variant} failed")
        _count_job(session, stage.worker or "")
    after_stage(stage_id, redis)


def after_stage(stage_id: int, redis: Any) -> None:
    """Bookkeeping once a stage has ended: release what waited for the best
    checkpoint, update the run's status, and diagnose the run's results."""
    with session_scope() as session:
        stage = session.get(Stage, stage_id)
        assert stage is not None
        if stage.kind == "eval" and stage.variant.startswith("ckpt-"):
            release_after_checkpoints(session, stage.run_id, redis)
        status = update_run_status(session, stage.run_id)
    if stage.kind != "eval" and status not in FINISHED:
        return
    try:
        with session_scope() as session:
            record_run_diagnostics(session, stage.run_id)
            run = session.get(Run, stage.run_id)
            if status in FINISHED and run is not None:
                record_config_diagnostics(session, run.fingerprint)
    except Exception as exc:  # a diagnostics bug must never fail a finished stage
        print(f"diagnostics for run {stage.run_id} failed: {exc!r}", file=sys.stderr)


def _set_worker_stage(session: Any, worker_name: str, stage_id: int | None) -> None:
    row = session.exec(select(WorkerRow).where(WorkerRow.name == worker_name)).first()
    if row is not None:
        row.current_stage_id, row.status = stage_id, "busy" if stage_id else "idle"
        session.add(row)


def _count_job(session: Any, worker_name: str) -> None:
    row = session.exec(select(WorkerRow).where(WorkerRow.name == worker_name)).first()
    if row is not None:
        row.jobs_done += 1
        row.current_stage_id, row.status = None, "idle"
        session.add(row)
