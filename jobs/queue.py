"""Queue wiring: stage rows in the DB become RQ jobs in Redis.

Routing rules:
- `train` goes to a memory-tier queue (`farm:mem:<gb>`). A worker with M GB
  listens only to tiers ≤ M, so a job never lands on a worker too small for it.
- Stages after `train` need its artifacts. When train succeeds, its RQ success
  callback enqueues them on the queue of the worker that trained
  (`farm:worker:<name>`), or back on the tier queue when FARM_SHARED_ARTIFACTS
  makes artifacts visible everywhere. Within that set, RQ dependencies carry
  the rest of the DAG (fuse → quantize → eval).
- When a stage fails its failure callback marks every descendant `skipped` and
  cancels their RQ jobs, so nothing waits forever on a dead parent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis import Redis
from rq import Callback, Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlmodel import Session, select

from jobs import settings
from jobs.dag import HOLD
from jobs.db import Experiment, Run, Stage, session_scope, utcnow

MEMORY_TIERS_GB = (0, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512)
STAGE_FUNCTION = "worker.stage_job.run_stage"
FINISHED = {"done", "failed", "skipped", "cancelled"}
DOWNSTREAM_TIMEOUT_S = 6 * 3600


def connect(url: str) -> Redis:
    return Redis.from_url(url)


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


def stage_job_id(stage_id: int) -> str:
    return f"stage-{stage_id}"


def _queue(name: str, redis: Redis) -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer)


def _callbacks() -> dict[str, Callback]:
    return {
        "on_success": Callback("jobs.queue.on_stage_success"),
        "on_failure": Callback("jobs.queue.on_stage_failure"),
    }


def enqueue_run(session: Session, run: Run, redis: Redis, spec: dict[str, Any]) -> None:
    """Put a run's train stage on its memory-tier queue."""
    train = session.exec(select(Stage).where(Stage.run_id == run.id, Stage.kind == "train")).one()
    resources = spec.get("resources", {})
    queue = tier_queue_name(float(resources.get("min_memory_gb", 0)))
    timeout = int(float(resources.get("timeout_hours", 24)) * 3600)
    _queue(queue, redis).enqueue_call(
        STAGE_FUNCTION,
        args=(train.id,),
        job_id=stage_job_id(train.id),
        timeout=timeout,
        result_ttl=86400,
        failure_ttl=7 * 86400,
        meta={"min_memory_gb": float(resources.get("min_memory_gb", 0))},
        **_callbacks(),
    )
    train.status, train.queue, train.rq_job_id, train.enqueued_at = (
        "queued",
        queue,
        stage_job_id(train.id),
        utcnow(),
    )
    session.add(train)


def pinned_queue_name(worker_name: str, min_memory_gb: float) -> str:
    """Where a run's later stages go: its trainer's own queue, or anywhere
    suitable when artifacts live in a shared folder."""
    if settings.shared_artifacts() is not None:
        return tier_queue_name(min_memory_gb)
    return worker_queue_name(worker_name)


def enqueue_downstream(parent_stage_id: int, worker_name: str, redis: Redis) -> list[int]:
    """Enqueue everything below a finished train stage, pinned to its worker.

    Stages held for the best checkpoint (and everything below them) stay
    waiting; `release_after_checkpoints` enqueues them later. Returns the
    stage ids enqueued."""
    with session_scope() as session:
        parent = session.get(Stage, parent_stage_id)
        assert parent is not None
        queue_name = pinned_queue_name(worker_name, float(parent.params.get("min_memory_gb", 0)))
        run_stages = session.exec(select(Stage).where(Stage.run_id == parent.run_id)).all()
        roots = [s for s in run_stages if s.depends_on == parent.id and not s.params.get(HOLD)]
        return enqueue_subtrees(session, run_stages, roots, queue_name, redis)


def enqueue_subtrees(
    session: Session,
    run_stages: Sequence[Stage],
    roots: Sequence[Stage],
    queue_name: str,
    redis: Redis,
) -> list[int]:
    """Enqueue `roots` (whose parents are done) and every waiting stage below
    them; RQ dependencies hold each child back until its parent job finishes."""
    by_parent: dict[int, list[Stage]] = {}
    for stage in run_stages:
        if stage.depends_on is not None:
            by_parent.setdefault(stage.depends_on, []).append(stage)
    queue = _queue(queue_name, redis)
    enqueued: list[int] = []
    frontier: list[tuple[Stage, str | None]] = [(root, None) for root in roots]
    while frontier:
        stage, depends_on = frontier.pop(0)
        if stage.status != "waiting":
            continue
        job_id = stage_job_id(stage.id or 0)
        queue.enqueue_call(
            STAGE_FUNCTION,
            args=(stage.id,),
            job_id=job_id,
            timeout=DOWNSTREAM_TIMEOUT_S,
            depends_on=depends_on,
            result_ttl=86400,
            failure_ttl=7 * 86400,
            **_callbacks(),
        )
        stage.status, stage.queue, stage.rq_job_id = "queued", queue_name, job_id
        stage.enqueued_at = utcnow()
        session.add(stage)
        enqueued.append(stage.id or 0)
        for child in by_parent.get(stage.id or -1, []):
            if not child.params.get(HOLD):
                frontier.append((child, job_id))
    return enqueued


def release_after_checkpoints(session: Session, run_id: int, redis: Redis | None) -> list[int]:
    """Once every checkpoint eval of a run has finished, point the held stages
    at the checkpoint with the best adherence and enqueue them; with no scored
    checkpoint they are skipped. Returns the stage ids enqueued."""
    from jobs.checkpoints import checkpoint_evals_finished, select_best_checkpoint

    run_stages = session.exec(select(Stage).where(Stage.run_id == run_id)).all()
    held = [s for s in run_stages if s.params.get(HOLD) and s.status == "waiting"]
    if not held or not checkpoint_evals_finished(session, run_id):
        return []
    run = session.get(Run, run_id)
    experiment = session.get(Experiment, run.experiment_id) if run else None
    assert run is not None and experiment is not None
    best = select_best_checkpoint(session, run_id, experiment.spec)
    if best is None or redis is None:
        for stage in held:
            stage.status, stage.finished_at = "skipped", utcnow()
            stage.error = "skipped: no checkpoint was scored"
            session.add(stage)
            skip_descendants(session, stage, redis, "skipped: no checkpoint was scored")
        return []
    train = next(s for s in run_stages if s.kind == "train")
    queue_name = pinned_queue_name(
        run.host or train.worker or "", float(train.params.get("min_memory_gb", 0))
    )
    return enqueue_subtrees(session, run_stages, held, queue_name, redis)


def descendants(stages: Iterable[Stage], stage_id: int) -> list[Stage]:
    by_parent: dict[int | None, list[Stage]] = {}
    for stage in stages:
        by_parent.setdefault(stage.depends_on, []).append(stage)
    found: list[Stage] = []
    frontier = list(by_parent.get(stage_id, []))
    while frontier:
        stage = frontier.pop()
        found.append(stage)
        frontier.extend(by_parent.get(stage.id, []))
    return found


def skip_descendants(session: Session, stage: Stage, redis: Redis | None, reason: str) -> None:
    run_stages = session.exec(select(Stage).where(Stage.run_id == stage.run_id)).all()
    for child in descendants(run_stages, stage.id or -1):
        if child.status in FINISHED:
            continue
        child.status, child.error, child.finished_at = "skipped", reason, utcnow()
        session.add(child)
        if redis is not None and child.rq_job_id:
            _cancel_job(redis, child.rq_job_id)


def update_run_status(session: Session, run_id: int) -> str:
    """A run is running while any stage is, failed if any failed, else done."""
    run = session.get(Run, run_id)
    assert run is not None
    statuses = [s.status for s in session.exec(select(Stage).where(Stage.run_id == run_id)).all()]
    if any(s in ("waiting", "queued", "running") for s in statuses):
        run.status = (
            "running" if any(s != "waiting" and s != "queued" for s in statuses) else "queued"
        )
    elif "cancelled" in statuses:
        run.status = "cancelled"
    elif "failed" in statuses:
        run.status = "failed"
    else:
        run.status = "done"
    if run.status in FINISHED and run.finished_at is None:
        run.finished_at = utcnow()
    session.add(run)
    return run.status


# --- RQ callbacks (run inside the worker's horse) ----------------------------


def on_stage_success(job: Job, connection: Redis, result: Any, *args: Any, **kwargs: Any) -> None:
    if not isinstance(result, dict) or result.get("kind") != "train":
        return
    enqueue_downstream(int(result["stage_id"]), str(result["worker"]), connection)
    with session_scope() as session:
        update_run_status(session, int(result["run_id"]))


def on_stage_failure(job: Job, connection: Redis, *args: Any, **kwargs: Any) -> None:
    stage_id = int(job.args[0])
    with session_scope() as session:
        stage = session.get(Stage, stage_id)
        if stage is None:
            return
        if stage.status not in FINISHED:
            stage.status, stage.finished_at = "failed", utcnow()
            stage.error = stage.error or _exc_tail(job)
            session.add(stage)
        skip_descendants(
            session, stage, connection, f"skipped: {stage.kind} {stage.variant} failed"
        )
        update_run_status(session, stage.run_id)


def _exc_tail(job: Job) -> str:
    try:
        result = job.latest_result()
        text = (result.exc_string if result else "") or ""
    except Exception:  # the failure is already being handled; keep what we have
        text = ""
    return text[-4000:] or "stage failed"


# --- cancel -------------------------------------------------------------------


def _cancel_job(redis: Redis, job_id: str) -> None:
    try:
        job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    except NoSuchJobError:
        return
    status = job.get_status(refresh=True)
    if status == "started":
        try:
            send_stop_job_command(redis, job_id, serializer=JSONSerializer)
        except InvalidJobOperation:
            pass
    elif status not in ("finished", "failed", "stopped", "canceled"):
        try:
            job.cancel()
        except InvalidJobOperation:
            pass


def cancel_stages(session: Session, stages: Iterable[Stage], redis: Redis) -> int:
    """Cancel unfinished stages: running ones are stopped (RQ kills the horse's
    process group, the MLX child with it), queued ones leave the queue."""
    count = 0
    run_ids: set[int] = set()
    for stage in stages:
        if stage.status in FINISHED:
            continue
        stage.status, stage.finished_at = "cancelled", utcnow()
        stage.error = stage.error or "cancelled by user"
        session.add(stage)
        run_ids.add(stage.run_id)
        count += 1
    session.commit()  # mark first, so a stage that is about to start sees it
    for stage in stages:
        if stage.status == "cancelled" and stage.rq_job_id:
            _cancel_job(redis, stage.rq_job_id)
    for run_id in run_ids:
        update_run_status(session, run_id)
    session.commit()
    return count
