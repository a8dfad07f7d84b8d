"""Checkpoint selection by adherence (pure), and its database edge on planned runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from jobs.checkpoints import (
    MISLEADING_GAP_POINTS,
    CheckpointPoint,
    adherence_curve,
    best_by_adherence,
    best_by_val_loss,
    best_checkpoint,
    build_points,
    checkpoint_evals_finished,
    checkpoint_iteration,
    checkpoint_points,
    match_val_losses,
    select_best_checkpoint,
    val_loss_verdict,
)
from jobs.db import Metric, Run, Stage, session_scope
from jobs.experiment_spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]

P = CheckpointPoint


# --------------------------------------------------------------------------- pure


def test_checkpoint_iteration_reads_the_variant_name() -> None:
    assert checkpoint_iteration("ckpt-0000100") == 100
    assert checkpoint_iteration("ckpt-0001200") == 1200
    assert checkpoint_iteration("adapter") is None and checkpoint_iteration("best") is None


def test_best_by_adherence_takes_the_highest_and_ties_go_earlier() -> None:
    points = [P(100, 0.5), P(200, 0.9), P(300, 0.9), P(400, None)]
    assert best_by_adherence(points) == P(200, 0.9)
    assert best_by_adherence([P(300, 0.7), P(100, 0.7)]) == P(100, 0.7)  # order-free
    assert best_by_adherence([P(100, None)]) is None and best_by_adherence([]) is None


def test_best_by_val_loss_takes_the_lowest_loss() -> None:
    points = [P(100, 0.9, 0.5), P(200, 0.4, 0.2), P(300, 0.1, None)]
    assert best_by_val_loss(points) == P(200, 0.4, 0.2)
    assert best_by_val_loss([P(100, 0.9)]) is None


def test_val_loss_verdict_measures_what_loss_based_selection_loses() -> None:
    verdict = val_loss_verdict([P(100, 0.82, 0.26), P(200, 0.39, 0.11), P(300, 0.22, 0.18)])
    assert verdict is not None and verdict.misleading
    assert verdict.by_val_loss.iteration == 200 and verdict.by_adherence.iteration == 100
    assert verdict.gap_points == pytest.approx(43.0)

    agree = val_loss_verdict([P(100, 0.5, 0.4), P(200, 0.9, 0.2)])
    assert agree is not None and not agree.misleading and agree.gap_points == 0
    assert val_loss_verdict([P(100, 0.5, 0.4), P(200, 0.9, None)]) is None  # < 2 comparable


def test_the_misleading_gap_threshold() -> None:
    at = val_loss_verdict([P(1, 0.5, 0.3), P(2, 0.5 + MISLEADING_GAP_POINTS / 100, 0.4)])
    below = val_loss_verdict([P(1, 0.5, 0.3), P(2, 0.5 + 0.99 * MISLEADING_GAP_POINTS / 100, 0.4)])
    assert at is not None and at.misleading
    assert below is not None and not below.misleading


def test_val_losses_match_checkpoints_one_step_apart() -> None:
    # mlx-lm reports the val loss of checkpoint k at iteration k - 1
    assert match_val_losses([100, 200], {0: 3.0, 99: 1.0, 199: 0.5}) == {100: 1.0, 200: 0.5}
    assert match_val_losses([100], {100: 0.9, 99: 1.0}) == {100: 0.9}  # exact wins
    assert match_val_losses([100], {101: 0.8}) == {100: 0.8}
    assert match_val_losses([100], {98: 1.0, 102: 1.0}) == {}  # too far: not this checkpoint
    points = build_points({200: (0.7, 27), 100: (0.8, 27)}, {99: 1.2, 199: 0.9})
    assert points == [P(100, 0.8, 1.2, 27), P(200, 0.7, 0.9, 27)]


# --------------------------------------------------------------------------- database


SPEC = """
name: ckpt
base_model: org/model
dataset: {root}/data/datasets/code_mode
seeds: [1]
train: {{iters: 300, save_every: 100, steps_per_eval: 100}}
fuse: {{dequantize: true, from: {from_}}}
eval: {{suite: {root}/data/evals/code_mode.yaml, variants: [adapter, fused], checkpoints: true}}
"""


def planned_run(from_: str = "best") -> tuple[int, dict]:
    """Rows of one run planned from a spec with checkpoint evals (as `farm submit` does)."""
    from jobs.submit import create_rows

    spec = parse_spec(SPEC.format(root=ROOT, from_=from_), check_files=False)
    with session_scope() as session:
        experiment = create_rows(session, spec)
        run = session.exec(select(Run).where(Run.experiment_id == experiment.id)).one()
        stages = session.exec(select(Stage).where(Stage.run_id == run.id)).all()
        if not any(s.variant == "best" for s in stages):  # until plan_run adds it
            train = next(s for s in stages if s.kind == "train")
            session.add(Stage(run_id=run.id or 0, kind="eval", variant="best", depends_on=train.id))
        return run.id or 0, experiment.spec


def finish(run_id: int, adherence: dict[int, float], val_at: dict[int, float]) -> None:
    with session_scope() as session:
        stages = session.exec(select(Stage).where(Stage.run_id == run_id)).all()
        train = next(s for s in stages if s.kind == "train")
        for stage in stages:
            k = checkpoint_iteration(stage.variant)
            if k in adherence:
                stage.status, stage.adherence, stage.n_prompts = "done", adherence[k], 27
                session.add(stage)
        for it, loss in val_at.items():
            session.add(Metric(stage_id=train.id or 0, run_id=run_id, iteration=it, val_loss=loss))
        for it in (50, 150, 250):
            session.add(
                Metric(stage_id=train.id or 0, run_id=run_id, iteration=it, train_loss=3.0 / it)
            )


def test_best_checkpoint_is_chosen_by_adherence_on_a_planned_run(farm_home: Path) -> None:
    run_id, spec = planned_run()
    with session_scope() as session:
        variants = sorted(
            s.variant for s in session.exec(select(Stage).where(Stage.run_id == run_id)).all()
        )
        assert {"ckpt-0000100", "ckpt-0000200", "ckpt-0000300"} <= set(variants)
        assert not checkpoint_evals_finished(session, run_id)
        assert best_checkpoint(session, run_id) is None

    finish(run_id, {100: 0.82, 200: 0.82, 300: 0.22}, {99: 0.26, 199: 0.17, 299: 0.11})
    with session_scope() as session:
        assert checkpoint_evals_finished(session, run_id)
        assert best_checkpoint(session, run_id) == 100  # tie with 200 goes earlier
        assert [p.val_loss for p in checkpoint_points(session, run_id)] == [0.26, 0.17, 0.11]
        assert select_best_checkpoint(session, run_id, spec) == 100
        assert select_best_checkpoint(session, run_id, spec) == 100  # idempotent
        stages = session.exec(select(Stage).where(Stage.run_id == run_id)).all()
        best = next(s for s in stages if s.kind == "eval" and s.variant == "best")
        fuse = next(s for s in stages if s.kind == "fuse")
        curve = adherence_curve(session, run_id)
    assert best.params["iteration"] == 100 and best.params["selected_by"] == "adherence"
    assert fuse.params["iteration"] == 100 and fuse.params["dequantize"] is True
    assert [(c.iteration, c.adherence, c.val_loss, c.train_loss) for c in curve] == [
        (100, 0.82, 0.26, 3.0 / 50),
        (200, 0.82, 0.17, 3.0 / 150),
        (300, 0.22, 0.11, 3.0 / 250),
    ]


def test_fuse_from_final_is_left_alone(farm_home: Path) -> None:
    run_id, spec = planned_run(from_="final")
    finish(run_id, {100: 0.3, 200: 0.9, 300: 0.6}, {})
    with session_scope() as session:
        assert select_best_checkpoint(session, run_id, spec) == 200
        fuse = session.exec(select(Stage).where(Stage.run_id == run_id, Stage.kind == "fuse")).one()
    assert "iteration" not in fuse.params


def test_unfinished_checkpoint_evals_are_not_candidates(farm_home: Path) -> None:
    run_id, spec = planned_run()
    finish(run_id, {100: 0.4}, {})
    with session_scope() as session:
        stage = session.exec(
            select(Stage).where(Stage.run_id == run_id, Stage.variant == "ckpt-0000200")
        ).one()
        stage.status, stage.adherence = "running", 0.99  # not done: ignored
        session.add(stage)
    with session_scope() as session:
        assert best_checkpoint(session, run_id) == 100
        assert not checkpoint_evals_finished(session, run_id)


def test_random_states_travel_to_another_rank_as_one_vector_of_words() -> None:
    """What a resumed gang's rank 0 sends the others: restored from the words,
    a rank draws the dropout keys and validation order rank 0 draws."""
    import mlx.core as mx
    import numpy as np

    from worker.checkpoint import (
        random_states,
        random_words,
        restore_random_states,
        states_from_words,
    )

    mx.random.seed(123)
    np.random.seed(7)
    np.random.permutation(10)
    np.random.normal()  # leaves a cached gaussian: its value must travel too
    states = random_states()
    words = random_words(states)
    assert words.dtype == np.uint32 and words.shape == (2 + 624 + 4,)
    assert states_from_words(words) == states
    expected = (np.random.permutation(50).tolist(), np.random.normal(),
                np.array(mx.random.uniform(shape=(4,))).tolist())  # fmt: skip

    mx.random.seed(999)
    np.random.seed(999)  # another rank, elsewhere in its streams
    restore_random_states(states_from_words(words))
    assert (np.random.permutation(50).tolist(), np.random.normal(),
            np.array(mx.random.uniform(shape=(4,))).tolist()) == expected  # fmt: skip
