"""Queue wiring: which RQ queue a stage's job goes to, and putting it there.

Routing rules:
- `train` goes to a memory-tier queue (`farm:mem:<gb>`). A worker with M GB
  listens only to tiers ≤ M, so a job never lands on a worker too small for it.
- Stages after `train` need its artifacts: they go to the queue of the worker
  that trained (`farm:worker:<name>`), or back to the tier queue when
  FARM_SHARED_ARTIFACTS makes artifacts visible everywhere.

The DB says what is runnable (`jobs.lifecycle`); Redis only carries it. A job
here is one attempt's ticket: if Redis loses it, the reconciler pushes it again
from the DB, and a duplicate ticket is harmless because only one claim wins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import settings

log = logging.getLogger(__name__)

MEMORY_TIERS_GB = (0, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512)
# The only function a farm worker executes (see `worker.allowlist`).
STAGE_FUNCTION = "worker.stage_job.run_stage"
DOWNSTREAM_TIMEOUT_S = 6 * 3600
_LIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


@dataclass(frozen=True)
class Ticket:
    """An RQ job to push for a stage the DB has marked queued."""

    stage_id: int
    queue: str
    job_id: str
    timeout_s: int


def tier_for(min_memory_gb: float) -> int:
    """The smallest tier that satisfies a job's memory need."""
    for tier in MEMORY_TIERS_GB:
        if tier >= min_memory_gb:
            return tier
    return MEMORY_TIERS_GB[-1]


def tier_queue_name(min_memory_gb: float) -> str:
    return f"farm:mem:{tier_for(min_memory_gb)}"


def worker_queue_name(worker_name: str) -> str:
    return f"farm:worker:{worker_name}"


def queues_for_worker(worker_name: str, memory_gb: float) -> list[str]:
    """Own queue first (finish started runs before starting new ones), then
    the biggest tier this worker can hold down to the smallest."""
    tiers = [t for t in MEMORY_TIERS_GB if t <= memory_gb]
    return [worker_queue_name(worker_name)] + [f"farm:mem:{t}" for t in reversed(tiers)]


def pinned_queue_name(worker_name: str | None, min_memory_gb: float) -> str:
    """Where stages that need a run's artifacts go: the queue of the worker
    holding them, or anywhere suitable when artifacts live in a shared folder."""
    if settings.shared_artifacts() is not None or not worker_name:
        return tier_queue_name(min_memory_gb)
    return worker_queue_name(worker_name)


def stage_job_id(stage_id: int, attempt: int = 1) -> str:
    """One job id per attempt, so a new attempt never collides with the old job."""
    return f"stage-{stage_id}-a{attempt}"


def _queue(name: str, redis: Redis) -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer)


def push(redis: Redis, ticket: Ticket) -> None:
    _queue(ticket.queue, redis).enqueue_call(
        STAGE_FUNCTION,
        args=(ticket.stage_id,),
        job_id=ticket.job_id,
        timeout=ticket.timeout_s,
        result_ttl=86400,
        failure_ttl=7 * 86400,
    )


def push_all(redis: Redis | None, tickets: Iterable[Ticket]) -> list[int]:
    """Push tickets after their DB rows are committed. Redis being down is not
    an error here: the stages stay queued in the DB and the reconciler pushes
    them when Redis is back. Returns the stage ids pushed."""
    pushed: list[int] = []
    for ticket in tickets:
        if redis is None:
            continue
        try:
            push(redis, ticket)
            pushed.append(ticket.stage_id)
        except RedisError as exc:
            log.warning("stage %s stays queued in the DB (Redis: %s)", ticket.stage_id, exc)
    return pushed


def job_is_live(redis: Redis, job_id: str | None) -> bool:
    """True when Redis still carries this job (waiting, deferred or running)."""
    if not job_id:
        return False
    try:
        status = Job.fetch(job_id, connection=redis, serializer=JSONSerializer).get_status()
    except NoSuchJobError:
        return False
    return status in _LIVE


def job_is_waiting_in(redis: Redis, job_id: str, queue: str) -> bool:
    """The job is live and, unless running, really in its queue's list (a
    restored Redis can hold the job hash without the queue entry).

    A worker pops a job from the list a moment before marking it started; a
    job seen in that moment is looked at again before it is called missing."""
    for recheck in (False, True):
        if recheck:
            time.sleep(1.0)
        if not job_is_live(redis, job_id):
            return False
        status = Job.fetch(job_id, connection=redis, serializer=JSONSerializer).get_status()
        if status != JobStatus.QUEUED or job_id in _queue(queue, redis).get_job_ids():
            return True
    return False


def stop_job(redis: Redis | None, job_id: str | None) -> None:
    """Stop a running job (RQ kills the horse's process group, the MLX child
    with it) or drop a waiting one. Best effort: the DB already says cancelled."""
    if redis is None or not job_id:
        return
    try:
        job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
        status = job.get_status(refresh=True)
        if status == JobStatus.STARTED:
            send_stop_job_command(redis, job_id, serializer=JSONSerializer)
        elif status in _LIVE:
            job.cancel()
    except (NoSuchJobError, InvalidJobOperation):
        pass
    except RedisError as exc:
        log.warning("could not stop job %s (Redis: %s)", job_id, exc)
