"""Queue wiring: which RQ queue a stage's job goes to, and putting it there.

Routing rules:
- `train` goes to a memory-tier queue (`farm:mem:<gb>`). A worker with M GB
  listens only to tiers ≤ M, so a job never lands on a worker too small for it.
- A gang (`train.workers: N > 1`, `jobs.gang`) goes to a gang queue per tier
  (`farm:gang:mem:<gb>`), which workers take before the tier queues: an idle
  worker completes a forming gang before it starts single-worker work.
- Stages after `train` need its artifacts: they go to the queue of the worker
  of the Mac that trained (`farm:host:<host id>`, `jobs.host_identity`), which
  every worker process on that Mac listens to, or back to the tier queue when
  FARM_SHARED_ARTIFACTS makes artifacts visible everywhere.

The DB says what is runnable (`jobs.lifecycle`); Redis only carries it. A job
here is one attempt's ticket: if Redis loses it, the reconciler pushes it again
from the DB, and a duplicate ticket is harmless because only one claim wins.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from jobs import settings
from jobs.rq_job import FOREIGN_FIELDS, FarmJob, fetch_job

log = logging.getLogger(__name__)

MEMORY_TIERS_GB = (0, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512)
# The only function a farm worker executes (see `worker.allowlist`).
STAGE_FUNCTION = "worker.stage_job.run_stage"
DOWNSTREAM_TIMEOUT_S = 6 * 3600
_LIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}
# Jobs read or re-pushed per pipeline round trip by a reconciler pass.
READ_BATCH = 1000


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


def gang_queue_name(min_memory_gb: float) -> str:
    """The queue of every rank of the gangs of one memory tier."""
    return f"farm:gang:mem:{tier_for(min_memory_gb)}"


def host_queue_name(host_id: str, min_memory_gb: float = 0) -> str:
    """The queue of one Mac's disk (`jobs.host_identity`) at one memory tier:
    every worker process on that Mac that can hold the tier listens to it,
    whatever its name."""
    return f"farm:host:{host_id}:mem:{tier_for(min_memory_gb)}"


def host_queue_names(host_id: str) -> list[str]:
    """Every tier's queue of one Mac."""
    return [f"farm:host:{host_id}:mem:{t}" for t in MEMORY_TIERS_GB]


def queues_for_worker(host_id: str, memory_gb: float) -> list[str]:
    """Its Mac's queues first (finish started runs before starting new ones),
    then the gangs' (complete a forming gang before starting single-worker
    work), then the tier queues; each the biggest tier this worker can hold
    down to the smallest."""
    tiers = [t for t in reversed(MEMORY_TIERS_GB) if t <= memory_gb]
    return (
        [f"farm:host:{host_id}:mem:{t}" for t in tiers]
        + [f"farm:gang:mem:{t}" for t in tiers]
        + [f"farm:mem:{t}" for t in tiers]
    )


def pinned_queue_name(host_id: str | None, min_memory_gb: float) -> str:
    """Where stages that need a run's artifacts go: the queue of the Mac whose
    disk holds them, or anywhere suitable when artifacts live in a shared folder."""
    if settings.shared_artifacts() is not None or not host_id:
        return tier_queue_name(min_memory_gb)
    return host_queue_name(host_id, min_memory_gb)


def stage_job_id(stage_id: int, attempt: int = 1) -> str:
    """One job id per attempt, so a new attempt never collides with the old job."""
    return f"stage-{stage_id}-a{attempt}"


def _queue(name: str, redis: Redis) -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer, job_class=FarmJob)


def push(redis: Redis, ticket: Ticket) -> None:
    """Push a stage's job onto a clean hash: fields RQ would keep from a forged
    hash of the same id (webhooks, say) would get the job refused."""
    redis.delete(FarmJob.key_for(ticket.job_id))
    _queue(ticket.queue, redis).enqueue_call(STAGE_FUNCTION, **_job_fields(ticket))


def _job_fields(ticket: Ticket) -> dict[str, Any]:
    """What RQ stores of a stage's job, whichever way it is pushed."""
    return {"args": (ticket.stage_id,), "job_id": ticket.job_id, "timeout": ticket.timeout_s,
            "result_ttl": 86400, "failure_ttl": 7 * 86400}  # fmt: skip


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


def push_again(redis: Redis, tickets: Sequence[Ticket]) -> list[int]:
    """The reconciler's re-push of jobs Redis lost or holds broken, pipelined in
    batches: each job's old hash and queue entries go, a clean job comes in
    their place. Redis failing leaves the rest for the next pass; returns the
    stage ids pushed."""
    pushed: list[int] = []
    try:
        # LREM walks the whole list: only for the entries that are really there.
        listed = _queue_members(redis, {t.queue for t in tickets})
    except RedisError as exc:
        log.warning("%s stages stay queued in the DB (Redis: %s)", len(tickets), exc)
        return pushed
    for start in range(0, len(tickets), READ_BATCH):
        batch = tickets[start : start + READ_BATCH]
        try:
            with redis.pipeline() as pipe:
                for ticket in batch:
                    pipe.delete(FarmJob.key_for(ticket.job_id))
                    if ticket.job_id in listed[ticket.queue]:
                        pipe.lrem(_queue(ticket.queue, redis).key, 0, ticket.job_id)
                for name in sorted({t.queue for t in batch}):
                    _queue(name, redis).enqueue_many(
                        [_enqueue_data(t) for t in batch if t.queue == name], pipeline=pipe
                    )
                pipe.execute()
        except RedisError as exc:
            log.warning("%s stages stay queued in the DB (Redis: %s)", len(tickets) - start, exc)
            break
        pushed += [t.stage_id for t in batch]
    return pushed


def _enqueue_data(ticket: Ticket) -> Any:
    return Queue.prepare_data(STAGE_FUNCTION, **_job_fields(ticket))


def stop_job(redis: Redis | None, job_id: str | None) -> None:
    """Stop a running job (RQ kills the horse's process group, the MLX child
    with it) or drop a waiting one. Best effort: the DB already says cancelled."""
    if redis is None or not job_id:
        return
    try:
        job = fetch_job(job_id, redis)
        status = job.get_status(refresh=True)
        if status == JobStatus.STARTED:
            send_stop_job_command(redis, job_id, serializer=JSONSerializer)
        elif status in _LIVE:
            job.cancel()
    except (NoSuchJobError, InvalidJobOperation, ValueError):  # gone, or unreadable
        pass
    except RedisError as exc:
        log.warning("could not stop job %s (Redis: %s)", job_id, exc)


# --- which queued stages Redis really carries (the reconciler's check) -------------


@dataclass(frozen=True)
class Carry:
    """A stage the DB says is queued, and the job that should carry it."""

    stage_id: int
    job_id: str
    queue: str


def carried(redis: Redis, wanted: Sequence[Carry], recheck_after_s: float = 1.0) -> set[str]:
    """The job ids of `wanted` that Redis carries: a job a farm worker will run
    for its stage (the stage runner, the stage's id, nothing foreign) that is
    either waiting in its queue's list or started by a worker that is alive and
    holds it. Anything else (no hash, a status that is garbage or ended, a hash
    that cannot be read, a queue entry lost in a restore, a worker gone) is not.

    The cost does not grow with the queue per stage: each queue's list is read
    once, job hashes and worker states in pipelined batches. A worker pops a job
    from its list a moment before marking it started; the jobs seen in that
    moment are looked at again together, after one short wait."""
    if not wanted:
        return set()
    in_queues = _queue_members(redis, {c.queue for c in wanted})
    states = _job_states(redis, wanted)
    held = _held_by_workers(redis)
    found, between = set(), []
    for c in wanted:
        status = states.get(c.job_id)
        if status == JobStatus.QUEUED and c.job_id in in_queues[c.queue]:
            found.add(c.job_id)
        elif status == JobStatus.STARTED and c.job_id in held:
            found.add(c.job_id)
        elif status in (JobStatus.QUEUED, JobStatus.STARTED):
            between.append(c)  # popped but not yet started, or started by a worker gone
    if between:
        time.sleep(recheck_after_s)
        in_queues = _queue_members(redis, {c.queue for c in between})
        states = _job_states(redis, between)
        held = _held_by_workers(redis)
        for c in between:
            status = states.get(c.job_id)
            if (status == JobStatus.QUEUED and c.job_id in in_queues[c.queue]) or (
                status == JobStatus.STARTED and c.job_id in held
            ):
                found.add(c.job_id)
    return found


def _queue_members(redis: Redis, names: Iterable[str]) -> dict[str, set[str]]:
    """Each queue's job ids, one read per queue."""
    names = sorted(names)
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.lrange(_queue(name, redis).key, 0, -1)
        lists = pipe.execute()
    return {name: {i.decode() for i in ids} for name, ids in zip(names, lists, strict=True)}


_STATE_FIELDS = ("status", "data", *FOREIGN_FIELDS)


def _job_states(redis: Redis, wanted: Sequence[Carry]) -> dict[str, JobStatus]:
    """The status of each job that a farm worker would run for its stage;
    jobs that are absent, unreadable or not the stage's own are left out."""
    states: dict[str, JobStatus] = {}
    for start in range(0, len(wanted), READ_BATCH):
        batch = wanted[start : start + READ_BATCH]
        with redis.pipeline(transaction=False) as pipe:
            for c in batch:
                pipe.hmget(FarmJob.key_for(c.job_id), _STATE_FIELDS)
            rows = pipe.execute()
        for c, row in zip(batch, rows, strict=True):
            status = _stage_job_status(c.stage_id, row)
            if status is not None:
                states[c.job_id] = status
    return states


def _stage_job_status(stage_id: int, row: list[bytes | None]) -> JobStatus | None:
    raw_status, data, *foreign = row
    if raw_status is None or data is None or any(foreign):
        return None
    try:
        status = JobStatus(raw_status.decode())
        try:
            data = zlib.decompress(data)
        except zlib.error:
            pass  # RQ stores small payloads uncompressed
        func, _, args, kwargs = JSONSerializer.loads(data)
    except Exception:  # a hash anyone could have written: unreadable is not carried
        return None
    if func != STAGE_FUNCTION or kwargs or len(args) != 1 or type(args[0]) is not int:
        return None
    if args[0] != stage_id:
        return None
    return status


def _held_by_workers(redis: Redis) -> set[str]:
    """Job ids the live workers are running (a dead worker's hash has expired)."""
    keys = sorted(Worker.all_keys(connection=redis))
    with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hget(key, "current_job")
        current = pipe.execute()
    return {job_id.decode() for job_id in current if job_id}
