"""What the cancel and retry buttons (and `farm cancel`) do.

Cancel marks the unfinished stages of an experiment or run cancelled
(`jobs.lifecycle.cancel`) and stops their RQ jobs. Retry puts failed,
cancelled and skipped stages back to work: their rows go back to `waiting`
(results of the earlier attempts — metrics, eval rows, artifacts, summaries —
are deleted), and the first of them is queued the way `jobs.lifecycle` routes
it: a retried train stage to its memory tier, a later stage to the worker
holding the run's artifacts. Finishing stages queue their children as usual.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from sqlmodel import Session, select

from jobs import lifecycle, replan
from jobs.db import Run, Stage
from jobs.lifecycle import descendants, update_run_status
from jobs.queue import push_all, stop_job
from jobs.states import ACTIVE, RETRYABLE, StageStatus


class RetryError(ValueError):
    """The run or stage cannot be retried (and nothing was changed)."""


# --- cancel ------------------------------------------------------------------


def cancel_experiment(session: Session, experiment_id: int, redis: Redis) -> int:
    """Cancel every unfinished stage of an experiment; returns how many."""
    run_ids = select(Run.id).where(Run.experiment_id == experiment_id)
    stages = session.exec(select(Stage).where(Stage.run_id.in_(run_ids))).all()  # type: ignore[union-attr]
    return cancel_stages(session, stages, redis)


def cancel_run(session: Session, run_id: int, redis: Redis) -> int:
    stages = session.exec(select(Stage).where(Stage.run_id == run_id)).all()
    return cancel_stages(session, stages, redis)


def cancel_stages(session: Session, stages: Sequence[Stage], redis: Redis | None) -> int:
    """Cancel unfinished stages: marked first and committed, so a stage about to
    start sees it; then running jobs are stopped and waiting ones dropped."""
    count = sum(1 for s in stages if s.status in ACTIVE)
    job_ids = lifecycle.cancel(session, stages)
    session.commit()
    for job_id in job_ids:
        stop_job(redis, job_id)
    return count


# --- retry -------------------------------------------------------------------


def retry_run(session: Session, run_id: int, redis: Redis) -> list[int]:
    """Retry every failed, cancelled or skipped stage of a run; returns the stage ids
    put back to work."""
    stages = session.exec(select(Stage).where(Stage.run_id == run_id).order_by(Stage.id)).all()
    if not stages:
        raise RetryError(f"no run {run_id}")
    return _retry(session, list(stages), [s for s in stages if s.status in RETRYABLE], redis)


def retry_stage(session: Session, stage_id: int, redis: Redis) -> list[int]:
    """Retry one failed, cancelled or skipped stage and whatever depends on it."""
    stage = session.get(Stage, stage_id)
    if stage is None:
        raise RetryError(f"no stage {stage_id}")
    stages = session.exec(
        select(Stage).where(Stage.run_id == stage.run_id).order_by(Stage.id)
    ).all()
    return _retry(session, list(stages), [stage], redis)


def retry_experiment(session: Session, experiment_id: int, redis: Redis) -> list[int]:
    """Retry every run of an experiment that has something to retry."""
    runs = session.exec(select(Run).where(Run.experiment_id == experiment_id)).all()
    retried: list[int] = []
    for run in runs:
        stages = session.exec(select(Stage).where(Stage.run_id == run.id)).all()
        if not any(s.status in ACTIVE for s in stages) and any(
            s.status in RETRYABLE for s in stages
        ):
            retried += retry_run(session, run.id or 0, redis)
    if not retried:
        raise RetryError(f"experiment {experiment_id} has nothing to retry")
    return retried


def _retry(
    session: Session, stages: list[Stage], picked: Sequence[Stage], redis: Redis
) -> list[int]:
    wrong = [s for s in picked if s.status not in RETRYABLE]
    if wrong or not picked:
        what = ", ".join(f"{s.kind} {s.variant} is {s.status}" for s in wrong)
        raise RetryError(f"nothing to retry ({what or 'no failed, cancelled or skipped stage'})")
    by_id: dict[int | None, Stage] = {s.id: s for s in stages}
    reset: dict[int, Stage] = {}
    for stage in picked:
        root = _first_unfinished_ancestor(stage, by_id)
        for s in (root, *descendants(stages, root.id or -1)):
            reset[s.id or 0] = s
    busy = [s for s in reset.values() if s.status in (StageStatus.QUEUED, StageStatus.RUNNING)]
    if busy:
        raise RetryError(f"{busy[0].kind} {busy[0].variant} is {busy[0].status}; cancel it first")
    run = session.get(Run, stages[0].run_id)
    assert run is not None

    _forget_attempt(session, reset, redis)
    run.finished_at = None
    if any(s.kind == "train" for s in reset.values()):
        run.host = None  # any worker may train it again
    session.add(run)
    roots = [s for s in reset.values() if s.depends_on not in reset]
    tickets = [t for root in roots for t in lifecycle.queue_with_ranks(session, root)]
    update_run_status(session, run.id or 0)
    session.commit()
    push_all(redis, tickets)
    return sorted(reset)


def _first_unfinished_ancestor(stage: Stage, by_id: dict[int | None, Stage]) -> Stage:
    """The stage itself, or the highest ancestor that has not finished well: a stage
    skipped because its parent failed needs that parent to run again first."""
    root = stage
    parent = by_id.get(root.depends_on)
    while parent is not None and parent.status != "done":
        root, parent = parent, by_id.get(parent.depends_on)
    return root


def _forget_attempt(session: Session, reset: dict[int, Stage], redis: Redis) -> None:
    for job_id in replan.forget_results(session, list(reset.values())):
        stop_job(redis, job_id)
