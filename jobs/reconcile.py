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

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import LockError, RedisError
from redis.lock import Lock
from sqlmodel import Session, col, select

from jobs import lifecycle, logs, replan, settings
from jobs.dag import HOLD
from jobs.db import (
    Experiment,
    Run,
    Stage,
    WorkerRow,
    as_utc,
    seconds_since,
    server_now,
    session_scope,
)
from jobs.queue import Carry, Ticket, carried, host_queue_names, push_again, push_all
from jobs.states import StageStatus, WorkerStatus

log = logging.getLogger("jobs.reconcile")  # its module name, also when run as __main__

LOCK_NAME = "farm:reconcile:lock"
LOCK_TTL_S = 30


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
            out.append(f"stages re-queued after a lost worker: {_ids(self.lost_stages)}")
        if self.replanned_runs:
            out.append(f"runs training again elsewhere: {_ids(self.replanned_runs)}")
        if self.released_stages:
            out.append(f"waiting stages queued: {_ids(self.released_stages)}")
        if self.repushed_stages:
            out.append(f"queued stages given their job back: {_ids(self.repushed_stages)}")
        return out or ["nothing to repair"]


def _ids(ids: list[int], shown: int = 20) -> str:
    """Ids for a log line: all of a few, the first of many and how many in all
    (a pass after Redis lost its data can repair 100,000 stages)."""
    if len(ids) <= shown:
        return str(ids)
    return f"{str(ids[:shown])[:-1]}, … ({len(ids)} in all)]"


def reconcile(redis: Redis, wait_for_lock: float = 0.0, notify: bool = False) -> Repairs | None:
    """One pass under the farm-wide lock; None when another pass holds it. With
    `notify`, the pass also records and sends notifications (`jobs.notify`): the
    periodic passes of workers' reconciler processes and `farm reconcile` do,
    a worker's start-up pass does not (a slow receiver must not delay it)."""
    # The lock expires on its own, so a worker cut off mid-pass holds it up
    # for half a minute at most; a long pass keeps it while it works.
    lock = redis.lock(
        LOCK_NAME, timeout=LOCK_TTL_S, blocking_timeout=wait_for_lock or None, thread_local=False
    )
    if not lock.acquire(blocking=wait_for_lock > 0):
        return None
    try:
        with _kept(lock):
            repairs = reconcile_once(redis)
            if notify:
                send_notifications()
            return repairs
    finally:
        try:
            lock.release()
        except LockError:  # expired during a very slow pass; nothing to undo
            pass


@contextmanager
def _kept(lock: Lock) -> Iterator[None]:
    """Renew the lock every third of its lifetime while a pass runs (a pass over
    100,000 stages outlasts it); renewals stop with the pass or its process."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LOCK_TTL_S / 3):
            try:
                lock.reacquire()
            except (LockError, RedisError):
                return

    keeper = threading.Thread(target=renew, name="reconcile-lock", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()


def reconcile_once(redis: Redis, recheck_after_s: float = 1.0) -> Repairs:
    """One pass, without the lock. `recheck_after_s`: how long jobs caught
    between a worker's pop and its start are given before they count as lost."""
    repairs = Repairs()
    tickets: list[Ticket] = []
    with session_scope() as session:
        repairs.lost_workers = mark_lost_workers(session)
        tickets += requeue_lost_stages(session, repairs)
        tickets += replan_stranded_runs(session, repairs)
        tickets += queue_released_stages(session, repairs)
    push_all(redis, tickets)
    just_pushed = {t.stage_id for t in tickets}
    repairs.repushed_stages = repush_missing_jobs(redis, just_pushed, recheck_after_s)
    for line in repairs.lines() if repairs else []:
        log.warning("reconcile: %s", line)
    return repairs


def send_notifications() -> None:
    """Record new events and send what is due; never a reason for a pass to fail."""
    from jobs.notify import notify_pass

    try:
        with session_scope() as session:
            notify_pass(session)
    except Exception as exc:  # the next pass tries again
        log.warning("notifications skipped: %s", settings.redact_text(str(exc)))


def mark_lost_workers(session: Session) -> list[str]:
    cutoff = lifecycle.lost_cutoff(server_now(session))
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
    cutoff = lifecycle.lost_cutoff(server_now(session))
    lost = session.exec(
        select(Stage).where(Stage.status == StageStatus.RUNNING, col(Stage.heartbeat_at) < cutoff)
    ).all()
    tickets = []
    for stage in lost:
        when = as_utc(stage.heartbeat_at)
        reason = (
            f"worker {stage.worker} stopped sending heartbeats at "
            f"{when:%H:%M:%S} UTC (lost after {settings.lost_after_s():g} s)"
        )
        tickets += lifecycle.lose(session, stage, reason)
        repairs.lost_stages.append(stage.id or 0)
    return tickets


@dataclass
class GoneHost:
    """A Mac none of whose workers has beaten its heartbeat for a while."""

    seconds: float
    workers: list[str]


def _gone_hosts(session: Session) -> dict[str, GoneHost]:
    """Host ids whose every worker is gone (lost or offline), the newest of them
    longer than the stranded limit ago. One live worker on a Mac, under any
    name, keeps that Mac's runs where they are: it resumes them."""
    limit, now = settings.stranded_after_s(), server_now(session)
    by_host: dict[str, list[WorkerRow]] = {}
    for row in session.exec(select(WorkerRow)).all():
        by_host.setdefault(row.host_id or row.name, []).append(row)
    gone = {}
    for host, rows in by_host.items():
        if any(r.status not in (WorkerStatus.LOST, WorkerStatus.OFFLINE) for r in rows):
            continue
        seconds = min(seconds_since(r.last_heartbeat, now) for r in rows)
        if seconds >= limit:
            gone[host] = GoneHost(seconds, sorted(r.name for r in rows))
    return gone


def replan_stranded_runs(session: Session, repairs: Repairs) -> list[Ticket]:
    """Queued stages pinned to a worker that has been gone too long."""
    if settings.shared_artifacts() is not None:
        return []  # pinned stages are re-routed to the tier queues by `route`
    gone = _gone_hosts(session)
    if not gone:
        return []
    pinned = session.exec(
        select(Stage).where(
            Stage.status == StageStatus.QUEUED,
            col(Stage.queue).in_([q for host in gone for q in host_queue_names(host)]),
        )
    ).all()
    tickets = []
    for run_id in sorted({s.run_id for s in pinned}):
        run = session.get(Run, run_id)
        assert run is not None
        host = gone.get(run.host or "", GoneHost(settings.stranded_after_s(), []))
        workers = f" (worker {', '.join(host.workers)})" if host.workers else ""
        reason = (
            f"host {run.host or '?'}{workers} holds this run's checkpoints and artifacts on "
            f"its own disk and has been gone for {_duration(host.seconds)}; "
            "training again from iteration 0 on "
            "another worker (set FARM_SHARED_ARTIFACTS to a folder all workers see to "
            "resume instead)"
        )
        tickets += replan.replan_run(session, run, reason)
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


def repush_missing_jobs(
    redis: Redis, just_pushed: set[int], recheck_after_s: float = 1.0
) -> list[int]:
    """Queued in the DB but not carried by Redis: push the job again.

    One look at Redis for all queued stages (`jobs.queue.carried`), however
    many there are; only the stages found missing are loaded in full."""
    with session_scope() as session:
        rows = session.exec(
            select(Stage.id, Stage.rq_job_id, Stage.queue).where(Stage.status == StageStatus.QUEUED)
        ).all()
    wanted = [
        Carry(stage_id, job_id, queue)
        for stage_id, job_id, queue in rows
        if stage_id is not None and stage_id not in just_pushed and job_id and queue
    ]
    unrouted = [s for s, j, q in rows if s is not None and s not in just_pushed and not (j and q)]
    try:
        found = carried(redis, wanted, recheck_after_s)
    except RedisError:
        return []
    missing = unrouted + [c.stage_id for c in wanted if c.job_id not in found]
    tickets = []
    with session_scope() as session:
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            # Read again: a stage claimed while Redis was looked at is not missing.
            stages = session.exec(
                select(Stage).where(col(Stage.id).in_(chunk), Stage.status == StageStatus.QUEUED)
            ).all()
            loaded = _load_runs(session, {s.run_id for s in stages})  # noqa: F841 (held)
            for stage in stages:
                if stage.queue is None or stage.rq_job_id is None:
                    lifecycle.queue_stage(session, stage)
                tickets.append(lifecycle.ticket_for(session, stage))
    return push_again(redis, tickets)


def _load_runs(session: Session, run_ids: set[int]) -> list[object]:
    """Runs and their experiments in two queries, not two per stage: routing and
    tickets then find them in the session (which holds them only while the
    caller holds the list returned)."""
    runs = session.exec(select(Run).where(col(Run.id).in_(run_ids))).all()
    experiment_ids = {r.experiment_id for r in runs}
    experiments = session.exec(select(Experiment).where(col(Experiment.id).in_(experiment_ids)))
    return [*runs, *experiments.all()]


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.reconcile`: one pass; with `--every S --parent PID`, a pass
    every S seconds for as long as process PID (the worker) lives. Run in a
    process of its own, so however long a pass takes, the worker's loop (and
    its heartbeat) never waits for it. 0 also when another pass holds the lock;
    1 when one pass found Redis or the database away."""
    parser = argparse.ArgumentParser(prog="python -m jobs.reconcile")
    parser.add_argument("--every", type=float, default=None, help="seconds between passes")
    parser.add_argument("--parent", type=int, default=None, help="end when this process does")
    args = parser.parse_args(argv)
    logs.configure(logging.WARNING)
    url = settings.redis_url()
    if url is None:
        log.warning("reconciler skipped: REDIS_URL is not set")
        return 1
    redis = Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    if args.every is None:
        return one_pass(redis)
    alive = (lambda: os.getppid() == args.parent) if args.parent else (lambda: True)
    while alive():
        one_pass(redis, limit_s=max(300.0, 10 * args.every))
        next_at = time.monotonic() + args.every
        while alive() and time.monotonic() < next_at:
            time.sleep(min(0.5, args.every))
    return 0


def one_pass(redis: Redis, limit_s: float | None = None) -> int:
    """A pass, stopped after `limit_s` (a hung database or Redis must not stall
    every later pass: the lock expires on its own); 1 if it could not run."""
    if limit_s:
        signal.signal(signal.SIGALRM, _overran)
        signal.alarm(int(limit_s))
    try:
        reconcile(redis, notify=True)
    except Exception as exc:  # the next pass tries again
        why = settings.redact_text(str(exc))
        log.warning("reconciler skipped: %s", why)
        return 1
    finally:
        if limit_s:
            signal.alarm(0)
    return 0


def _overran(signum: int, frame: object) -> None:
    raise TimeoutError("the pass ran past its time limit and was stopped")


if __name__ == "__main__":
    sys.exit(main())
