"""A train stage that stops before its last iteration (the adherence probe saw
the format lock or collapse): why, and the checkpoint evals it will not feed.

The checkpoints planned after the stop are never saved, so their eval stages
are skipped (`jobs.lifecycle.skip`) with the reason, in the same transaction
that records the stop; the run goes on with the adapter saved at the stop.
"""

from __future__ import annotations

from sqlmodel import Session, select

from jobs import lifecycle
from jobs.dag import checkpoint_iteration
from jobs.db import Stage


def stop_early(session: Session, stage_id: int, attempt: int, iteration: int, reason: str) -> None:
    """Record that train stage `stage_id` ends after checkpoint `iteration`
    (`Stage.early_stop` = `reason`) and skip the evals of later checkpoints.
    Refused (`StaleAttempt`) for an attempt that no longer owns the stage;
    idempotent, so a resumed attempt that reaches the same stop may repeat it."""
    lifecycle.guard(session, stage_id, attempt)
    stage = session.get(Stage, stage_id)
    assert stage is not None
    stage.early_stop = reason
    session.add(stage)
    children = session.exec(
        select(Stage).where(Stage.depends_on == stage_id, Stage.kind == "eval")
    ).all()
    why = f"skipped: training stopped early at iteration {iteration} ({reason})"
    for child in children:
        planned = checkpoint_iteration(child.variant)
        if planned is not None and planned > iteration:
            lifecycle.skip(session, child, why)
