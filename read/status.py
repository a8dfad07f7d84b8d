"""What is queued, running and finished: the queries behind `farm status` and the runs page."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from jobs.db import Diagnostic, Experiment, Run, Stage
from read.attempts import attempt_dicts, attempt_lines, attempts_by_stage, has_history
from read.gangs import GangView, gang_view
from read.stages import StageView, stage_seconds


@dataclass
class RunView:
    id: int
    seed: int
    status: str
    host: str | None
    stages: list[StageView] = field(default_factory=list)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    # What evaluating the run cost: every finished eval stage, and each variant's.
    eval_seconds: float = 0.0
    eval_seconds_by_variant: dict[str, float] = field(default_factory=dict)
    gang: GangView | None = None  # its ranks, when several workers train it


def eval_seconds(stages: list[StageView]) -> tuple[float, dict[str, float]]:
    """Seconds the run's finished eval stages took: (total, by variant). With one
    load per weights the first eval on a model carries the load, the rest only
    their generation."""
    by_variant = {
        s.variant: s.seconds for s in stages if s.kind == "eval" and s.seconds is not None
    }
    return sum(by_variant.values()), by_variant


@dataclass
class ExperimentView:
    id: int
    name: str
    fingerprint: str
    base_model: str
    created_at: datetime
    runs: list[RunView] = field(default_factory=list)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return experiment_status([r.status for r in self.runs])

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status
        return data


def experiment_status(run_statuses: list[str]) -> str:
    if any(s in ("running",) for s in run_statuses):
        return "running"
    if any(s == "queued" for s in run_statuses):
        return "queued"
    if run_statuses and all(s == "done" for s in run_statuses):
        return "done"
    if "failed" in run_statuses:
        return "failed"
    if "cancelled" in run_statuses:
        return "cancelled"
    return "done" if run_statuses else "empty"


def _diag(d: Diagnostic) -> dict[str, Any]:
    return {
        "pattern": d.pattern,
        "severity": d.severity,
        "message": d.message,
        "evidence": d.evidence,
        "scope": d.scope,
    }


def experiment_view(session: Session, experiment_id: int) -> ExperimentView | None:
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        return None
    view = ExperimentView(
        id=experiment.id or 0,
        name=experiment.name,
        fingerprint=experiment.fingerprint,
        base_model=experiment.base_model,
        created_at=experiment.created_at,
    )
    runs = session.exec(
        select(Run).where(Run.experiment_id == experiment_id).order_by(Run.id)
    ).all()
    run_ids = [r.id for r in runs]
    stages = (
        session.exec(
            select(Stage).where(Stage.run_id.in_(run_ids)).order_by(Stage.id)  # type: ignore[union-attr]
        ).all()
        if run_ids
        else []
    )
    diagnostics = session.exec(
        select(Diagnostic).where(Diagnostic.experiment_id == experiment_id).order_by(Diagnostic.id)
    ).all()
    tries = attempts_by_stage(session, [s.id or 0 for s in stages])
    for run in runs:
        run_view = RunView(id=run.id or 0, seed=run.seed, status=run.status, host=run.host)
        for s in stages:
            if s.run_id == run.id:
                run_view.stages.append(
                    StageView(
                        id=s.id or 0,
                        kind=s.kind,
                        variant=s.variant,
                        status=s.status,
                        worker=s.worker,
                        progress=s.progress,
                        total=s.total or s.params.get("total"),
                        adherence=s.adherence,
                        val_loss=s.val_loss,
                        started_at=s.started_at,
                        finished_at=s.finished_at,
                        error=s.error,
                        attempt=s.attempt,
                        resumed_from=s.resumed_from,
                        attempts=attempt_dicts(tries[s.id or 0]),
                        history=_history(s, tries[s.id or 0]),
                        seconds=stage_seconds(s.started_at, s.finished_at),
                        early_stop=s.early_stop,
                    )
                )
        run_view.eval_seconds, run_view.eval_seconds_by_variant = eval_seconds(run_view.stages)
        run_view.diagnostics = [_diag(d) for d in diagnostics if d.run_id == run.id]
        run_view.gang = gang_view(session, run.id or 0)
        view.runs.append(run_view)
    view.diagnostics = [_diag(d) for d in diagnostics if d.run_id is None]
    return view


def _history(stage: Stage, rows: list[Any]) -> list[str]:
    return attempt_lines(stage, rows) if has_history(stage, rows) else []


def list_experiments(session: Session, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Newest first, with run counts by status, in two queries whatever the page size."""
    experiments = session.exec(
        select(Experiment).order_by(Experiment.id.desc()).limit(limit).offset(offset)  # type: ignore[union-attr]
    ).all()
    ids = [e.id for e in experiments]
    counts: dict[int, Counter[str]] = {i or 0: Counter() for i in ids}
    if ids:
        rows = session.execute(
            select(Run.experiment_id, Run.status, func.count())
            .where(Run.experiment_id.in_(ids))  # type: ignore[attr-defined]
            .group_by(Run.experiment_id, Run.status)
        )
        for experiment_id, status, n in rows:
            counts[experiment_id][status] += n
    out = []
    for e in experiments:
        c = counts[e.id or 0]
        statuses = [s for s, n in c.items() for _ in range(min(n, 1))]
        out.append(
            {
                "id": e.id,
                "name": e.name,
                "fingerprint": e.fingerprint,
                "base_model": e.base_model,
                "created_at": e.created_at.isoformat(timespec="seconds"),
                "runs": sum(c.values()),
                "run_status": dict(c),
                "status": experiment_status(statuses),
            }
        )
    return out


def count_experiments(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(Experiment)).scalar_one())
