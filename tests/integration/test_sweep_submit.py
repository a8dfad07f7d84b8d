"""Submitting a sweep with real SQLite and Redis: one Sweep row and one experiment
per grid point, their train jobs in Redis; an oversized grid is refused by the
CLI and the form alike with nothing written; `farm leaderboard --sweep`."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis
from sqlmodel import func, select
from typer.testing import CliRunner

from jobs import limits
from jobs.db import Experiment, Run, Stage, Sweep, session_scope
from read.leaderboard import leaderboard
from tests.support.spec_files import write_spec
from tests.support.web import open_page, quick_form, texts
from tools.cli import app
from web import form_bounds, forms

GRID = {"train.learning_rate": [1e-4, 2e-4], "train.lora.rank": [4, 8]}


def counts() -> tuple[int, int, int]:
    with session_scope() as session:
        return tuple(  # type: ignore[return-value]
            session.exec(select(func.count()).select_from(table)).one()
            for table in (Sweep, Experiment, Run)
        )


def submit(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["submit", *args])
    return result.exit_code, result.stdout, result.stderr


def test_dry_run_prints_the_grid_and_writes_nothing(
    farm_home: Path, redis_url: str, tiny_model: Path, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "s.yaml", tiny_model, name="lr-rank", seeds=[1, 2, 3], sweep=GRID)
    code, out, _ = submit(str(spec), "--dry-run")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith(
        "lr-rank: sweep of 4 grid points × 3 seeds = 12 runs, 6 stages per run"
    )
    assert lines[1].split() == [
        "point", "train.learning_rate", "train.lora.rank", "fingerprint", "runs", "stages"
    ]  # fmt: skip
    assert [line.split()[1:3] for line in lines[2:6]] == [
        ["0.0001", "4"], ["0.0001", "8"], ["0.0002", "4"], ["0.0002", "8"]
    ]  # fmt: skip
    assert len({line.split()[3] for line in lines[2:6]}) == 4  # a fingerprint per point
    assert "stages of each run:" in lines and "  train" in lines
    assert counts() == (0, 0, 0) and Redis.from_url(redis_url).dbsize() == 0


def test_submit_creates_the_sweep_an_experiment_per_point_and_their_jobs(
    farm_home: Path, redis_url: str, tiny_model: Path, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "s.yaml", tiny_model, name="lr-rank", seeds=[1, 2, 3], sweep=GRID)
    code, out, err = submit(str(spec))
    assert code == 0, err
    ids = [int(line) for line in out.split()]
    assert len(ids) == 4 and "12 runs queued" in err
    with session_scope() as session:
        sweep = session.exec(select(Sweep)).one()
        assert sweep.name == "lr-rank" and sweep.axes == GRID and "sweep:" in sweep.spec_yaml
        experiments = session.exec(select(Experiment).order_by(Experiment.id)).all()
        assert [e.id for e in experiments] == ids
        assert {e.sweep_id for e in experiments} == {sweep.id}
        assert [e.sweep_point for e in experiments] == [
            {"train.learning_rate": lr, "train.lora.rank": rank}
            for lr in (1e-4, 2e-4)
            for rank in (4, 8)
        ]
        assert len({e.fingerprint for e in experiments}) == 4
        assert experiments[3].spec["train"]["lora"]["rank"] == 8
        assert "sweep" not in experiments[3].spec
        runs = session.exec(select(Run)).all()
        assert sorted(r.seed for r in runs) == sorted([1, 2, 3] * 4)
        assert {r.fingerprint for r in runs} == {e.fingerprint for e in experiments}
        queued = session.exec(select(Stage).where(Stage.status == "queued")).all()
        assert len(queued) == 12 and {s.kind for s in queued} == {"train"}
    redis = Redis.from_url(redis_url)
    assert len(list(redis.scan_iter("rq:job:*"))) == 12


def oversized() -> dict[str, list[float]]:
    # 10 seeds × 101 points = 1010 runs: each list and the seeds are within their own limits.
    return {"train.lora.rank": list(range(1, 102))}


def test_an_oversized_grid_is_refused_by_the_cli_and_the_form_alike(
    farm_home: Path, redis_url: str, tiny_model: Path, tmp_path: Path
) -> None:
    message = "1010 runs (10 seeds × 101 grid points), at most 1000 per submission"
    seeds = list(range(1, 11))
    spec = write_spec(tmp_path / "s.yaml", tiny_model, seeds=seeds, sweep=oversized())
    for args in ([str(spec)], [str(spec), "--dry-run"]):
        code, out, err = submit(*args)
        assert code == limits_exit() and out == ""
        assert err.strip().endswith(f"sweep: {message}"), err
    values = quick_form(tiny_model, seeds="1-10")
    values[forms.sweep_inputs.PREFIX + "train.lora.rank"] = ", ".join(map(str, range(1, 102)))
    assert forms.sweep_inputs.run_count_text(values).endswith(f"refused: {message}")
    result = form_bounds.submit_form(values, Redis.from_url(redis_url))
    assert result.sweep_id is None and result.experiment_id is None and not result.ok
    assert result.messages(forms.GENERAL) == [message]
    assert counts() == (0, 0, 0) and Redis.from_url(redis_url).dbsize() == 0
    assert limits.MAX_RUNS == 1000


def limits_exit() -> int:
    from tools.cli import EXIT_INVALID

    return EXIT_INVALID


def test_the_form_submits_a_sweep(farm_home: Path, redis_url: str, tiny_model: Path) -> None:
    values = quick_form(tiny_model, seeds="1-2")
    values[forms.sweep_inputs.PREFIX + "train.learning_rate"] = "1e-4, 2e-4"
    assert forms.sweep_inputs.run_count_text(values) == "4 runs: 2 grid points × 2 seeds"
    result = form_bounds.submit_form(values, Redis.from_url(redis_url))
    assert result.sweep_id is not None, result.problems
    assert result.plan is not None and result.plan.runs == 4
    with session_scope() as session:
        sweep = session.get(Sweep, result.sweep_id)
        assert sweep is not None and sweep.axes == {"train.learning_rate": [1e-4, 2e-4]}
    assert counts() == (1, 2, 4)
    # The form reads a sweep back (an uploaded spec, a clone).
    back, notes = forms.yaml_to_form(result.yaml)
    assert back[forms.sweep_inputs.PREFIX + "train.learning_rate"] == "0.0001, 0.0002"
    assert notes == []


@pytest.fixture
def scored_sweep(farm_home: Path, redis_url: str, tiny_model: Path, tmp_path: Path) -> int:
    """A 2×2 sweep over two seeds whose adapter evals have finished, and a plain
    experiment of the same config as its last point (seed 9)."""
    spec = write_spec(tmp_path / "s.yaml", tiny_model, name="lr-rank", seeds=[1, 2], sweep=GRID)
    assert submit(str(spec))[0] == 0
    train = {"learning_rate": 2e-4, "lora": {"rank": 8, "scale": 10.0}}
    plain = write_spec(tmp_path / "p.yaml", tiny_model, name="by-hand", seeds=[9], train=train)
    assert submit(str(plain))[0] == 0
    adherence = {1e-4: 0.2, 2e-4: 0.55}  # the learning rate decides, the rank hardly
    with session_scope() as session:
        rows = session.exec(
            select(Stage, Run, Experiment)
            .join(Run, Run.id == Stage.run_id)
            .join(Experiment, Experiment.id == Run.experiment_id)
            .where(Stage.kind == "eval", Stage.variant == "adapter")
        ).all()
        for stage, run, experiment in rows:
            lr = experiment.spec["train"]["learning_rate"]
            stage.status = "done"
            stage.adherence = adherence[lr] + 0.01 * run.seed
            stage.label_counts = {"execute_code": 1}
            session.add(stage)
        return session.exec(select(Sweep.id)).one() or 0


def test_farm_leaderboard_sweep_prints_the_grid_and_the_strongest_knob(scored_sweep: int) -> None:
    result = CliRunner().invoke(app, ["leaderboard", "--sweep", str(scored_sweep)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "adapter adherence per grid point" in out and "adherence per knob value" in out
    assert "learning_rate moved adherence most: 0.22 → 0.57 (0.0001 → 0.0002)" in out
    for cells in (["0.0001", "4", "2", "0.22", "0.21", "0.22"],
                  ["0.0002", "8", "2", "0.57", "0.56", "0.57"]):  # fmt: skip
        assert any(all(c in line.split() for c in cells) for line in out.splitlines()), cells
    missing = CliRunner().invoke(app, ["leaderboard", "--sweep", "999"])
    assert missing.exit_code == 1 and "no sweep 999" in missing.stderr


def test_a_grid_point_pools_with_an_experiment_of_the_same_config(scored_sweep: int) -> None:
    with session_scope() as session:
        last = session.exec(
            select(Experiment).where(Experiment.sweep_id == scored_sweep).order_by(Experiment.id)
        ).all()[-1]
        rows = [r for r in leaderboard(session) if r.variant == "adapter"]
    pooled = next(r for r in rows if r.fingerprint == last.fingerprint)
    assert pooled.seeds == 3  # seeds 1, 2 of the grid point and seed 9 by hand
    assert sorted(seed for seed, _ in pooled.seed_scores) == [1, 2, 9]


def test_the_leaderboard_page_shows_the_sweep(scored_sweep: int) -> None:
    at = open_page("views/leaderboard.py")
    assert not at.exception, at.exception
    page = texts(at)
    assert "Sweeps" in page
    assert "learning_rate moved adherence most: 0.22 → 0.57 (0.0001 → 0.0002)" in page
    titles = [str(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert sum("adapter adherence vs learning_rate" in t for t in titles) == 1
    assert sum("adapter adherence vs rank" in t for t in titles) == 1
    grid = next(d.value for d in at.dataframe if "learning_rate" in d.value.columns)
    assert list(grid["mean"].round(2)) == [0.22, 0.22, 0.57, 0.57]
