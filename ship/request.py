"""Asking the worker that holds a run's artifacts for an export, and what came of it.

An export made by a worker is a stage of its own kind (`export`), so it goes
through the lifecycle every stage does: routed to the queue of the worker whose
disk holds the artifacts (or to any worker when they are shared), claimed by
attempt, beating its heartbeat, retried, cancelled, and shown on the run page
with its progress. It depends on no other stage and never changes the run's
status (`jobs.lifecycle.update_run_status`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from jobs import lifecycle, settings
from jobs.db import ExportFile, Stage, WorkerRow, seconds_since, server_now
from jobs.queue import Ticket
from ship.sources import load_plan

EXPORT = "export"


def holders_down(session: Session, run_id: int, variant: str) -> list[str]:
    """The hosts holding the variant's artifacts on their own disks none of whose
    workers has beaten its heartbeat lately: an export stage would wait for them."""
    if settings.shared_artifacts() is not None:
        return []
    hosts = sorted({s.host for s in load_plan(session, run_id, variant).sources})
    now = server_now(session)
    alive = {
        w.host_id or w.name
        for w in session.exec(select(WorkerRow).where(col(WorkerRow.host_id).in_(hosts))).all()
        if seconds_since(w.last_heartbeat, now) <= settings.lost_after_s()
    }
    return [h for h in hosts if h not in alive]


def request_export(session: Session, run_id: int, variant: str) -> Ticket:
    """Queue an export stage of `variant` on the worker holding it; the job to
    push once committed. `ExportRefused` (and nothing written) when the run has
    no such variant."""
    load_plan(session, run_id, variant)  # refuses an unknown run or variant here
    stage = Stage(run_id=run_id, kind=EXPORT, variant=variant, params={"variant": variant})
    session.add(stage)
    session.flush()
    return lifecycle.queue_stage(session, stage)


@dataclass(frozen=True)
class ExportRow:
    stage_id: int
    variant: str
    status: str
    worker: str | None
    progress: int | None
    total: int | None
    error: str | None
    enqueued_at: datetime | None
    file_name: str | None
    size_bytes: int | None
    sha256: str | None


def exports_of(session: Session, run_id: int) -> list[ExportRow]:
    """The run's export stages, newest first, with their zips where made."""
    stages = session.exec(
        select(Stage)
        .where(Stage.run_id == run_id, Stage.kind == EXPORT)
        .order_by(col(Stage.id).desc())
    ).all()
    files = {
        f.stage_id: f
        for f in session.exec(select(ExportFile).where(ExportFile.run_id == run_id)).all()
    }
    rows = []
    for stage in stages:
        made = files.get(stage.id or 0) if stage.status == "done" else None
        rows.append(
            ExportRow(
                stage_id=stage.id or 0,
                variant=stage.variant,
                status=stage.status,
                worker=stage.worker,
                progress=stage.progress,
                total=stage.total,
                error=stage.error,
                enqueued_at=stage.enqueued_at,
                file_name=made.name if made else None,
                size_bytes=made.size_bytes if made else None,
                sha256=made.sha256 if made else None,
            )
        )
    return rows
