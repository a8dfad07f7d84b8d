"""Checkpoint selection by format adherence, not by validation loss.

Earlier runs shipped the checkpoint with the best val loss and got 22.2%: the loss
kept falling while the model drifted into prose. With `eval.checkpoints: true`
every saved checkpoint is evaluated (the eval stages `ckpt-0000100`, …), and
the `best` variant is the checkpoint with the highest adherence, ties going to
the earlier one (fewer steps away from the base model, cheaper to reproduce).

The selection and the misleading-val-loss verdict are pure functions over
`CheckpointPoint`s; `checkpoint_points`, `best_checkpoint`,
`select_best_checkpoint` and `adherence_curve` are the thin database edge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, select

from jobs.dag import checkpoint_iteration
from jobs.db import Metric, Stage
from jobs.states import FINISHED, StageStatus

BEST = "best"
# mlx-lm reports the val loss of the weights after `it - 1` updates while the
# checkpoint of iteration `it` holds `it` updates: a report at most this many
# steps from a checkpoint is that checkpoint's val loss.
VAL_LOSS_TOLERANCE_STEPS = 1
# Below this adherence gap the val-loss pick is as good as the adherence pick
# (one prompt of the 27-prompt demo suite is 3.7 points).
MISLEADING_GAP_POINTS = 10.0


@dataclass(frozen=True)
class CheckpointPoint:
    """One saved checkpoint: its adherence (None until evaluated) and its val loss."""

    iteration: int
    adherence: float | None = None
    val_loss: float | None = None
    n_prompts: int | None = None


@dataclass(frozen=True)
class ValLossVerdict:
    """The checkpoint val loss would pick, the one adherence picks, and the gap."""

    by_val_loss: CheckpointPoint
    by_adherence: CheckpointPoint
    gap_points: float  # adherence points lost by picking on val loss

    @property
    def misleading(self) -> bool:
        return self.gap_points >= MISLEADING_GAP_POINTS - 1e-9


def best_by_adherence(points: Sequence[CheckpointPoint]) -> CheckpointPoint | None:
    """The evaluated checkpoint with the highest adherence; ties go to the earlier one."""
    scored = [p for p in points if p.adherence is not None]
    if not scored:
        return None
    return min(scored, key=lambda p: (-(p.adherence or 0.0), p.iteration))


def best_by_val_loss(points: Sequence[CheckpointPoint]) -> CheckpointPoint | None:
    """The checkpoint with the lowest val loss (what loss-based selection ships)."""
    with_loss = [p for p in points if p.val_loss is not None]
    if not with_loss:
        return None
    return min(with_loss, key=lambda p: (p.val_loss or 0.0, p.iteration))


def val_loss_verdict(points: Sequence[CheckpointPoint]) -> ValLossVerdict | None:
    """Compare the val-loss pick with the adherence pick among checkpoints that have both;
    None when fewer than two such checkpoints exist."""
    both = [p for p in points if p.adherence is not None and p.val_loss is not None]
    if len(both) < 2:
        return None
    by_loss, by_adherence = best_by_val_loss(both), best_by_adherence(both)
    assert by_loss is not None and by_adherence is not None
    gap = 100.0 * ((by_adherence.adherence or 0.0) - (by_loss.adherence or 0.0))
    return ValLossVerdict(by_loss, by_adherence, round(gap, 6))


def match_val_losses(
    iterations: Sequence[int], val_losses: Mapping[int, float]
) -> dict[int, float]:
    """Each checkpoint iteration's val loss: the report at the same iteration, else the
    nearest within VAL_LOSS_TOLERANCE_STEPS (earlier first)."""
    out: dict[int, float] = {}
    for k in iterations:
        for delta in sorted(
            range(-VAL_LOSS_TOLERANCE_STEPS, VAL_LOSS_TOLERANCE_STEPS + 1),
            key=lambda d: (abs(d), d),
        ):
            if k + delta in val_losses:
                out[k] = val_losses[k + delta]
                break
    return out


def build_points(
    checkpoints: Mapping[int, tuple[float | None, int | None]], val_losses: Mapping[int, float]
) -> list[CheckpointPoint]:
    """Points from {iteration: (adherence, n_prompts)} and {iteration: val loss}."""
    losses = match_val_losses(sorted(checkpoints), val_losses)
    return [
        CheckpointPoint(k, adherence, losses.get(k), n)
        for k, (adherence, n) in sorted(checkpoints.items())
    ]


# --------------------------------------------------------------------------- database edge


def _val_losses(session: Session, run_id: int) -> dict[int, float]:
    rows = session.exec(
        select(Metric)
        .where(Metric.run_id == run_id, Metric.val_loss.is_not(None))  # type: ignore[union-attr]
        .order_by(Metric.id)  # type: ignore[arg-type]
    ).all()
    return {m.iteration: float(m.val_loss) for m in rows if m.val_loss is not None}


def _checkpoint_stages(session: Session, run_id: int) -> list[tuple[int, Stage]]:
    stages = session.exec(select(Stage).where(Stage.run_id == run_id, Stage.kind == "eval")).all()
    out = []
    for stage in stages:
        iteration = checkpoint_iteration(stage.variant)
        if iteration is not None:
            out.append((iteration, stage))
    return sorted(out, key=lambda item: item[0])


def checkpoint_points(session: Session, run_id: int) -> list[CheckpointPoint]:
    """Every checkpoint of a run: adherence of its finished eval, val loss from Metric."""
    checkpoints = {
        iteration: (
            stage.adherence if stage.status == StageStatus.DONE else None,
            stage.n_prompts if stage.status == StageStatus.DONE else None,
        )
        for iteration, stage in _checkpoint_stages(session, run_id)
    }
    return build_points(checkpoints, _val_losses(session, run_id))


def checkpoint_evals_finished(session: Session, run_id: int) -> bool:
    """True when the run has checkpoint evals and none is still waiting or running."""
    stages = _checkpoint_stages(session, run_id)
    return bool(stages) and all(stage.status in FINISHED for _, stage in stages)


def best_checkpoint(session: Session, run_id: int) -> int | None:
    """Iteration of the run's checkpoint with the highest adherence (ties: earlier)."""
    best = best_by_adherence(checkpoint_points(session, run_id))
    return best.iteration if best else None


def select_best_checkpoint(session: Session, run_id: int, spec: Mapping[str, Any]) -> int | None:
    """Write the best checkpoint's iteration into the params of the run's `best` eval
    stage and, with `fuse.from: best`, of its fuse stage (`{"iteration": k,
    "selected_by": "adherence", "adherence": a}`). Idempotent; returns the iteration,
    or None when no checkpoint was evaluated."""
    points = checkpoint_points(session, run_id)
    best = best_by_adherence(points)
    if best is None:
        return None
    fuse = spec.get("fuse") or {}
    from_best = isinstance(fuse, Mapping) and fuse.get("from", fuse.get("from_")) == BEST
    stages = session.exec(select(Stage).where(Stage.run_id == run_id)).all()
    for stage in stages:
        if (stage.kind == "eval" and stage.variant == BEST) or (stage.kind == "fuse" and from_best):
            stage.params = {
                **stage.params,
                "iteration": best.iteration,
                "selected_by": "adherence",
                "adherence": best.adherence,
            }
            session.add(stage)
    session.flush()
    return best.iteration


@dataclass(frozen=True)
class CurvePoint:
    """The adherence curve next to the loss curve, per checkpoint."""

    iteration: int
    adherence: float | None
    val_loss: float | None
    train_loss: float | None


def adherence_curve(session: Session, run_id: int) -> list[CurvePoint]:
    """Per checkpoint: adherence, val loss and the last train loss reported up to it."""
    points = checkpoint_points(session, run_id)
    train = session.exec(
        select(Metric)
        .where(Metric.run_id == run_id, Metric.train_loss.is_not(None))  # type: ignore[union-attr]
        .order_by(Metric.iteration)  # type: ignore[arg-type]
    ).all()
    curve = []
    for p in points:
        before = [m.train_loss for m in train if m.iteration <= p.iteration]
        curve.append(
            CurvePoint(p.iteration, p.adherence, p.val_loss, before[-1] if before else None)
        )
    return curve
