"""Helpers the farm tests share: submit through the CLI, read a run's stages,
find this test's own stage processes."""

from __future__ import annotations

from pathlib import Path

import psutil
from sqlmodel import col, select
from typer.testing import CliRunner

from jobs.cli import app
from jobs.db import Run, Stage, StageAttempt, session_scope
from jobs.states import FINISHED

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
