"""Helpers the farm tests share: submit through the CLI, read a run's stages,
find this test's own stage processes."""

from __future__ import annotations

from pathlib import Path

import psutil
from sqlmodel import col, select
from typer.testing import CliRunner

from jobs.db import Metric, Run, Stage, StageAttempt, session_scope
from jobs.experiment_spec import parse_spec
from jobs.states import FINISHED
from jobs.submit import create_rows
from tests.support import PROJECT_ROOT
from tools.cli import app

runner = CliRunner()


def submit(spec: Path) -> int:
    result = runner.invoke(app, ["submit", str(spec)])
    assert result.exit_code == 0, result.output
    return int(result.stdout.strip().splitlines()[-1])


def stages_of(experiment_id: int) -> list[Stage]:
    with session_scope() as session:
        runs = session.exec(select(Run.id).where(Run.experiment_id == experiment_id)).all()
        return list(session.exec(select(Stage).where(Stage.run_id.in_(runs)).order_by(Stage.id)))  # type: ignore[union-attr]


def all_finished(experiment_id: int) -> bool:
    return all(s.status in FINISHED for s in stages_of(experiment_id))


def stage_children(stage_id: int) -> list[psutil.Process]:
    """The stage processes of this test's own workers (other farms may run a
    stage with the same id on this machine)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = proc.cmdline()
        except psutil.Error:
            continue
        if "worker.child" in cmd and cmd[cmd.index("worker.child") + 1 :][:1] == [str(stage_id)]:
            found.append(proc)
    return found


def train_losses(stage_id: int) -> dict[int, float]:
    """A stage's training losses by iteration (a resumed attempt's rows replace those
    its dead predecessor trained past the checkpoint)."""
    with session_scope() as session:
        rows = session.exec(
            select(Metric).where(Metric.stage_id == stage_id, col(Metric.train_loss).is_not(None))
        ).all()
        return {m.iteration: float(m.train_loss or 0) for m in rows}


def attempts_of(stage_id: int) -> list[StageAttempt]:
    """A stage's attempt rows in the order they were written (a `replanned`
    row follows the attempt it ended)."""
    with session_scope() as session:
        return list(
            session.exec(
                select(StageAttempt)
                .where(StageAttempt.stage_id == stage_id)
                .order_by(col(StageAttempt.id))
            )
        )


def small_dataset(folder: Path, train: int = 12, valid: int = 6) -> Path:
    """The first rows of the demo dataset: a few batches, so an epoch boundary and
    validations fall inside a short training run."""
    source = PROJECT_ROOT / "data" / "datasets" / "code_mode"
    folder.mkdir(parents=True)
    for name, n in (("train.jsonl", train), ("valid.jsonl", valid)):
        lines = (source / name).read_text().splitlines()[:n]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def planned_train_stage(spec_path: Path) -> tuple[int, int]:
    """A planned run of the spec whose train stage attempt 1 holds, as a worker
    would after claiming it: (stage id, run id). Tests then run the stage's
    child directly (`python -m worker.child STAGE 1`)."""
    spec = parse_spec(spec_path.read_text())
    with session_scope() as session:
        experiment = create_rows(session, spec)
        run = session.exec(select(Run).where(Run.experiment_id == experiment.id)).one()
        stage = session.exec(
            select(Stage).where(Stage.run_id == run.id, Stage.kind == "train")
        ).one()
        stage.status, stage.attempt = "running", 1
        session.add(stage)
        return stage.id or 0, run.id or 0
