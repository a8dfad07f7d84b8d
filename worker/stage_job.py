"""The RQ job function: claim a stage, run it in a child process, record the outcome.

This runs in RQ's work horse and never imports MLX. The MLX work happens in a
child (`python -m worker.child STAGE_ID ATTEMPT`) so that a crash or an
out-of-memory kill takes down only that child, a cancel can kill it (RQ stops
a job by killing the horse's process group, the child included), and Metal
memory goes back to the OS when the stage ends.

An eval stage's child is a session: when its stage ends, the horse claims the
run's next queued eval stage and hands it to the same child, which keeps the
model it has loaded (adapters swap in; `worker/weights.py`). So a run's base,
adapter, checkpoint and best evals load the base weights once, not once each.
Each stage is still claimed, beaten, finished or failed on its own; a stage
whose ticket reaches another worker while a session runs its run's weights is
left to that session (`jobs.eval_sessions.held_for_session`).

A rank of a gang (`train.workers: N`, `jobs.gang`) is claimed only when the
gang may form; the horse then takes its seat and waits for the other ranks
(`worker.gang`), and starts its child with `MLX_RANK` and `MLX_HOSTFILE`. A
rank that raised is retried, since a collective that lost its peer raises,
and one whose training stops moving while it beats is stopped as wedged.

While the child works, the horse beats the current stage's heartbeat in the
DB. A beat that finds the stage cancelled or taken over by a newer attempt
stops the child; so does losing the DB for longer than FARM_LOST_AFTER_S,
since by then another worker has been given the stage.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rq import get_current_job

from jobs import eval_sessions, gang, host_identity, lifecycle, logs, settings
from jobs.db import Run, Stage, forget_engines_after_fork, session_scope
from jobs.diagnostics import record_config_diagnostics, record_run_diagnostics
from jobs.plaintext import without_ansi
from jobs.queue import push_all
from jobs.states import FINISHED, StageStatus
from worker import gang as gang_worker
from worker.gang import GangRefused
from worker.ring import rank_environment

log = logging.getLogger(__name__)

LOG_TAIL_CHARS = 4000
# Exit codes the child uses to say why a stage stopped (see worker/child.py).
EXIT_ERROR = 1  # a Python error in the stage's own code
EXIT_STALE = 75  # its attempt was superseded: nothing to record
EXIT_DISK_FULL = 74  # out of disk space: failed, not retried here


@dataclass(frozen=True)
class ChildEnd:
    returncode: int | None  # None: the horse stopped the child itself
    why: str = ""  # "stale" | "cancelled" | "no database" | "stalled" when the horse stopped it
    child_alive: bool = False  # reported by a session child that can take another stage


def run_stage(stage_id: int) -> dict[str, Any]:
    forget_engines_after_fork()  # the horse was forked from the worker
    job = get_current_job()
    redis = job.connection if job else None
    worker = settings.worker_name() or (job.worker_name if job else "") or "?"
    with session_scope() as session:
        if eval_sessions.held_for_session(session, stage_id, worker):
            return {"stage_id": stage_id, "claimed": False, "held_for_session": True}
        waiting = gang_waits(session, stage_id)
        if waiting:
            # The ticket is dropped; the reconciler pushes it again later.
            return {"stage_id": stage_id, "claimed": False, "waiting": waiting}
        attempt = lifecycle.claim(session, stage_id, worker, host_identity.host_id())
        in_gang = attempt is not None and gang.is_gang_stage(session.get(Stage, stage_id))
    if attempt is None:
        # Cancelled, skipped, or claimed through another ticket: a stage never runs twice.
        return {"stage_id": stage_id, "claimed": False}

    env: dict[str, str] = {}
    if in_gang:
        try:
            start = gang_worker.form(stage_id, attempt, redis)
        except GangRefused as exc:
            with session_scope() as session:
                tickets = lifecycle.fail(session, stage_id, attempt, str(exc), retry=False)
            push_all(redis, tickets)
            return {"stage_id": stage_id, "attempt": attempt, "refused": str(exc)}
        if start is None:
            return {"stage_id": stage_id, "attempt": attempt, "released": True}
        env = rank_environment(start.rank, start.world, start.hostfile)

    budget_s = (job.timeout or 0) / 2 if job and job.timeout else float("inf")
    child = StageChild.start(stage_id, attempt, env)
    ran: list[int] = []
    current: tuple[int, int] | None = (stage_id, attempt)
    started = time.monotonic()
    try:
        while current is not None:
            end = child.wait_for(*current, stall_s=settings.gang_stall_s() if in_gang else None)
            with session_scope() as session:
                tickets = record_end(session, *current, end, stage_log(current[0]), in_gang)
            push_all(redis, tickets)
            after_stage(current[0])
            ran.append(current[0])
            current = None
            # A session goes on while its child lives, within half the job's time.
            if end.child_alive and time.monotonic() - started < budget_s:
                current = claim_next(current_stage=ran[-1], worker=worker)
                if current is not None:
                    child.assign(*current)
    except BaseException as exc:  # RQ's job timeout or a shutdown tears the horse down
        child.kill()
        if current is not None:
            # A stage that ran out of time would run out of time again: no retry.
            timed_out = type(exc).__name__ == "JobTimeoutException"
            reason = f"stopped: {exc!r}"
            if timed_out:
                reason = "stage timed out (resources.timeout_hours)"
            with session_scope() as session:
                tickets = lifecycle.fail(session, *current, reason, retry=not timed_out)
            push_all(redis, tickets)
        raise
    finally:
        child.close()
    return {"stage_id": stage_id, "attempt": attempt, "stages": ran}


def gang_waits(session: Any, stage_id: int) -> str | None:
    """Why a queued gang stage is not claimed now (shown on the run page and
    in `farm status`), or None."""
    stage = session.get(Stage, stage_id)
    if stage is None or stage.status != StageStatus.QUEUED or not gang.is_gang_stage(stage):
        return None
    why = gang.claim_refusal(session, stage)
    if why is not None:
        stage.error = why
        session.add(stage)
    return why


def claim_next(current_stage: int, worker: str) -> tuple[int, int] | None:
    """Claim the next eval stage for this session, or None when it should end."""
    with session_scope() as session:
        stage = session.get(Stage, current_stage)
        if stage is None or stage.kind != "eval" or not stage.queue:
            return None  # train, fuse and quantize run alone: their memory goes back
        run_id, queue, variant = stage.run_id, stage.queue, stage.variant
    while True:
        with session_scope() as session:
            next_id = eval_sessions.next_in_session(session, run_id, queue, variant)
            if next_id is None:
                return None
            attempt = lifecycle.claim(session, next_id, worker, host_identity.host_id())
        if attempt is not None:
            return next_id, attempt
        # Another worker claimed it between the look and the claim: look again.


def record_end(
    session: Any, stage_id: int, attempt: int, end: ChildEnd, log_path: Path, in_gang: bool = False
) -> list[Any]:
    """Turn how the child ended a stage into a lifecycle transition. A rank of a
    gang that raised is retried: a collective that lost its peer raises too,
    and the gang forms again (within `resources.retries`)."""
    if end.returncode == 0:
        return lifecycle.finish(session, stage_id, attempt)
    if end.why in ("stale", "cancelled") or end.returncode == EXIT_STALE:
        return []  # the DB already says what happened; this attempt has nothing to add
    if end.why == "no database":
        return []  # another worker has the stage by now; the reconciler saw to it
    if end.why == "stalled":
        stalled = (
            f"no training progress for {settings.gang_stall_s():g} s (FARM_GANG_STALL_S) while "
            "the gang's ranks beat: a collective is wedged; the gang forms again"
        )
        return lifecycle.fail(session, stage_id, attempt, stalled, retry=True)
    tail = log_tail(log_path)
    if end.returncode == EXIT_DISK_FULL:
        return lifecycle.fail(session, stage_id, attempt, disk_full_line(tail), retry=False)
    assert end.returncode is not None
    error = describe_exit(end.returncode) + "\n" + tail
    # Killed by a signal (out of memory, a kill): retry. A Python error: it
    # would fail the same way again, so fail for good.
    return lifecycle.fail(session, stage_id, attempt, error, retry=end.returncode < 0 or in_gang)


def gang_stalled(idle_s: float, trained_yet: bool, stall_s: float, form_s: float) -> bool:
    """A rank's training has not moved for too long: a collective is wedged.
    Before the attempt's first step its ranks may still be forming and loading
    the model (up to FARM_GANG_FORM_S): that is no wedge, and a slow start taken
    for one would be ended again at every try and never train."""
    return idle_s > (stall_s if trained_yet else stall_s + form_s)


def stage_log(stage_id: int) -> Path:
    return settings.farm_home() / "logs" / f"stage-{stage_id}.log"


class StageChild:
    """The child process running a stage (and, for evals, the stages after it).

    It reports each stage's end as a `STAGE CODE` line on a pipe; the horse
    waits for that line, beating the stage's heartbeat meanwhile."""

    def __init__(self, process: subprocess.Popen[bytes], reports: int) -> None:
        self.process = process
        self.reports = reports
        self.buffer = b""

    @classmethod
    def start(cls, stage_id: int, attempt: int, env: dict[str, str] | None = None) -> StageChild:
        log_path = stage_log(stage_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        read_end, write_end = os.pipe()
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker.child", str(stage_id), str(attempt)]
                + ["--report-fd", str(write_end)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE,
                env={**child_environment(), **(env or {})},
                pass_fds=(write_end,),
            )
        os.close(write_end)  # the child holds it: end of file on the pipe means it exited
        return cls(process, read_end)

    def assign(self, stage_id: int, attempt: int) -> None:
        assert self.process.stdin is not None
        line = json.dumps({"stage": stage_id, "attempt": attempt, "log": str(stage_log(stage_id))})
        stage_log(stage_id).parent.mkdir(parents=True, exist_ok=True)
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def wait_for(self, stage_id: int, attempt: int, stall_s: float | None = None) -> ChildEnd:
        """Wait for the child to end this stage, beating its heartbeat; stop the
        child when the beat says it no longer owns the stage or the DB has been
        unreachable too long, or (a rank of a gang, `stall_s`) when its progress
        has not moved for that long: a collective is wedged."""
        every = settings.heartbeat_every_s()
        last_beat = time.monotonic()
        progress, moved_at, trained_yet = -1, time.monotonic(), False
        while True:
            report = self._read_report(timeout=every)
            if report is not None:
                reported_stage, code = report
                if reported_stage == stage_id:
                    return ChildEnd(code, child_alive=True)
                continue  # not ours (cannot happen: one stage at a time); keep waiting
            if self.process.poll() is not None or self.reports < 0:
                return ChildEnd(self.process.wait())
            try:
                with session_scope() as session:
                    alive = lifecycle.heartbeat(session, stage_id, attempt)
                    stage = session.get(Stage, stage_id)
                    cancelled = stage is not None and stage.status == StageStatus.CANCELLED
                    now_at = (stage.progress or 0) if stage is not None else 0
                last_beat = time.monotonic()
                if now_at != progress:
                    trained_yet = progress != -1  # moved off the first reading
                    progress, moved_at = now_at, last_beat
            except Exception as exc:  # DB unreachable: keep working until we'd be lost
                with logs.about_stage(stage_id, attempt):
                    log.warning("heartbeat failed: %r", exc)
                if time.monotonic() - last_beat > settings.lost_after_s():
                    self.kill()
                    return ChildEnd(None, "no database")
                continue
            if not alive:
                self.kill()
                return ChildEnd(None, "cancelled" if cancelled else "stale")
            if stall_s is not None and gang_stalled(
                last_beat - moved_at, trained_yet, stall_s, settings.gang_form_s()
            ):
                self.kill()
                return ChildEnd(None, "stalled")

    def _read_report(self, timeout: float) -> tuple[int, int] | None:
        """The next `STAGE CODE` line, or None after `timeout` or at end of file."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if self.reports < 0 or remaining <= 0:
                return None
            ready, _, _ = select.select([self.reports], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self.reports, 4096)
            if not chunk:  # the child exited
                os.close(self.reports)
                self.reports = -1
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        stage, code = line.split()
        return int(stage), int(code)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def close(self) -> None:
        """No more stages: let the child finish and exit."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.reports >= 0:
            os.close(self.reports)
            self.reports = -1


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
    return without_ansi(data.decode("utf-8", errors="replace"))


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
        log.warning("diagnostics for run %s failed: %r", run_id, exc)
