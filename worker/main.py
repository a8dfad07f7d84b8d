"""`farm worker`: an RQ worker that registers itself in the DB and heartbeats there.

On macOS the worker spawns its work horse instead of forking it (forking after
CoreFoundation is loaded crashes); the horse receives the Redis URL through its
environment, never on its command line, so a password stays out of `ps`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import warnings
from typing import Any

import psutil
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Worker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import SpawnWorker
from sqlmodel import select

from jobs import host_identity, lifecycle, logs, settings
from jobs import queue as farm_queue
from jobs.connection_errors import is_refused_credential
from jobs.db import Stage, WorkerRow, migrate, server_now, session_scope, utcnow
from jobs.queue import push_all
from jobs.reconcile import reconcile
from jobs.rq_job import FarmJob
from jobs.states import StageStatus, WorkerStatus
from worker.allowlist import refuse_foreign_job
from worker.reconciler import ReconcilerProcess

log = logging.getLogger(__name__)


def total_memory_gb(total_bytes: int | None = None) -> float:
    """This machine's RAM in GB (decimal, like the memory tiers)."""
    total = psutil.virtual_memory().total if total_bytes is None else total_bytes
    return round(total / 1e9, 1)


def metal_device_info() -> dict[str, Any]:
    """`mx.device_info()`, asked in a short-lived child process: the long-lived
    worker never loads Metal (only stage processes do), so it holds no GPU
    memory between stages. {} when MLX cannot answer."""
    code = "import json, mlx.core as mx; print(json.dumps(mx.device_info()))"
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        info = json.loads(result.stdout) if result.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def default_memory_gb(
    sys_platform: str = sys.platform,
    device_info: dict[str, Any] | None = None,
    total_bytes: int | None = None,
) -> float:
    """The memory a worker offers when --memory-gb is not given.

    On a Mac, MLX's recommended GPU working set: mlx-lm wires memory only up to
    `max_recommended_working_set_size`, well below total RAM, so offering all of
    RAM would take jobs the GPU cannot hold. Elsewhere MLX runs on the CPU and
    can use total RAM. `device_info` and `total_bytes` default to this machine's."""
    total = total_memory_gb(total_bytes)
    if sys_platform != "darwin":
        return total
    info = metal_device_info() if device_info is None else device_info
    working_set = info.get("max_recommended_working_set_size")
    if not isinstance(working_set, int) or working_set <= 0:
        return total  # MLX without Metal (or too old to say): RAM is the best guess
    return min(round(working_set / 1e9, 1), total)


def sysctl_value(key: str) -> str:
    """A sysctl value such as machdep.cpu.brand_string; '' where there is none."""
    try:
        result = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def chip_name(sys_platform: str = sys.platform, brand: str | None = None) -> str:
    """On a Mac the CPU brand sysctl reports (or `brand`), such as "Apple M2 Max";
    elsewhere the processor or machine name."""
    if sys_platform == "darwin":
        brand = sysctl_value("machdep.cpu.brand_string") if brand is None else brand
        return brand or platform.machine()
    return platform.processor() or platform.machine()


def mlx_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlx")
    except PackageNotFoundError:
        return ""


def register_worker(name: str, memory_gb: float, queues: list[str], host_id: str) -> None:
    with session_scope() as session:
        row = session.exec(select(WorkerRow).where(WorkerRow.name == name)).first()
        row = row or WorkerRow(name=name, host=socket.gethostname(), memory_gb=memory_gb)
        row.host, row.host_id, row.memory_gb = socket.gethostname(), host_id, memory_gb
        row.total_memory_gb = total_memory_gb()
        row.chip, row.mlx_version = chip_name(), mlx_version()
        row.platform = f"{platform.system()} {platform.machine()}"
        row.queues, row.status, row.current_stage_id = ",".join(queues), WorkerStatus.IDLE, None
        row.started_at = row.last_heartbeat = server_now(session)
        session.add(row)


def beat(name: str, status: str | None = None) -> None:
    """The worker is alive. A worker the reconciler marked lost (it was cut
    off) is idle or busy again as soon as it beats."""
    with session_scope() as session:
        row = session.exec(select(WorkerRow).where(WorkerRow.name == name)).first()
        if row is not None:
            row.last_heartbeat = server_now(session)
            if status:
                row.status = status
            elif row.status in (WorkerStatus.LOST, WorkerStatus.OFFLINE):
                row.status = WorkerStatus.BUSY if row.current_stage_id else WorkerStatus.IDLE
            session.add(row)


def on_horse_killed(job: Job, pid: int, status: int, rusage: Any) -> None:
    """The horse died without reporting (killed outside a cancel, e.g. by the
    OOM killer): the stage's attempt died, so it is retried."""
    stage_id = int(job.args[0])
    with session_scope() as session:
        stage = session.get(Stage, stage_id)
        if stage is None or stage.status != StageStatus.RUNNING or stage.worker != job.worker_name:
            return
        reason = f"work horse {pid} died (wait status {status}); the system may be out of memory"
        tickets = lifecycle.fail(session, stage_id, stage.attempt, reason, retry=True)
    push_all(job.connection, tickets)


def _is_redis_down(exc: BaseException) -> bool:
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError))


class FarmWorkerMixin:
    """What a farm worker adds to RQ's: DB heartbeats and the reconciler, the
    job allow-list, Redis blips that never kill it, and a clean restart under
    the same name after a crash."""

    # Jobs read from Redis carry no callbacks or webhooks (`jobs.rq_job`).
    job_class = FarmJob
    _last_db_beat = 0.0
    _reconciler: ReconcilerProcess | None = None

    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        now = time.monotonic()
        if now - self._last_db_beat >= settings.heartbeat_every_s():
            self._last_db_beat = now
            try:
                beat(self.name)  # type: ignore[attr-defined]
            except StopRequested:  # RQ's signal handler: a stop, not a DB hiccup
                raise
            except Exception as exc:  # a DB hiccup must not stop the worker
                log.warning("heartbeat to database failed: %s", exc)
        try:
            super().heartbeat(*args, **kwargs)  # type: ignore[misc]
        except Exception as exc:
            if not _is_redis_down(exc):
                raise
            log.warning("Redis unreachable (%s); still working", exc)
        # The periodic pass runs in a child process: the heartbeat only starts
        # it or looks whether it ended, so no pass can make this worker look lost.
        # The work horse beats too (as it starts a job); the worker reconciles.
        if self.is_horse:  # type: ignore[attr-defined]
            return
        if self._reconciler is None:
            self._reconciler = ReconcilerProcess()
        self._reconciler.ensure()

    def maintain_heartbeats(self, job: Job) -> None:
        # Called while the horse works: a Redis restart must not end the worker
        # (the horse and its stage go on; the DB heartbeat carries on above).
        try:
            super().maintain_heartbeats(job)  # type: ignore[misc]
        except Exception as exc:
            if not _is_redis_down(exc):
                raise
            self.heartbeat()

    def set_current_job_working_time(self, *args: Any, **kwargs: Any) -> None:
        # Bookkeeping in Redis while the horse works: never a reason to stop
        # watching the horse (it would be left running, unreaped).
        try:
            super().set_current_job_working_time(*args, **kwargs)  # type: ignore[misc]
        except Exception as exc:
            if not _is_redis_down(exc):
                raise

    def execute_job(self, job: Job, queue: Any) -> None:
        why = refuse_foreign_job(job)
        if why is None:
            super().execute_job(job, queue)  # type: ignore[misc]
            return
        log.error("refused job %s from queue %s: %s", job.id, queue.name, why)
        job.ended_at = utcnow()
        self.handle_job_failure(job, queue=queue, exc_string=f"refused by the farm worker: {why}")  # type: ignore[attr-defined]

    def register_birth(self) -> None:
        """A worker restarted under the same name after a crash starts at once:
        the dead process's registration (same host, process gone) is removed."""
        key = self.key  # type: ignore[attr-defined]
        redis = self.connection  # type: ignore[attr-defined]
        fields = redis.hgetall(key)
        if fields and not redis.hexists(key, "death"):
            host = fields.get(b"hostname", b"").decode()
            pid = int(fields.get(b"pid", b"0") or 0)
            if host == socket.gethostname() and (pid == os.getpid() or not psutil.pid_exists(pid)):
                redis.delete(key)
        super().register_birth()  # type: ignore[misc]


class FarmWorker(FarmWorkerMixin, Worker):
    pass


class FarmSpawnWorker(FarmWorkerMixin, SpawnWorker):
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
    return FarmSpawnWorker if settings.spawn_horse(sys.platform) else FarmWorker


def run_reconciler(redis: Redis) -> None:
    try:
        repairs = reconcile(redis)
    except StopRequested:
        raise
    except Exception as exc:  # Redis or the DB away: the next pass will try again
        log.warning("reconciler skipped: %s", exc)
        return
    for line in repairs.lines() if repairs else []:
        log.warning("reconciler: %s", line)


def wait_for_redis(redis: Redis, stopping: Any) -> None:
    """Back off until Redis answers again (1 s, doubling, at most 30 s). A
    credential Redis turns away (`farm workers revoke`) is no blip: it raises."""
    delay = 1.0
    while not stopping():
        try:
            redis.ping()
            return
        except Exception as exc:
            if is_refused_credential(exc):
                raise
            log.warning("Redis unreachable (%s); retrying in %g s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def run_worker(
    name: str,
    memory_gb: float,
    redis_url: str,
    burst: bool = False,
    advertise_address: str | None = None,
) -> None:
    logs.configure()
    # A Mac that joined with a token may not list Redis's clients (it would see
    # every other Mac's address); RQ then records its own address as unknown.
    warnings.filterwarnings("ignore", message="CLIENT LIST command not supported")
    os.environ["FARM_WORKER_NAME"] = name
    if advertise_address:  # the horse seats its gang ranks there (`worker.gang`)
        os.environ["FARM_ADVERTISE_ADDRESS"] = advertise_address
    os.environ["REDIS_URL"] = redis_url  # the spawned horse reads it from here
    migrate()
    host = host_identity.host_id()
    queues = farm_queue.queues_for_worker(host, memory_gb)
    register_worker(name, memory_gb, queues, host)
    # Bounded waits: a worker cut off from Redis gets an error to retry on,
    # not a read that blocks forever (RQ's blocking pop waits at most 10 s).
    redis = Redis.from_url(
        redis_url,
        health_check_interval=10,
        socket_connect_timeout=5,
        socket_timeout=15,
        socket_keepalive=True,
    )
    stopped = signals_stop_worker()
    log.info("worker %s on host %s: %g GB, queues %s", name, host, memory_gb, ", ".join(queues))
    try:
        # RQ's loop ends on errors it does not handle (Redis gone while a job
        # ran, for one); the worker itself goes on: wait for Redis, start again.
        while not stopped():
            stopped = signals_stop_worker()  # RQ's handlers replaced ours inside work()
            wait_for_redis(redis, stopped)
            run_reconciler(redis)
            worker = worker_class()(
                queues,
                connection=redis,
                name=name,
                serializer=JSONSerializer,
                job_class=FarmJob,
                # RQ waits on the queues for worker_ttl - 15 s at a time; the
                # DB heartbeat and the reconciler run between two waits.
                worker_ttl=15 + max(1, int(settings.heartbeat_every_s())),
                job_monitoring_interval=max(1, int(settings.heartbeat_every_s())),
                work_horse_killed_handler=on_horse_killed,
            )
            try:
                worker.work(burst=burst, logging_level="INFO", with_scheduler=False,
                            log_format=logs.FORMAT, date_format=logs.DATE_FORMAT)  # fmt: skip
            except Exception as exc:
                if not _is_redis_down(exc):
                    raise
            finally:
                if worker._reconciler is not None:  # the next round starts its own
                    worker._reconciler.stop()
            # RQ marks a stop asked for while idle only by its date.
            if burst or worker._stop_requested or worker._shutdown_requested_date:
                break
            time.sleep(1.0)
    finally:
        try:
            beat(name, status=WorkerStatus.OFFLINE)
        except Exception as exc:  # the DB away or this Mac shut out: say why we stop
            log.warning("could not mark %s offline: %s", name, exc)


def signals_stop_worker() -> Any:
    """RQ handles SIGINT/SIGTERM inside `work()`; between two `work()` calls
    the same signals must end the outer loop too."""
    stopping = {"now": False}

    def request_stop(signum: int, frame: Any) -> None:
        stopping["now"] = True
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return lambda: stopping["now"]
