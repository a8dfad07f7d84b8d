"""The workers page: every worker the DB knows, what it runs, and the queue depths in Redis."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from redis import Redis
from rq import Queue, Worker
from rq.registry import DeferredJobRegistry, FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from sqlmodel import Session, select

from jobs import settings
from jobs.db import Experiment, Run, Stage, WorkerCredential, WorkerRow, server_now
from jobs.rq_job import FarmJob
from jobs.states import WorkerStatus
from read.stages import aware, format_duration


def worker_rows(session: Session, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or server_now(session)
    workers = session.exec(select(WorkerRow).order_by(WorkerRow.name)).all()
    stage_ids = [w.current_stage_id for w in workers if w.current_stage_id]
    current: dict[int, tuple[str, int]] = {}  # stage id → (what it is, run id)
    if stage_ids:
        query = (
            select(Stage, Run.seed, Experiment.name)
            .join(Run, Run.id == Stage.run_id)
            .join(Experiment, Experiment.id == Run.experiment_id)
            .where(Stage.id.in_(stage_ids))  # type: ignore[union-attr]
        )
        for stage, seed, name in session.execute(query):
            progress = f" {stage.progress}/{stage.total}" if stage.total else ""
            what = (
                stage.kind if stage.kind in ("train", "fuse") else f"{stage.kind} {stage.variant}"
            )
            current[stage.id] = (f"{what}{progress} · {name}, seed {seed}", stage.run_id)
    tokens = {c.name: c for c in session.exec(select(WorkerCredential)).all()}
    rows = []
    for w in workers:
        beat = aware(w.last_heartbeat)
        age = (now - beat).total_seconds() if beat else None
        status = w.status
        if status != WorkerStatus.OFFLINE and age is not None and age > settings.lost_after_s():
            status = WorkerStatus.LOST  # no heartbeat: crashed, asleep, or cut off the network
        rows.append(
            {
                "name": w.name,
                "host": w.host,
                "status": status,
                "chip": w.chip,
                "memory_gb": w.memory_gb,
                "total_memory_gb": w.total_memory_gb,
                "mlx": w.mlx_version,
                "platform": w.platform,
                "running": current.get(w.current_stage_id or -1, ("", None))[0],
                "run_id": current.get(w.current_stage_id or -1, ("", None))[1],
                "heartbeat_s": age,
                "jobs_done": w.jobs_done,
                "started_at": w.started_at,
                "queues": w.queues,
                "access": access_of(tokens.get(w.name)),
            }
        )
    return rows


def access_of(token: WorkerCredential | None) -> str:
    """How a worker reaches the farm: its own join token (`farm up --lan`), that
    token revoked (`farm workers revoke`), or URLs its user gave it."""
    if token is None:
        return "URLs"
    return "revoked" if token.revoked_at is not None else "join token"


def lost_note(rows: list[dict[str, Any]]) -> str:
    """A sentence on the workers that stopped beating, so a user sees them without
    reading the table: "mac-b (last heartbeat 10m 00s ago) is lost: …"."""
    lost = [r for r in rows if r["status"] == WorkerStatus.LOST and r["access"] != "revoked"]
    revoked = [r["name"] for r in rows if r["access"] == "revoked"]
    notes = []
    if lost:
        each = [f"{r['name']} (last heartbeat {format_duration(r['heartbeat_s'])} ago)"
                for r in lost]  # fmt: skip
        one = len(lost) == 1
        notes.append(
            f"{', '.join(each)} {'is' if one else 'are'} lost: crashed, asleep or off the network. "
            f"Stages {'it was' if one else 'they were'} running get a new attempt on another "
            f"worker; {'it rejoins' if one else 'each rejoins'} when it beats again."
        )
    if revoked:
        one = len(revoked) == 1
        notes.append(
            f"{', '.join(revoked)} {'was' if one else 'were'} shut out (`farm workers revoke`): "
            "Redis and the database refuse it, and the stages it ran get a new attempt on "
            "another worker. `farm workers add NAME` gives it a new join token."
        )
    return " ".join(notes)


def queue_depths(redis: Redis) -> list[dict[str, Any]]:
    """Each farm queue: jobs waiting, running, waiting on a dependency, failed.

    Counting a registry cleans it, and cleaning the started registry calls the
    failure callback of each expired entry: the registries read jobs as
    `FarmJob`, which has none, whatever Redis says."""
    rows = []
    queues = Queue.all(connection=redis, serializer=JSONSerializer, job_class=FarmJob)
    for queue in sorted(queues, key=_queue_key):
        kinds = (StartedJobRegistry, DeferredJobRegistry, FailedJobRegistry)
        try:
            running, deferred, failed = (
                kind(queue=queue, job_class=FarmJob).count for kind in kinds
            )
            queued: int | None = queue.count
        except Exception:  # an entry nobody can read is shown as such, not a crash
            queued = running = deferred = failed = None
        rows.append({"queue": queue.name, "queued": queued, "running": running,
                     "deferred": deferred, "failed": failed})  # fmt: skip
    return rows


def _queue_key(queue: Queue) -> tuple[int, int, str]:
    """Tier queues by their memory, then the rest by name (a queue name that is not
    the farm's own, even a malformed tier, sorts last rather than failing)."""
    name = queue.name
    tier = name.removeprefix("farm:mem:")
    if name.startswith("farm:mem:") and tier.isdigit():
        return (0, int(tier), name)
    return (1, 0, name)


def live_worker_names(redis: Redis) -> set[str]:
    """Workers registered in Redis right now (RQ drops them when their TTL lapses),
    read from the registration keys alone: a worker hash nobody can parse still
    names a worker and never breaks the page."""
    keys = Worker.all_keys(connection=redis)
    return {str(key).removeprefix(Worker.redis_worker_namespace_prefix) for key in keys}


def worker_status(row: dict[str, Any]) -> dict[str, Any]:
    """A worker as `farm status --json` prints it."""
    beat = row["heartbeat_s"]
    return {
        "name": row["name"],
        "host": row["host"],
        "status": str(row["status"]),
        "current_stage": row["running"] or None,
        "last_heartbeat_s_ago": None if beat is None else round(beat, 1),
        "memory_gb": row["memory_gb"],
        "total_memory_gb": row["total_memory_gb"],
        "jobs_done": row["jobs_done"],
        "access": row["access"],
    }
