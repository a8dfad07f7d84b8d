"""Eval sessions: one stage child evaluates a run's variants on the weights it holds.

An eval child keeps its model between stages (`worker/weights.py`); the horse
asks here which queued eval of the run it should take next, and whether a
ticket it popped belongs to another worker's session on the same weights.
"""

from __future__ import annotations

from sqlmodel import Session, select

from jobs.dag import weights_of
from jobs.db import Stage
from jobs.states import StageStatus


def next_in_session(session: Session, run_id: int, queue: str, last_variant: str) -> int | None:
    """The queued eval stage of a run that a session which just evaluated
    `last_variant` should take next: one on the weights it holds first (the
    plain base before any adapter, so the layers need no unwrapping), then the
    others, oldest first. Only stages on the session's own queue: the others
    belong to other workers."""
    queued = session.exec(
        select(Stage).where(
            Stage.run_id == run_id,
            Stage.kind == "eval",
            Stage.status == StageStatus.QUEUED,
            Stage.queue == queue,
        )
    ).all()
    if not queued:
        return None
    held = weights_of(last_variant)
    best = min(
        queued,
        key=lambda s: (weights_of(s.variant) != held, s.variant != "base", s.id or 0),
    )
    return best.id


def held_for_session(session: Session, stage_id: int, worker: str) -> bool:
    """Another worker runs an eval of this stage's run on the same weights and
    queue: its session takes this stage next, with the model it has loaded.
    (Should that session end first, the reconciler pushes the stage again.)"""
    stage = session.get(Stage, stage_id)
    if stage is None or stage.kind != "eval" or stage.status != StageStatus.QUEUED:
        return False
    running = session.exec(
        select(Stage).where(
            Stage.run_id == stage.run_id,
            Stage.kind == "eval",
            Stage.status == StageStatus.RUNNING,
            Stage.queue == stage.queue,
            Stage.worker != worker,
        )
    ).all()
    return any(weights_of(s.variant) == weights_of(stage.variant) for s in running)
