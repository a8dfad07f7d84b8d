"""A stage as every page and `farm status` show it: one read model, its times
and durations.

The runs page reads it column by column for a whole page of runs
(`stage_views`, no JSON params); a run's own page and `farm status` fill in
its attempts, history and error as well (`read.status`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, select

from jobs.db import Stage, utcnow


def aware(value: datetime | None) -> datetime | None:
    """Datetimes from the DB as UTC-aware (SQLite may hand them back naive)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def elapsed_s(started: datetime | None, finished: datetime | None) -> float | None:
    """Seconds from `started` to `finished`, or to now while it runs."""
    start = aware(started)
    if start is None:
        return None
    end = aware(finished) or utcnow()
    return max((end - start).total_seconds(), 0.0)


def stage_seconds(started: datetime | None, finished: datetime | None) -> float | None:
    """How long a finished stage took; None until it has finished."""
    return elapsed_s(started, finished) if finished is not None else None


def stage_label(kind: str, variant: str) -> str:
    """How pages name a stage: "train", "fuse", a gang's "rank 1", or the kind and
    its variant ("eval q4")."""
    if kind == "rank":
        return variant.replace("-", " ")
    return kind if kind in ("train", "fuse") else f"{kind} {variant}"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"


@dataclass
class StageView:
    id: int
    kind: str
    variant: str
    status: str
    worker: str | None
    progress: int | None
    total: int | None
    adherence: float | None
    started_at: datetime | None
    finished_at: datetime | None
    attempt: int = 0
    resumed_from: int | None = None  # train: the checkpoint iteration this attempt resumed at
    val_loss: float | None = None
    error: str | None = None
    # Every attempt (`attempt_dicts`), and the same in words when there is a
    # story to tell (retried, resumed, lost, re-planned); empty otherwise.
    attempts: list[dict[str, Any]] = field(default_factory=list)
    history: list[str] = field(default_factory=list)
    seconds: float | None = None  # how long the stage took, once finished
    # train: why it stopped before its last iteration (the adherence probe), or None
    early_stop: str | None = None

    @property
    def label(self) -> str:
        return stage_label(self.kind, self.variant)

    @property
    def elapsed_s(self) -> float | None:
        return elapsed_s(self.started_at, self.finished_at)


# What the runs page reads of each stage, in StageView's order (no JSON params).
VIEW_COLUMNS = (
    Stage.id, Stage.kind, Stage.variant, Stage.status, Stage.worker, Stage.progress,
    Stage.total, Stage.adherence, Stage.started_at, Stage.finished_at, Stage.attempt,
    Stage.resumed_from,
)  # fmt: skip


def stage_views(session: Session, run_ids: list[int]) -> list[tuple[int, StageView]]:
    """(run id, stage) for every stage of these runs, in id order."""
    if not run_ids:
        return []
    query = (
        select(Stage.run_id, *VIEW_COLUMNS, Stage.params)
        .where(Stage.run_id.in_(run_ids))  # type: ignore[attr-defined]
        .order_by(Stage.id)
    )
    out = []
    for run_id, *values, params in session.execute(query):
        view = StageView(*values)
        if view.total is None and view.kind == "train":
            view.total = (params or {}).get("total")  # planned iterations, before it starts
        out.append((run_id, view))
    return out
