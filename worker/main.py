"""`farm worker`: an RQ worker that registers itself in the DB and heartbeats there.

On macOS the worker spawns its work horse instead of forking it (forking after
CoreFoundation is loaded crashes); the horse receives the Redis URL through its
environment, never on its command line, so a password stays out of `ps`.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from typing import Any

import psutil
from redis import Redis
from rq import Worker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import SpawnWorker
from sqlmodel import select

from jobs import queue as farm_queue
from jobs.db import Stage, WorkerRow, migrate, session_scope, utcnow

HEARTBEAT_EVERY_S = 5.0


def default_memory_gb() -> float:
    return round(psutil.virtual_memory().total / 1e9, 1)


def chip_name() -> str:
    if sys.platform == "darwin":
        try:
            import subprocess

            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True
            )
            return out.stdout.strip() or platform.machine()
        except OSError:
            return platform.machine()
    return platform.processor() or platform.machine()


def mlx_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlx")
    except PackageNotFoundError:
        return ""


def register_worker(name: str, memory_gb: float, queues: list[str]) -> None:
    with session_scope() as session:
        row = session.exec(select(WorkerRow).where(WorkerRow.name == name)).first()
        row = row or WorkerRow(name=name, host=socket.gethostname(), memory_gb=memory_gb)
        row.host, row.memory_gb = socket.gethostname(), memory_gb
        row.chip, row.mlx_version = chip_name(), mlx_version()
        row.platform = f"{platform.system()} {platform.machine()}"
        row.queues, row.status, row.current_stage_id = ",".join(queues), "idle", None
        row.started_at = row.last_heartbeat = utcnow()
        session.add(row)


def beat(name: str, status: str | None = None) -> None:
    with session_scope() as session:
        row = session.exec(select(WorkerRow).where(WorkerRow.name == name)).first()
        if row is not None:
            row.last_heartbeat = utcnow()
            if status:
                row.status = status
            session.add(row)


def on_horse_killed(job: Job, pid: int, status: int, rusage: Any) -> None:
    """The horse died without reporting (killed outside a cancel, e.g. by the
    OOM killer): record the stage as failed so nothing waits on it."""
    stage_id = int(job.args[0])
    with session_scope() as session:
        stage = session.get(Stage, stage_id)
        if stage is None or stage.status != "running":
            return
        stage.status, stage.finished_at = "failed", utcnow()
        stage.error = (
            f"work horse {pid} died (wait status {status}); the system may be out of memory"
        )
        session.add(stage)
        farm_queue.skip_descendants(session, stage, job.connection, "skipped: parent stage died")
        farm_queue.update_run_status(session, stage.run_id)


class DatabaseHeartbeat:
    """Mixin: RQ calls heartbeat() while idle and while watching a horse; we
    mirror it into the workers table, at most every few seconds."""

    _last_db_beat = 0.0

    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        super().heartbeat(*args, **kwargs)  # type: ignore[misc]
        now = time.monotonic()
        if now - self._last_db_beat >= HEARTBEAT_EVERY_S:
            self._last_db_beat = now
            try:
                beat(self.name)  # type: ignore[attr-defined]
            except Exception as exc:  # a DB hiccup must not stop the worker
                self.log.warning("heartbeat to database failed: %s", exc)  # type: ignore[attr-defined]


class FarmWorker(DatabaseHeartbeat, Worker):
    pass


class FarmSpawnWorker(DatabaseHeartbeat, SpawnWorker):
    def fork_work_horse(self, job: Job, queue: Any) -> None:
        os.environ["RQ_WORKER_ID"] = self.name
        os.environ["RQ_EXECUTION_ID"] = self.execution.id  # type: ignore[union-attr]
        os.environ["FARM_HORSE_JOB"] = job.id
        os.environ["FARM_HORSE_QUEUE"] = queue.name
        os.environ["FARM_HORSE_WORKER_KEY"] = self.key
        self._horse_pid = os.spawnv(
            os.P_NOWAIT, sys.executable, [sys.executable, "-m", "worker.horse"]
        )
        self.procline(f"Spawned {self._horse_pid} at {time.time()}")


def worker_class() -> type[Worker]:
    spawn = os.environ.get("FARM_SPAWN_HORSE", "1" if sys.platform == "darwin" else "0")
    return FarmSpawnWorker if spawn == "1" else FarmWorker


def run_worker(name: str, memory_gb: float, redis_url: str, burst: bool = False) -> None:
    os.environ["FARM_WORKER_NAME"] = name
    os.environ["REDIS_URL"] = redis_url  # the spawned horse reads it from here
    migrate()
    queues = farm_queue.queues_for_worker(name, memory_gb)
    register_worker(name, memory_gb, queues)
    redis = Redis.from_url(redis_url)
    worker = worker_class()(
        queues,
        connection=redis,
        name=name,
        serializer=JSONSerializer,
        worker_ttl=25,
        job_monitoring_interval=5,
        work_horse_killed_handler=on_horse_killed,
    )
    print(f"worker {name}: {memory_gb:g} GB, queues {', '.join(queues)}", flush=True)
    try:
        worker.work(burst=burst, logging_level="INFO", with_scheduler=False)
    finally:
        beat(name, status="offline")
