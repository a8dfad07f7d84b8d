"""The runs page: one page of experiments with their runs, stage states and training progress.

A fixed number of queries per page, whatever the size of the database: the
experiments of the page, their runs, those runs' stages (without their JSON
params), and the latest losses of the training stages that are running.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from jobs.db import Experiment, Metric, Run
from jobs.states import ACTIVE, FINISHED, RETRYABLE, StageStatus
from read.attempts import progress_note
from read.stages import StageView, aware, elapsed_s, stage_views
from read.status import experiment_status


@dataclass
class RunRow:
    id: int
    seed: int
    status: str
    host: str | None
    stages: list[StageView] = field(default_factory=list)
    train_loss: float | None = None
    val_loss: float | None = None

    @property
    def train(self) -> StageView | None:
        return next((s for s in self.stages if s.kind == "train"), None)

    @property
    def elapsed_s(self) -> float | None:
        started = [aware(s.started_at) for s in self.stages if s.started_at is not None]
        if not started:
            return None
        finished = [aware(s.finished_at) for s in self.stages if s.finished_at is not None]
        end = max(finished) if finished and self.status in FINISHED else None  # type: ignore[type-var]
        return elapsed_s(min(started), end)  # type: ignore[type-var]

    @property
    def worker(self) -> str | None:
        running = [s.worker for s in self.stages if s.status == StageStatus.RUNNING and s.worker]
        return running[0] if running else self.host

    @property
    def current(self) -> str:
        """What the run is doing after training, e.g. 'eval q4 12/27' (the progress bar
        shows training)."""
        running = [s for s in self.stages if s.status == StageStatus.RUNNING and s.kind != "train"]
        parts = []
        for s in running:
            progress = f" {s.progress}/{s.total}" if s.total else ""
            parts.append(f"{s.label}{progress}")
        return ", ".join(parts)

    @property
    def train_fraction(self) -> float | None:
        train = self.train
        if train is None or not train.total:
            return None
        return min((train.progress or 0) / train.total, 1.0)

    @property
    def progress_text(self) -> str:
        train = self.train
        if train is None:
            return ""
        text = f"train {train.progress or 0}/{train.total or '?'}"
        note = progress_note(train)  # a retried or resumed train stage says so
        if note:
            text += f" · {note}"
        if self.train_loss is not None:
            text += f" · train loss {self.train_loss:.3f}"
        if self.val_loss is not None:
            text += f" · val loss {self.val_loss:.3f}"
        return text

    @property
    def stage_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(s.status for s in self.stages).items()))

    @property
    def can_cancel(self) -> bool:
        return any(s.status in ACTIVE for s in self.stages)

    @property
    def can_retry(self) -> bool:
        return not self.can_cancel and any(s.status in RETRYABLE for s in self.stages)


@dataclass
class ExperimentRow:
    id: int
    name: str
    fingerprint: str
    base_model: str
    created_at: datetime
    runs: list[RunRow] = field(default_factory=list)

    @property
    def status(self) -> str:
        return experiment_status([r.status for r in self.runs])

    @property
    def can_cancel(self) -> bool:
        return any(r.can_cancel for r in self.runs)

    @property
    def can_retry(self) -> bool:
        return any(r.can_retry for r in self.runs)


@dataclass
class RunsPage:
    total: int
    experiments: list[ExperimentRow]


def _with_status(query: Any, status: str | None) -> Any:
    if not status:
        return query
    having = select(Run.experiment_id).where(Run.status == status).distinct()
    return query.where(Experiment.id.in_(having))  # type: ignore[union-attr]


def count_experiments(session: Session, status: str | None = None) -> int:
    count = _with_status(select(func.count()).select_from(Experiment), status)
    return int(session.execute(count).scalar_one())


def runs_page(
    session: Session, limit: int = 10, offset: int = 0, status: str | None = None
) -> RunsPage:
    """Newest experiments first; with `status`, only experiments having a run in it."""
    total = count_experiments(session, status)
    query = _with_status(select(Experiment), status)
    experiments = session.exec(
        query.order_by(Experiment.id.desc()).limit(limit).offset(offset)  # type: ignore[union-attr]
    ).all()
    rows = {
        e.id: ExperimentRow(e.id or 0, e.name, e.fingerprint, e.base_model, e.created_at)
        for e in experiments
    }
    if not rows:
        return RunsPage(total, [])
    runs = session.exec(
        select(Run).where(Run.experiment_id.in_(list(rows))).order_by(Run.id)  # type: ignore[attr-defined]
    ).all()
    by_run = {r.id: RunRow(r.id or 0, r.seed, r.status, r.host) for r in runs}
    for r in runs:
        rows[r.experiment_id].runs.append(by_run[r.id])
    for stage in stage_views(session, list(by_run)):
        by_run[stage[0]].stages.append(stage[1])
    running_train = {
        run.train.id: run
        for run in by_run.values()
        if run.train and run.train.status == StageStatus.RUNNING
    }
    for stage_id, (train_loss, val_loss) in latest_losses(session, list(running_train)).items():
        running_train[stage_id].train_loss = train_loss
        running_train[stage_id].val_loss = val_loss
    return RunsPage(total, list(rows.values()))


def latest_losses(
    session: Session, stage_ids: list[int]
) -> dict[int, tuple[float | None, float | None]]:
    """(latest train loss, latest val loss) of each training stage."""
    if not stage_ids:
        return {}
    out: dict[int, tuple[float | None, float | None]] = {}
    for column, position in ((Metric.train_loss, 0), (Metric.val_loss, 1)):
        latest = (
            select(func.max(Metric.id))
            .where(Metric.stage_id.in_(stage_ids), column.is_not(None))  # type: ignore[attr-defined,union-attr]
            .group_by(Metric.stage_id)
        )
        query = select(Metric.stage_id, column).where(Metric.id.in_(latest))  # type: ignore[union-attr]
        for stage_id, value in session.execute(query):
            pair = list(out.get(stage_id, (None, None)))
            pair[position] = value
            out[stage_id] = (pair[0], pair[1])
    return out
