"""The stage lifecycle: every change of a stage's state goes through here.

```
waiting ──► queued ──► running ──► done
   ▲           ▲          │  └────► failed      (its own code raised; not retried)
   │           └──────────┤                     (died or lost: a new attempt, up to
   │                      │                      `resources.retries` times)
   └── replan ◄───────────┘  (its worker's disk is gone: the run trains again)
any unfinished ──► cancelled | skipped
```

Each claim starts a new **attempt**: `Stage.attempt` counts them and a
`StageAttempt` row records who ran it and how it ended. Every write a stage
makes carries its attempt and goes through `guard`, which refuses it once a
newer attempt owns the stage, so a worker that was cut off and comes back can
never overwrite the results of the attempt that replaced it.

Functions here change rows in the caller's session and return the `Ticket`s
to push to Redis; callers push them after committing (`jobs.queue.push_all`),
so Redis never carries work the DB does not know about.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from jobs import gang, settings
from jobs.dag import HOLD, is_checkpoint_variant
from jobs.db import (
    Experiment,
    Run,
    Stage,
    StageAttempt,
    WorkerRow,
    server_now,
    utcnow,
)
from jobs.experiment_spec import Resources
from jobs.queue import (
    DOWNSTREAM_TIMEOUT_S,
    Ticket,
    gang_queue_name,
    pinned_queue_name,
    stage_job_id,
    tier_queue_name,
)
from jobs.states import ACTIVE, FINISHED, AttemptOutcome, StageStatus, WorkerStatus


class StaleAttempt(RuntimeError):
    """This attempt no longer owns its stage: a newer attempt took over, or the
    stage was cancelled. Its writes are refused."""


# --- what a run's spec says ------------------------------------------------------


def _spec(session: Session, run: Run) -> dict[str, Any]:
    experiment = session.get(Experiment, run.experiment_id)
    return dict(experiment.spec) if experiment else {}


def _resources(session: Session, run: Run) -> Resources:
    """The run's resources (memory tier, timeout, retries), from the stored spec,
    their one source; what it leaves out takes the spec model's default."""
    return Resources.model_validate(_spec(session, run).get("resources") or {})


def _timeout_s(stage: Stage, resources: Resources) -> int:
    training = stage.kind in ("train", "rank")
    return int(resources.timeout_hours * 3600) if training else DOWNSTREAM_TIMEOUT_S


# --- queueing ----------------------------------------------------------------------


def route(session: Session, stage: Stage) -> str:
    """The queue for a stage's next attempt.

    A first train attempt goes to its memory tier. Everything that needs the
    run's artifacts (later stages, and a train stage resuming from checkpoints
    on its worker's own disk) goes to the worker holding them, unless a shared
    artifacts folder makes them visible to every worker."""
    run = session.get(Run, stage.run_id)
    assert run is not None
    memory = _resources(session, run).min_memory_gb
    host = run.host or _trainer(session, run)
    if gang.is_gang_stage(stage):
        # Rank 0 resuming from checkpoints on its Mac's own disk goes to that
        # Mac; every other rank, and any first attempt, to the gang queue.
        on_own_disk = bool(host) and settings.shared_artifacts() is None
        if stage.kind == "train" and stage.attempt and on_own_disk:
            return pinned_queue_name(host, memory)
        return gang_queue_name(memory)
    if stage.kind == "train" and (stage.attempt == 0 or not host):
        return tier_queue_name(memory)
    return pinned_queue_name(host, memory)


def first_queue(session: Session, train: Stage) -> str:
    """Where a train stage starts over on any worker (re-planned, retried by hand)."""
    run = session.get(Run, train.run_id)
    assert run is not None
    memory = _resources(session, run).min_memory_gb
    return gang_queue_name(memory) if gang.is_gang_stage(train) else tier_queue_name(memory)


def _trainer(session: Session, run: Run) -> str | None:
    """The host id of the Mac training the run right now, if any."""
    train = session.exec(select(Stage).where(Stage.run_id == run.id, Stage.kind == "train")).first()
    if train is None or not train.worker:
        return None
    row = session.exec(select(WorkerRow).where(WorkerRow.name == train.worker)).first()
    # A worker registered before host ids has its name as its host id (0014).
    return (row.host_id if row is not None else None) or train.worker


def queue_stage(session: Session, stage: Stage, queue_name: str | None = None) -> Ticket:
    """Mark a stage queued for its next attempt and return the job to push."""
    run = session.get(Run, stage.run_id)
    assert run is not None
    queue_name = queue_name or route(session, stage)
    stage.status = StageStatus.QUEUED
    stage.queue = queue_name
    stage.rq_job_id = stage_job_id(stage.id or 0, stage.attempt + 1)
    stage.enqueued_at = server_now(session)
    stage.worker, stage.heartbeat_at = None, None
    session.add(stage)
    return ticket_for(session, stage)


def ticket_for(session: Session, stage: Stage) -> Ticket:
    """The RQ job that carries an already-queued stage (the reconciler re-pushes it)."""
    run = session.get(Run, stage.run_id)
    assert run is not None and stage.queue and stage.rq_job_id
    return Ticket(
        stage.id or 0, stage.queue, stage.rq_job_id, _timeout_s(stage, _resources(session, run))
    )


def queue_train_stages(session: Session, runs: Iterable[Run]) -> list[Ticket]:
    """Submission: every run's train stage goes to its memory tier (a gang's
    train and ranks to the gang queue of that tier)."""
    tickets = []
    for run in runs:
        train = session.exec(
            select(Stage).where(Stage.run_id == run.id, Stage.kind == "train")
        ).one()
        tickets += queue_with_ranks(session, train)
    return tickets


def queue_with_ranks(session: Session, stage: Stage, queue_name: str | None = None) -> list[Ticket]:
    """Queue a stage; a gang's train stage with all its ranks, which form again."""
    ticket = queue_stage(session, stage, queue_name)
    if stage.kind != "train" or not gang.is_gang_stage(stage):
        return [ticket]
    return [ticket, *_requeue_gang(session, stage, "rank 0 starts again")]


def _requeue_gang(session: Session, stage: Stage, reason: str) -> list[Ticket]:
    """Every other rank of `stage`'s gang queued again with it: a running one's
    attempt ends as released (not counted as a retry), and a finished one runs
    again, since a gang forms only with all its ranks."""
    tickets = []
    for mate in gang.gang_of(session, stage.run_id):
        if mate.id == stage.id or mate.status == StageStatus.QUEUED:
            continue
        if mate.status == StageStatus.RUNNING:
            end_attempt(session, mate.id or 0, mate.attempt, AttemptOutcome.RELEASED, reason)
            if mate.worker:
                set_worker_stage(session, mate.worker, None)
        tickets.append(queue_stage(session, mate))
    return tickets


def queue_runnable_children(session: Session, parent: Stage) -> list[Ticket]:
    """Queue the waiting children of a finished stage (held ones wait for the
    best checkpoint: `release_after_checkpoints`)."""
    children = session.exec(
        select(Stage).where(
            Stage.depends_on == parent.id,
            Stage.status == StageStatus.WAITING,
            Stage.kind != "rank",  # ranks run beside train, not after it
        )
    ).all()
    return [queue_stage(session, c) for c in children if not c.params.get(HOLD)]


def release_after_checkpoints(session: Session, run_id: int) -> list[Ticket]:
    """Once every checkpoint eval of a run has finished, point the held stages
    at the checkpoint with the best adherence and queue them; with no scored
    checkpoint they are skipped."""
    from jobs.checkpoints import checkpoint_evals_finished, select_best_checkpoint

    run_stages = session.exec(select(Stage).where(Stage.run_id == run_id)).all()
    held = [s for s in run_stages if s.params.get(HOLD) and s.status == StageStatus.WAITING]
    if not held or not checkpoint_evals_finished(session, run_id):
        return []
    run = session.get(Run, run_id)
    assert run is not None
    if select_best_checkpoint(session, run_id, _spec(session, run)) is None:
        for stage in held:
            skip(session, stage, "skipped: no checkpoint was scored")
        return []
    by_id = {s.id: s for s in run_stages}
    return [
        queue_stage(session, s)
        for s in held
        if s.depends_on is None or by_id[s.depends_on].status == StageStatus.DONE
    ]


# --- claim, heartbeat, guard ----------------------------------------------------------


def claim(session: Session, stage_id: int, worker: str, host: str = "") -> int | None:
    """Start a new attempt of a queued stage on `worker`, atomically: of two
    workers holding a ticket for the same stage, exactly one wins. Returns the
    attempt number, or None when the stage is not there to be claimed."""
    now = server_now(session)
    claimed = session.exec(  # type: ignore[call-overload]
        update(Stage)
        .where(col(Stage.id) == stage_id, col(Stage.status) == StageStatus.QUEUED)
        .values(
            status=StageStatus.RUNNING,
            attempt=Stage.attempt + 1,
            worker=worker,
            started_at=now,
            heartbeat_at=now,
            finished_at=None,
            error=None,
        )
    )
    if claimed.rowcount != 1:
        return None
    stage = session.get(Stage, stage_id)
    assert stage is not None
    session.refresh(stage)
    session.add(StageAttempt(stage_id=stage_id, attempt=stage.attempt, worker=worker, host=host))
    if stage.kind == "train":
        run = session.get(Run, stage.run_id)
        assert run is not None
        run.host = host or worker  # the checkpoints and the adapter will be on this Mac's disk
        session.add(run)
    update_run_status(session, stage.run_id)
    set_worker_stage(session, worker, stage_id)
    return stage.attempt


def guard(session: Session, stage_id: int, attempt: int) -> None:
    """Refuse a write from an attempt that no longer owns its stage.

    An UPDATE rather than a read: it takes the row's write lock for the rest
    of the caller's transaction, so a reconciler re-queueing the stage waits
    for this write or makes it fail; the two never interleave."""
    owned = session.exec(  # type: ignore[call-overload]
        update(Stage)
        .where(
            col(Stage.id) == stage_id,
            col(Stage.attempt) == attempt,
            col(Stage.status) == StageStatus.RUNNING,
        )
        .values(heartbeat_at=server_now(session))
    )
    if owned.rowcount != 1:
        raise StaleAttempt(f"stage {stage_id} attempt {attempt} no longer owns the stage")


def heartbeat(session: Session, stage_id: int, attempt: int) -> bool:
    """The running attempt is alive; False when it should stop (superseded or cancelled)."""
    try:
        guard(session, stage_id, attempt)
    except StaleAttempt:
        return False
    return True


def set_worker_stage(session: Session, worker: str, stage_id: int | None) -> None:
    row = session.exec(select(WorkerRow).where(WorkerRow.name == worker)).first()
    if row is not None:
        row.current_stage_id = stage_id
        row.status = WorkerStatus.BUSY if stage_id else WorkerStatus.IDLE
        row.last_heartbeat = server_now(session)
        session.add(row)


def end_attempt(
    session: Session, stage_id: int, attempt: int, outcome: AttemptOutcome, reason: str | None
) -> None:
    row = session.exec(
        select(StageAttempt).where(
            StageAttempt.stage_id == stage_id, StageAttempt.attempt == attempt
        )
    ).first()
    if row is not None and row.outcome == AttemptOutcome.RUNNING:
        row.outcome, row.reason, row.ended_at = outcome, reason, server_now(session)
        session.add(row)


def record_resume(session: Session, stage_id: int, attempt: int, iteration: int) -> None:
    """A train attempt continues from a checkpoint (shown as "resumed from iteration N")."""
    guard(session, stage_id, attempt)
    stage = session.get(Stage, stage_id)
    assert stage is not None
    stage.resumed_from = iteration
    session.add(stage)
    row = session.exec(
        select(StageAttempt).where(
            StageAttempt.stage_id == stage_id, StageAttempt.attempt == attempt
        )
    ).first()
    if row is not None:
        row.resumed_from = iteration
        session.add(row)


# --- ending an attempt -------------------------------------------------------------


def _owned(session: Session, stage_id: int, attempt: int) -> Stage | None:
    stage = session.get(Stage, stage_id)
    if stage is None:
        return None
    session.refresh(stage)
    if stage.attempt != attempt or stage.status != StageStatus.RUNNING:
        end_attempt(session, stage_id, attempt, AttemptOutcome.STALE, "a newer attempt took over")
        return None
    return stage


def finish(session: Session, stage_id: int, attempt: int) -> list[Ticket]:
    """The attempt succeeded: the stage is done and its children are queued."""
    stage = _owned(session, stage_id, attempt)
    if stage is None:
        return []
    stage.status, stage.finished_at = StageStatus.DONE, server_now(session)
    session.add(stage)
    end_attempt(session, stage_id, attempt, AttemptOutcome.DONE, None)
    _count_job(session, stage.worker)
    tickets = queue_runnable_children(session, stage)
    if stage.kind == "eval" and is_checkpoint_variant(stage.variant):
        tickets += release_after_checkpoints(session, stage.run_id)
    update_run_status(session, stage.run_id)
    return tickets


def fail(
    session: Session, stage_id: int, attempt: int, reason: str, *, retry: bool
) -> list[Ticket]:
    """The attempt ended badly. A stage that died (signal, out of memory, lost
    Redis) gets a new attempt while retries last; one whose own code raised
    fails for good, and everything below it is skipped."""
    stage = _owned(session, stage_id, attempt)
    if stage is None:
        return []
    _count_job(session, stage.worker)
    outcome = AttemptOutcome.DIED if retry else AttemptOutcome.FAILED
    return _end_running(session, stage, outcome, reason)


def lose(session: Session, stage: Stage, reason: str) -> list[Ticket]:
    """The stage's worker stopped beating: a new attempt, elsewhere if need be.
    The worker's row keeps its `lost` status; it only stops naming the stage."""
    session.refresh(stage)
    if stage.status != StageStatus.RUNNING:
        return []  # a gang mate's loss earlier in this pass queued it already
    row = session.exec(select(WorkerRow).where(WorkerRow.name == (stage.worker or ""))).first()
    if row is not None and row.current_stage_id == stage.id:
        row.current_stage_id = None
        session.add(row)
    return _end_running(session, stage, AttemptOutcome.LOST, reason)


def _end_running(
    session: Session, stage: Stage, outcome: AttemptOutcome, reason: str
) -> list[Ticket]:
    end_attempt(session, stage.id or 0, stage.attempt, outcome, reason)
    if stage.kind == "rank" and gang.train_finished(session, stage.run_id):
        # Rank 0 is done (or failed): nothing is left for this rank to join.
        skip(session, stage, f"skipped: rank 0 ended ({reason})")
        update_run_status(session, stage.run_id)
        return []
    run = session.get(Run, stage.run_id)
    assert run is not None
    allowed = _resources(session, run).retries
    used = _retries_used(session, stage.id or 0)
    if outcome != AttemptOutcome.FAILED and used <= allowed:
        tickets = [queue_stage(session, stage)]
        stage.error = f"attempt {stage.attempt} {outcome.value}: {reason}; retrying"
        session.add(stage)
        if gang.is_gang_stage(stage):
            # Any rank ending ends the gang's attempt: all form again together.
            why = f"rank {gang.rank_of(stage)} {outcome.value}: {reason.splitlines()[0]}"
            tickets += _requeue_gang(session, stage, why)
        update_run_status(session, stage.run_id)
        return tickets
    if stage.kind == "rank":
        # A rank that fails for good fails the gang: rank 0 with it, which
        # skips every stage below it, the other ranks included.
        train = gang.gang_of(session, stage.run_id)[0]
        end_attempt(session, train.id or 0, train.attempt, AttemptOutcome.FAILED, reason)
        train.status, train.finished_at = StageStatus.FAILED, server_now(session)
        train.error = f"rank {gang.rank_of(stage)} failed: {reason}"
        session.add(train)
        skip_descendants(session, train, f"skipped: rank {gang.rank_of(stage)} failed")
    if outcome != AttemptOutcome.FAILED:
        reason = f"{reason} (gave up after {used} retries)"
    stage.status, stage.finished_at, stage.error = StageStatus.FAILED, server_now(session), reason
    session.add(stage)
    skip_descendants(session, stage, f"skipped: {stage.kind} {stage.variant} failed")
    tickets = []
    if stage.kind == "eval" and is_checkpoint_variant(stage.variant):
        # The other checkpoints still choose `best`; this one just has no score.
        tickets = release_after_checkpoints(session, stage.run_id)
    update_run_status(session, stage.run_id)
    return tickets


def _retries_used(session: Session, stage_id: int) -> int:
    """Attempts that died or were lost; a re-planned run starts its count over."""
    rows = session.exec(
        select(StageAttempt).where(StageAttempt.stage_id == stage_id).order_by(StageAttempt.attempt)
    ).all()
    used = 0
    for row in rows:
        if row.outcome == AttemptOutcome.REPLANNED:
            used = 0
        elif row.outcome in (AttemptOutcome.DIED, AttemptOutcome.LOST):
            used += 1
    return used


def _count_job(session: Session, worker: str | None) -> None:
    row = session.exec(select(WorkerRow).where(WorkerRow.name == (worker or ""))).first()
    if row is not None:
        row.jobs_done += 1
        row.current_stage_id, row.status = None, WorkerStatus.IDLE
        session.add(row)


def skip(session: Session, stage: Stage, reason: str) -> list[str]:
    """Skip a stage and everything below it; returns RQ job ids to drop."""
    jobs = []
    if stage.status not in FINISHED:
        stage.status, stage.error = StageStatus.SKIPPED, reason
        stage.finished_at = server_now(session)
        session.add(stage)
        if stage.rq_job_id:
            jobs.append(stage.rq_job_id)
    return jobs + skip_descendants(session, stage, reason)


def skip_descendants(session: Session, stage: Stage, reason: str) -> list[str]:
    run_stages = session.exec(select(Stage).where(Stage.run_id == stage.run_id)).all()
    jobs: list[str] = []
    now = server_now(session)
    for child in descendants(run_stages, stage.id or -1):
        if child.status in FINISHED:
            continue
        child.status, child.error, child.finished_at = StageStatus.SKIPPED, reason, now
        session.add(child)
        if child.rq_job_id:
            jobs.append(child.rq_job_id)
    return jobs


def descendants(stages: Iterable[Stage], stage_id: int) -> list[Stage]:
    by_parent: dict[int | None, list[Stage]] = {}
    for stage in stages:
        by_parent.setdefault(stage.depends_on, []).append(stage)
    found: list[Stage] = []
    frontier = list(by_parent.get(stage_id, []))
    while frontier:
        stage = frontier.pop()
        found.append(stage)
        frontier.extend(by_parent.get(stage.id, []))
    return found


def cancel(
    session: Session, stages: Sequence[Stage], reason: str = "cancelled by user"
) -> list[str]:
    """Cancel unfinished stages; returns the RQ job ids to stop. Their workers
    show idle at once: the stop command kills the stage within seconds, and a
    running attempt also sees the cancel at its next heartbeat."""
    jobs: list[str] = []
    now = server_now(session)
    for stage in stages:
        if stage.status in FINISHED:
            continue
        if stage.status == StageStatus.RUNNING:
            end_attempt(session, stage.id or 0, stage.attempt, AttemptOutcome.CANCELLED, reason)
            if stage.worker:
                set_worker_stage(session, stage.worker, None)
        stage.status, stage.finished_at, stage.error = StageStatus.CANCELLED, now, reason
        session.add(stage)
        if stage.rq_job_id:
            jobs.append(stage.rq_job_id)
    for run_id in {s.run_id for s in stages}:
        update_run_status(session, run_id)
    return jobs


def release(session: Session, stage_id: int, attempt: int, reason: str) -> list[Ticket]:
    """A claimed rank whose gang did not form in time lets its worker go: the
    attempt ends as released (not a retry) and the rank is queued again."""
    stage = _owned(session, stage_id, attempt)
    if stage is None:
        return []
    end_attempt(session, stage_id, attempt, AttemptOutcome.RELEASED, reason)
    if stage.worker:
        set_worker_stage(session, stage.worker, None)
    ticket = queue_stage(session, stage)
    stage.error = reason
    session.add(stage)
    update_run_status(session, stage.run_id)
    return [ticket]


# --- runs ------------------------------------------------------------------------------


def update_run_status(session: Session, run_id: int) -> str:
    """A run is running while any stage is, failed if any failed, else done.
    Export stages ship a finished run's files and never change what it is."""
    run = session.get(Run, run_id)
    assert run is not None
    rows = select(Stage.status).where(Stage.run_id == run_id, Stage.kind != "export")
    statuses = list(session.exec(rows).all())
    if any(s in ACTIVE for s in statuses):
        started = any(s not in (StageStatus.WAITING, StageStatus.QUEUED) for s in statuses)
        run.status = "running" if started else "queued"
        run.finished_at = None
    elif StageStatus.CANCELLED in statuses:
        run.status = "cancelled"
    elif StageStatus.FAILED in statuses:
        run.status = "failed"
    else:
        run.status = "done"
    if run.status in FINISHED and run.finished_at is None:
        run.finished_at = server_now(session)
    session.add(run)
    return run.status


def lost_cutoff(now: datetime | None = None) -> datetime:
    return (now or utcnow()) - timedelta(seconds=settings.lost_after_s())
