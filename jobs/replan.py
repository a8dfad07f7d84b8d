"""Re-planning: a run whose worker's disk is gone trains again from the start.

Its checkpoints and artifacts were on one Mac's own disk and that Mac has
been gone too long (`jobs.reconcile`), or a user retries a stage by hand
(`jobs.control`): the stages that depended on those files go back to
`waiting` without their results, and the train stage is queued on any worker.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete
from sqlmodel import Session, col, select

from jobs import lifecycle
from jobs.db import Artifact, EvalResult, Metric, Run, Stage, StageAttempt, server_now
from jobs.queue import Ticket
from jobs.states import AttemptOutcome, StageStatus

# Per-attempt summary fields a stage starts over without (retry, re-plan).
_SUMMARY_FIELDS = (
    "worker", "queue", "rq_job_id", "enqueued_at", "started_at", "finished_at", "error",
    "progress", "total", "adherence", "n_prompts", "label_counts", "passed_prompts",
    "hit_max_share", "latency_s", "tokens_per_sec", "peak_memory_gb", "size_bytes", "val_loss",
    "heartbeat_at", "resumed_from", "early_stop",
)  # fmt: skip


def forget_results(session: Session, stages: Sequence[Stage]) -> list[str]:
    """Send stages back to `waiting` without the results of their earlier
    attempts (metrics, eval rows, artifacts, summaries). Their attempt numbers
    stay, so a late write from an old attempt is still refused. Returns the RQ
    job ids that no longer mean anything."""
    ids = [s.id for s in stages]
    for table in (EvalResult, Metric, Artifact):
        session.execute(delete(table).where(col(table.stage_id).in_(ids)))
    jobs = []
    for stage in stages:
        if stage.rq_job_id:
            jobs.append(stage.rq_job_id)
        for name in _SUMMARY_FIELDS:
            setattr(stage, name, None)
        stage.status = StageStatus.WAITING
        session.add(stage)
    session.flush()
    return jobs


def replan_run(session: Session, run: Run, reason: str) -> list[Ticket]:
    """The worker holding a run's artifacts has been gone too long and nobody
    else can see them: forget what depended on its disk and train again on any
    worker."""
    stages = session.exec(select(Stage).where(Stage.run_id == run.id)).all()
    train = next(s for s in stages if s.kind == "train")
    reset = [train, *lifecycle.descendants(stages, train.id or -1)]
    for stage in reset:
        if stage.status == StageStatus.RUNNING:
            lifecycle.end_attempt(
                session, stage.id or 0, stage.attempt, AttemptOutcome.REPLANNED, reason
            )
        elif stage.attempt:
            _mark_replanned(session, stage, reason)
    forget_results(session, reset)
    train.error = f"re-planned: {reason}"
    run.host, run.finished_at = None, None
    session.add(run)
    tickets = lifecycle.queue_with_ranks(session, train, lifecycle.first_queue(session, train))
    lifecycle.update_run_status(session, run.id or 0)
    return tickets


def _mark_replanned(session: Session, stage: Stage, reason: str) -> None:
    """A `replanned` row after a finished stage's last attempt: its retry count
    starts over, and the run page can say why it runs again."""
    last = session.exec(
        select(StageAttempt)
        .where(StageAttempt.stage_id == stage.id)
        .order_by(col(StageAttempt.attempt).desc())
    ).first()
    if last is not None and last.outcome != AttemptOutcome.REPLANNED:
        session.add(
            StageAttempt(
                stage_id=stage.id or 0,
                attempt=stage.attempt,
                worker=last.worker,
                host=last.host,
                outcome=AttemptOutcome.REPLANNED,
                reason=reason,
                ended_at=server_now(session),
            )
        )
