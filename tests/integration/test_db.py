"""The data layer against real SQLite and real PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel, select

from jobs import db
from jobs.db import EvalResult, Experiment, Metric, Run, SigninState, Stage, session_scope
from jobs.ranking import count_rows
from read.leaderboard import leaderboard
from tests.conftest import empty_schema


def seeded_rows() -> list[tuple[int | None, int]]:
    """The rows a database is made with: the sign-in throttle's one row."""
    with session_scope() as session:
        return [(row.id, row.version) for row in session.exec(select(SigninState))]


def test_migrations_match_the_models(database: str) -> None:
    """Every migration replayed on an empty database gives the models' schema and
    the rows a new database is created with."""
    made_at_once = seeded_rows()
    if database.startswith("sqlite"):
        Path(database.removeprefix("sqlite:///")).unlink()
        db.dispose_engines()
    else:
        empty_schema(database)
    db.migrate(database, replay=True)
    engine = db.get_engine(database)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []
    assert seeded_rows() == made_at_once == [(1, 0)]
    tables = set(SQLModel.metadata.tables)
    assert {
        "experiment",
        "run",
        "stage",
        "metric",
        "evalresult",
        "artifact",
        "worker",
        "diagnostic",
    } <= tables


def add_config(
    session,
    name: str,
    fingerprint: str,
    scores: dict[int, float],  # type: ignore[no-untyped-def]
    variant: str = "adapter",
    val_losses: dict[int, float] | None = None,
    labels: dict[int, dict[str, int]] | None = None,
) -> None:
    experiment = Experiment(
        name=name,
        fingerprint=fingerprint,
        base_model="m",
        dataset="d",
        suite="s",
        spec_yaml="",
        spec={},
    )
    session.add(experiment)
    session.flush()
    for seed, adherence in scores.items():
        run = Run(experiment_id=experiment.id, seed=seed, fingerprint=fingerprint, status="done")
        session.add(run)
        session.flush()
        train = Stage(
            run_id=run.id,
            kind="train",
            variant="adapter",
            status="done",
            val_loss=(val_losses or {}).get(seed),
        )
        session.add(train)
        session.flush()
        session.add(
            Stage(
                run_id=run.id,
                kind="eval",
                variant=variant,
                status="done",
                depends_on=train.id,
                adherence=adherence,
                latency_s=0.5,
                tokens_per_sec=100.0,
                size_bytes=1000,
                label_counts=(labels or {}).get(seed, {"execute_code": 1}),
            )
        )


def test_leaderboard_aggregates_seeds_in_sql(database: str) -> None:
    with session_scope() as session:
        # The seeds' stochastic format lock: same config, 0.824 / 0.389 / 0.222.
        add_config(
            session,
            "lucky",
            "fp-a",
            {1: 0.824, 2: 0.389, 3: 0.222},
            val_losses={1: 0.5, 2: 0.4, 3: 0.3},
            labels={
                1: {"execute_code": 8, "prose": 2},
                2: {"prose": 10},
                3: {"prose": 5, "degenerate": 5},
            },
        )
        add_config(session, "steady", "fp-b", {1: 0.5, 2: 0.5, 3: 0.5})
        add_config(session, "same-mean-worse-floor", "fp-c", {1: 0.9, 2: 0.1})
    with session_scope() as session:
        rows = leaderboard(session)
        assert count_rows(session) == 3
    by_fp = {r.fingerprint: r for r in rows}
    lucky = by_fp["fp-a"]
    assert lucky.seeds == 3
    assert lucky.mean == pytest.approx((0.824 + 0.389 + 0.222) / 3)
    assert lucky.worst == pytest.approx(0.222) and lucky.best == pytest.approx(0.824)
    assert lucky.lock_rate == pytest.approx(1 / 3)
    assert lucky.std == pytest.approx(0.2537, abs=1e-3)
    assert lucky.val_loss == pytest.approx(0.4)
    # Label mix pools the prompts of every seed: 8 + 17 + 5 of 30.
    assert lucky.label_mix == pytest.approx(
        {"execute_code": 8 / 30, "prose": 17 / 30, "degenerate": 5 / 30}
    )
    assert [s for s, _ in lucky.seed_scores] == [1, 2, 3]
    # Mean first, then worst seed: 0.5 steady beats 0.5 with a 0.1 floor.
    assert [r.fingerprint for r in rows] == ["fp-b", "fp-c", "fp-a"]


def test_leaderboard_pools_seeds_across_experiments(database: str) -> None:
    with session_scope() as session:
        add_config(session, "first", "fp-x", {1: 1.0})
        add_config(session, "second", "fp-x", {2: 0.0, 3: 0.5})
    with session_scope() as session:
        (row,) = leaderboard(session)
    assert row.seeds == 3 and row.mean == pytest.approx(0.5)


def _write_metrics(url: str, stage_id: int, run_id: int, n: int) -> None:
    os.environ["DATABASE_URL"] = url
    db.dispose_engines()
    for i in range(n):
        with session_scope() as session:
            session.add(Metric(stage_id=stage_id, run_id=run_id, iteration=i, train_loss=1.0))


def test_several_processes_write_at_once(database: str) -> None:
    with session_scope() as session:
        add_config(session, "c", "fp", {1: 0.5})
    with session_scope() as session:
        stage = session.exec(select(Stage)).first()
        assert stage is not None
        stage_id, run_id = stage.id, stage.run_id
    db.dispose_engines()
    ctx = multiprocessing.get_context("spawn")
    writers = [
        ctx.Process(target=_write_metrics, args=(database, stage_id, run_id, 40)) for _ in range(4)
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    assert [w.exitcode for w in writers] == [0, 0, 0, 0]
    with session_scope() as session:
        assert len(session.exec(select(Metric)).all()) == 160


def test_eval_rows_round_trip(database: str) -> None:
    with session_scope() as session:
        add_config(session, "c", "fp", {1: 0.5})
    with session_scope() as session:
        stage = session.exec(select(Stage).where(Stage.kind == "eval")).one()
        session.add(
            EvalResult(
                stage_id=stage.id,
                run_id=stage.run_id,
                prompt_id="p1",
                expect="tool",
                prompt="check types",
                response="<tool_call>…",
                label="execute_code",
                score=1.0,
                tokens=12,
                latency_s=0.2,
                hit_max_tokens=True,
                stop_reason="max_tokens",
            )
        )
    with session_scope() as session:
        row = session.exec(select(EvalResult)).one()
        assert (row.label, row.hit_max_tokens, row.tokens) == ("execute_code", True, 12)
        assert row.stop_reason == "max_tokens"
        assert row.response == "<tool_call>…"
