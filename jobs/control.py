"""What the cancel and retry buttons do.

Cancel hands the unfinished stages of an experiment or run to
`jobs.queue.cancel_stages`. Retry puts failed, cancelled and skipped stages
back to work: their rows go back to `queued` (results of the earlier attempt —
metrics, eval rows, artifacts, summaries — are deleted), and their RQ jobs are
enqueued the way `jobs.queue` does it. A retried train stage goes back on its
memory-tier queue, and its success callback enqueues everything below it
again; a retried later stage needs the train artifacts, so it is pinned to the
queue of the worker that trained the run (or the tier queue when
FARM_SHARED_ARTIFACTS is set), with RQ dependencies on retried parents.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy import delete
from sqlmodel import Session, select

from jobs.db import Artifact, EvalResult, Experiment, Metric, Run, Stage
from jobs.queue import (
    cancel_stages,
    descendants,
    enqueue_run,
    enqueue_subtrees,
    pinned_queue_name,
    stage_job_id,
    update_run_status,
)

RETRYABLE = frozenset({"failed", "cancelled", "skipped"})
ACTIVE = frozenset({"waiting", "queued", "running"})
# Per-attempt results a retried stage starts over without.
_SUMMARY_FIELDS = (
    "worker", "queue", "rq_job_id", "enqueued_at", "started_at", "finished_at", "error",
    "progress", "total", "adherence", "n_prompts", "label_counts", "hit_max_share", "latency_s",
    "tokens_per_sec", "peak_memory_gb", "size_bytes", "val_loss",
)  # fmt: skip


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
    busy = [s for s in reset.values() if s.status in ("queued", "running")]
    if busy:
        raise RetryError(f"{busy[0].kind} {busy[0].variant} is {busy[0].status}; cancel it first")
    run = session.get(Run, stages[0].run_id)
    assert run is not None
    train = next(s for s in stages if s.kind == "train")

    _forget_attempt(session, reset, redis)
    run.finished_at = None
    session.add(run)
    if train.id in reset:
        experiment = session.get(Experiment, run.experiment_id)
        assert experiment is not None
        enqueue_run(session, run, redis, experiment.spec)  # train; its callback does the rest
    else:  # later stages need the adapter: pinned to the worker that trained it
        roots = [s for s in reset.values() if s.depends_on not in reset]
        name = pinned_queue_name(
            run.host or train.worker or "", float(train.params.get("min_memory_gb", 0))
        )
        enqueue_subtrees(session, stages, roots, name, redis)
    update_run_status(session, run.id or 0)
    session.commit()
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
    ids = list(reset)
    for table in (EvalResult, Metric, Artifact):
        session.execute(delete(table).where(table.stage_id.in_(ids)))  # type: ignore[attr-defined]
    for stage in reset.values():
        for name in _SUMMARY_FIELDS:
            setattr(stage, name, None)
        stage.status = "waiting"
        session.add(stage)
        try:
            Job.fetch(
                stage_job_id(stage.id or 0), connection=redis, serializer=JSONSerializer
            ).delete()
        except NoSuchJobError:
            pass
    session.flush()
