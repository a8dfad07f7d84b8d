"""The reconciler: make Redis (work in flight) agree with the DB (the truth).

Runs in every worker at start-up and about every 30 s, in `farm up`, and as
`farm reconcile`; a Redis lock lets only one run at a time. Each pass:

1. marks workers that stopped beating as lost;
2. gives a running stage whose worker stopped beating a new attempt (`lose`);
3. re-plans runs whose artifacts sit on a worker gone longer than
   FARM_STRANDED_AFTER_S (nobody else can see them);
4. queues waiting stages whose parent is done (the parent's worker died
   between finishing and queueing them);
5. pushes an RQ job for every queued stage Redis does not carry (Redis
   restarted without persistence, was flushed, or a push failed).

Idempotent: a second pass right after the first changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import LockError, RedisError
from sqlmodel import Session, col, select

from jobs import lifecycle, settings
from jobs.dag import HOLD
from jobs.db import Run, Stage, WorkerRow, session_scope, utcnow
from jobs.queue import Ticket, job_is_waiting_in, push_all, worker_queue_name
from jobs.states import StageStatus, WorkerStatus

log = logging.getLogger(__name__)

LOCK_NAME = "farm:reconcile:lock"


@dataclass
class Repairs:
    """What one pass changed; empty when DB and Redis already agreed."""

    lost_workers: list[str] = field(default_factory=list)
    lost_stages: list[int] = field(default_factory=list)
    replanned_runs: list[int] = field(default_factory=list)
    released_stages: list[int] = field(default_factory=list)
    repushed_stages: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(vars(self).values())

    def lines(self) -> list[str]:
        out = []
        if self.lost_workers:
            out.append(f"workers lost: {', '.join(self.lost_workers)}")
        if self.lost_stages:
            out.append(f"stages re-queued after a lost worker: {self.lost_stages}")
        if self.replanned_runs:
            out.append(f"runs training again elsewhere: {self.replanned_runs}")
        if self.released_stages:
            out.append(f"waiting stages queued: {self.released_stages}")
        if self.repushed_stages:
            out.append(f"queued stages given their job back: {self.repushed_stages}")
        return out or ["nothing to repair"]


def reconcile(redis: Redis, wait_for_lock: float = 0.0) -> Repairs | None:
    """One pass under the farm-wide lock; None when another pass holds it."""
    # The lock expires on its own, so a worker cut off mid-pass holds it up
    # for half a minute at most.
    lock = redis.lock(LOCK_NAME, timeout=30, blocking_timeout=wait_for_lock or None)
    if not lock.acquire(blocking=wait_for_lock > 0):
        return None
    try:
        return reconcile_once(redis)
    finally:
        try:
            lock.release()
        except LockError:  # expired during a very slow pass; nothing to undo
            pass


def reconcile_once(redis: Redis) -> Repairs:
    repairs = Repairs()
    tickets: list[Ticket] = []
    with session_scope() as session:
        repairs.lost_workers = mark_lost_workers(session)
        tickets += requeue_lost_stages(session, repairs)
        tickets += replan_stranded_runs(session, repairs)
        tickets += queue_released_stages(session, repairs)
    push_all(redis, tickets)
    repairs.repushed_stages = repush_missing_jobs(redis, {t.stage_id for t in tickets})
    for line in repairs.lines() if repairs else []:
        log.warning("reconcile: %s", line)
    return repairs


def mark_lost_workers(session: Session) -> list[str]:
    cutoff = lifecycle.lost_cutoff()
    rows = session.exec(
        select(WorkerRow).where(
            col(WorkerRow.status).in_([WorkerStatus.IDLE, WorkerStatus.BUSY]),
            col(WorkerRow.last_heartbeat) < cutoff,
        )
    ).all()
    for row in rows:
        row.status = WorkerStatus.LOST
        session.add(row)
    return [row.name for row in rows]


def requeue_lost_stages(session: Session, repairs: Repairs) -> list[Ticket]:
    cutoff = lifecycle.lost_cutoff()
    lost = session.exec(
        select(Stage).where(Stage.status == StageStatus.RUNNING, col(Stage.heartbeat_at) < cutoff)
    ).all()
    tickets = []
    for stage in lost:
        when = lifecycle.as_utc(stage.heartbeat_at)
        reason = (
            f"worker {stage.worker} stopped sending heartbeats at "
            f"{when:%H:%M:%S} UTC (lost after {settings.lost_after_s():g} s)"
        )
        tickets += lifecycle.lose(session, stage, reason)
        repairs.lost_stages.append(stage.id or 0)
    return tickets


def _gone_workers(session: Session) -> dict[str, float]:
    """Workers gone (lost or offline) longer than the stranded limit → seconds gone."""
    limit = settings.stranded_after_s()
    rows = session.exec(
        select(WorkerRow).where(
            col(WorkerRow.status).in_([WorkerStatus.LOST, WorkerStatus.OFFLINE])
        )
    ).all()
    now = utcnow()
    gone = {r.name: lifecycle.seconds_since(r.last_heartbeat, now) for r in rows}
    return {name: s for name, s in gone.items() if s >= limit}


def replan_stranded_runs(session: Session, repairs: Repairs) -> list[Ticket]:
    """Queued stages pinned to a worker that has been gone too long."""
    if settings.shared_artifacts() is not None:
        return []  # pinned stages are re-routed to the tier queues by `route`
    gone = _gone_workers(session)
    if not gone:
        return []
    pinned = session.exec(
        select(Stage).where(
            Stage.status == StageStatus.QUEUED,
            col(Stage.queue).in_([worker_queue_name(name) for name in gone]),
        )
    ).all()
    tickets = []
    for run_id in sorted({s.run_id for s in pinned}):
        run = session.get(Run, run_id)
        assert run is not None
        host = run.host or "?"
        reason = (
            f"worker {host} holds this run's checkpoints and artifacts on its own disk and "
            f"has been gone for {_duration(gone.get(host, settings.stranded_after_s()))}; "
            "training again from iteration 0 on "
            "another worker (set FARM_SHARED_ARTIFACTS to a folder all workers see to "
            "resume instead)"
        )
        tickets += lifecycle.replan_run(session, run, reason)
        repairs.replanned_runs.append(run_id)
    return tickets


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def queue_released_stages(session: Session, repairs: Repairs) -> list[Ticket]:
    waiting = session.exec(
        select(Stage).where(Stage.status == StageStatus.WAITING, col(Stage.depends_on).is_not(None))
    ).all()
    tickets = []
    for stage in waiting:
        if stage.params.get(HOLD):
            before = len(tickets)
            tickets += lifecycle.release_after_checkpoints(session, stage.run_id)
            repairs.released_stages += [t.stage_id for t in tickets[before:]]
            continue
        parent = session.get(Stage, stage.depends_on)
        if parent is not None and parent.status == StageStatus.DONE:
            tickets.append(lifecycle.queue_stage(session, stage))
            repairs.released_stages.append(stage.id or 0)
    return tickets


def repush_missing_jobs(redis: Redis, just_pushed: set[int]) -> list[int]:
    """Queued in the DB but not carried by Redis: push the job again."""
    with session_scope() as session:
        queued = session.exec(select(Stage).where(Stage.status == StageStatus.QUEUED)).all()
        missing = []
        for stage in queued:
            if stage.id in just_pushed:
                continue
            try:
                carried = job_is_waiting_in(redis, stage.rq_job_id or "", stage.queue or "")
            except RedisError:
                return []
            if not carried:
                if stage.queue is None or stage.rq_job_id is None:
                    lifecycle.queue_stage(session, stage)
                missing.append(lifecycle.ticket_for(session, stage))
    return push_all(redis, missing)
