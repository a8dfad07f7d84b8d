"""The farm under real faults: killed worker trees, Redis restarts and data loss,
same-name restarts, cancels, a full disk, and jobs nobody should run.

Each test injects the fault for real (SIGKILL by PID, a private redis-server
stopped and started again, FLUSHALL, a small tmpfs) and measures seconds to
detection and to the run finishing, written to FARM_FAULT_REPORT when set.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from sqlmodel import select

from jobs.db import Artifact, Metric, Stage, WorkerRow, session_scope
from jobs.host_identity import host_id
from jobs.queue import host_queue_name, tier_queue_name
from tests.support.farm import attempts_of, runner, stages_of, submit
from tests.support.faults import PrivateRedis, kill_tree, record_timing
from tests.support.processes import Workers, wait_until
from tests.support.receiver import Receiver, receiver
from tests.support.spec_files import write_spec
from tools.cli import app

LOST_AFTER_S = 6
# Long enough to kill mid-run, with a checkpoint every 10 iterations.
TRAIN = {"iters": 60, "save_every": 10, "steps_per_report": 1, "steps_per_eval": 1000,
         "val_batches": 1}  # fmt: skip
ONLY_ADAPTER = {"quantize": [], "fuse": None, "eval": {"variants": ["adapter"]}}


@pytest.fixture
def fast_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seconds instead of minutes, for the workers and for this process."""
    monkeypatch.setenv("FARM_LOST_AFTER_S", str(LOST_AFTER_S))
    monkeypatch.setenv("FARM_RECONCILE_EVERY_S", "2")


@pytest.fixture
def notify_hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A local receiver every worker started after this sends notifications to."""
    with receiver() as hook:
        monkeypatch.setenv("FARM_NOTIFY_URL", hook.url)
        yield hook


@pytest.fixture
def private_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, farm_home: Path
) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis", appendonly=True)
    server.start()
    monkeypatch.setenv("REDIS_URL", server.url)
    yield server
    server.stop()


@pytest.fixture
def private_workers(private_redis: PrivateRedis, farm_home: Path) -> Iterator[Workers]:
    pool = Workers(farm_home)
    yield pool
    pool.stop_all()


def train_of(experiment_id: int) -> Stage:
    return next(s for s in stages_of(experiment_id) if s.kind == "train")


def run_done(experiment_id: int) -> bool:
    return all(s.status == "done" for s in stages_of(experiment_id))


def checkpoint_reached(stage_id: int, iteration: int) -> bool:
    with session_scope() as session:
        found = session.exec(
            select(Artifact).where(
                Artifact.stage_id == stage_id,
                Artifact.kind == "checkpoint",
                Artifact.iteration >= iteration,  # type: ignore[operator]
            )
        ).first()
        return found is not None


def trained_iterations(stage_id: int, attempt: int) -> list[int]:
    with session_scope() as session:
        rows = session.exec(
            select(Metric.iteration).where(
                Metric.stage_id == stage_id,
                Metric.attempt == attempt,
                Metric.train_loss.is_not(None),  # type: ignore[union-attr]
            )
        ).all()
    return sorted(rows)


def last_trained(stage_id: int) -> int:
    """The last iteration the stage reported, read while nothing runs it."""
    done = trained_iterations(stage_id, 1)
    return max(done) if done else 0


def assert_resumed_without_retraining(stage_id: int, reached: int) -> tuple[int, int]:
    """The second attempt resumed at the first one's newest checkpoint and
    trained only what came after it; returns (checkpoint, iterations lost:
    those the dead attempt had reached past it)."""
    first, second = attempts_of(stage_id)[:2]
    assert first.outcome == "lost" and second.outcome == "done", (first, second)
    resumed = second.resumed_from
    assert resumed is not None and resumed >= TRAIN["save_every"]
    assert resumed % TRAIN["save_every"] == 0
    before = trained_iterations(stage_id, 1)
    after = trained_iterations(stage_id, 2)
    assert after[0] == resumed + 1 and after[-1] == TRAIN["iters"]
    assert before and max(before) <= resumed  # the dead attempt's rows past it are gone
    assert not set(after) & set(before)  # nothing trained twice
    with session_scope() as session:
        stage = session.get(Stage, stage_id)
        assert stage is not None and stage.resumed_from == resumed and stage.attempt == 2
    assert reached - resumed <= TRAIN["save_every"]
    return resumed, reached - resumed


def worker_row(name: str) -> WorkerRow | None:
    with session_scope() as session:
        return session.exec(select(WorkerRow).where(WorkerRow.name == name)).first()


def worker_status(name: str) -> str | None:
    row = worker_row(name)
    return row.status if row else None


# --- a Mac panics mid-training ---------------------------------------------------------


def test_killed_worker_tree_resumes_on_another_worker_from_the_shared_checkpoint(
    fast_faults: None,
    private_workers: Workers,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    notify_hook: Receiver,
) -> None:
    shared = tmp_path / "shared-artifacts"
    monkeypatch.setenv("FARM_SHARED_ARTIFACTS", str(shared))
    experiment_id = submit(write_spec(tmp_path / "s.yaml", tiny_model, train=TRAIN, **ONLY_ADAPTER))
    first = private_workers.start("mac-a")
    train = train_of(experiment_id)
    # Mid-way between the checkpoints at 20 and 30: the iterations after 20 are lost.
    wait_until(lambda: last_trained(train.id or 0) >= 25, timeout=240, what="iteration 25")

    fault_at = time.monotonic()
    kill_tree(first.pid)  # the worker, its horse and the MLX child, all at once
    reached = last_trained(train.id or 0)
    private_workers.start("mac-b")
    wait_until(
        lambda: attempts_of(train.id or 0)[0].outcome == "lost", timeout=60, what="loss detected"
    )
    detected = time.monotonic() - fault_at
    wait_until(lambda: run_done(experiment_id), timeout=300, what="the run to finish")
    finished = time.monotonic() - fault_at

    checkpoint, lost = assert_resumed_without_retraining(train.id or 0, reached)
    second = attempts_of(train.id or 0)[1]
    assert second.worker == "mac-b"
    assert "stopped sending heartbeats" in (attempts_of(train.id or 0)[0].reason or "")
    assert worker_status("mac-a") == "lost"
    # The end is announced once, by the surviving worker's reconciler, although
    # the killed worker's reconciler saw the run start: several passes later,
    # still one message.
    received = notify_hook.received
    wait_until(lambda: len(received) >= 1, timeout=60, what="the end to be announced")
    time.sleep(3 * 2 + 1)  # three more passes at FARM_RECONCILE_EVERY_S=2
    assert [m["event"] for m in received] == ["experiment.finished"], received
    assert f"(#{experiment_id}) finished" in received[0]["text"]
    record_timing("worker tree killed (shared artifacts)", detect_s=round(detected, 1),
                  finish_s=round(finished, 1), resumed_from=checkpoint,
                  iterations_lost=lost)  # fmt: skip


def test_same_name_restart_after_a_crash_starts_at_once_and_resumes_its_own_checkpoint(
    fast_faults: None, private_workers: Workers, tiny_model: Path, tmp_path: Path
) -> None:
    experiment_id = submit(write_spec(tmp_path / "s.yaml", tiny_model, train=TRAIN, **ONLY_ADAPTER))
    first = private_workers.start("mac-a")
    train = train_of(experiment_id)
    wait_until(lambda: last_trained(train.id or 0) >= 15, timeout=240, what="iteration 15")

    fault_at = time.monotonic()
    kill_tree(first.pid)
    reached = last_trained(train.id or 0)
    # Restarted at once, while Redis still holds the dead process's registration.
    again = private_workers.start("mac-a")
    wait_until(
        lambda: private_workers.log("mac-a").count("Listening on") >= 2,
        timeout=30,
        what="the restarted worker to listen",
    )
    started = time.monotonic() - fault_at
    assert "There exists an active worker" not in private_workers.log("mac-a")
    wait_until(lambda: run_done(experiment_id), timeout=300, what="the run to finish")
    finished = time.monotonic() - fault_at
    # No shared folder: the checkpoint is on mac-a's own disk, and mac-a resumed it.
    checkpoint, lost = assert_resumed_without_retraining(train.id or 0, reached)
    assert again.poll() is None
    record_timing("worker tree killed, same-name restart (own disk)",
                  listening_again_s=round(started, 1), finish_s=round(finished, 1),
                  resumed_from=checkpoint, iterations_lost=lost)  # fmt: skip


# --- Redis goes away --------------------------------------------------------------------


def test_redis_restart_mid_stage_leaves_the_worker_alive_and_the_run_finishes(
    fast_faults: None,
    private_redis: PrivateRedis,
    private_workers: Workers,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    # Train and the adapter eval: the eval waits in Redis as a deferred job across the restart.
    spec = write_spec(tmp_path / "s.yaml", tiny_model, train=TRAIN, **ONLY_ADAPTER)
    experiment_id = submit(spec)
    worker = private_workers.start("mac-a")
    train = train_of(experiment_id)
    wait_until(lambda: checkpoint_reached(train.id or 0, 10), timeout=240, what="training")

    fault_at = time.monotonic()
    private_redis.stop()
    time.sleep(4)
    private_redis.start()  # same port and folder; AOF brings the queues back
    wait_until(lambda: run_done(experiment_id), timeout=400, what="the run to finish")
    finished = time.monotonic() - fault_at
    assert worker.poll() is None, private_workers.log("mac-a")[-3000:]
    attempts = attempts_of(train.id or 0)
    assert [a.outcome for a in attempts] == ["done"]  # the stage never stopped
    record_timing("Redis down 4 s mid-training (AOF on)", finish_s=round(finished, 1),
                  attempts=len(attempts), iterations_lost=0)  # fmt: skip


def test_flushed_redis_with_a_run_queued_is_rebuilt_by_the_next_worker(
    fast_faults: None,
    private_redis: PrivateRedis,
    private_workers: Workers,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    experiment_id = submit(
        write_spec(tmp_path / "s.yaml", tiny_model, train={"iters": 6}, **ONLY_ADAPTER)
    )
    redis = Redis.from_url(private_redis.url)
    assert Queue(tier_queue_name(0), connection=redis, serializer=JSONSerializer).count == 1
    redis.flushall()  # what a restart without persistence does too
    fault_at = time.monotonic()
    private_workers.start("mac-a")  # nobody runs `farm reconcile` by hand
    wait_until(lambda: run_done(experiment_id), timeout=300, what="the run to finish")
    record_timing("FLUSHALL with a run queued", finish_s=round(time.monotonic() - fault_at, 1),
                  iterations_lost=0)  # fmt: skip


def test_farm_reconcile_gives_queued_stages_their_jobs_back_and_is_idempotent(
    private_redis: PrivateRedis, tiny_model: Path, tmp_path: Path
) -> None:
    experiment_id = submit(
        write_spec(tmp_path / "s.yaml", tiny_model, seeds=[1, 2], **ONLY_ADAPTER)
    )
    redis = Redis.from_url(private_redis.url)
    redis.flushall()
    first = runner.invoke(app, ["reconcile"])
    assert first.exit_code == 0, first.output
    assert "given their job back" in first.stdout
    queue = Queue(tier_queue_name(0), connection=redis, serializer=JSONSerializer)
    trains = [s for s in stages_of(experiment_id) if s.kind == "train"]
    assert sorted(queue.job_ids) == sorted(s.rq_job_id for s in trains)
    second = runner.invoke(app, ["reconcile"])
    assert second.exit_code == 0 and "nothing to repair" in second.stdout
    assert sorted(queue.job_ids) == sorted(s.rq_job_id for s in trains)


# --- cancel, disk, foreign jobs -----------------------------------------------------------


def test_cancel_leaves_the_worker_idle_at_once(
    private_workers: Workers, tiny_model: Path, tmp_path: Path
) -> None:
    long = {**TRAIN, "iters": 100_000, "save_every": 100_000}
    experiment_id = submit(write_spec(tmp_path / "s.yaml", tiny_model, train=long, **ONLY_ADAPTER))
    private_workers.start("mac-a")
    wait_until(lambda: worker_status("mac-a") == "busy", timeout=120, what="busy worker")
    result = runner.invoke(app, ["cancel", str(experiment_id)])
    assert result.exit_code == 0
    row = worker_row("mac-a")
    assert row is not None and row.status == "idle" and row.current_stage_id is None
    status = runner.invoke(app, ["status", "--json"])
    workers = {w["name"]: w for w in __import__("json").loads(status.stdout)["workers"]}
    assert workers["mac-a"]["status"] == "idle"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs: room for the tiny model's adapter, not for its fused copy."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_fuse_names_the_disk_and_removes_the_partial_output(
    private_workers: Workers,
    tiny_model: Path,
    tmp_path: Path,
    small_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FARM_SHARED_ARTIFACTS", str(small_disk))
    spec = write_spec(tmp_path / "s.yaml", tiny_model, train={"iters": 6, "save_every": 100})
    experiment_id = submit(spec)
    worker = private_workers.start("mac-a")
    wait_until(
        lambda: any(s.kind == "fuse" and s.status == "failed" for s in stages_of(experiment_id)),
        timeout=300,
        what="the fuse to fail",
    )
    fuse = next(s for s in stages_of(experiment_id) if s.kind == "fuse")
    assert (fuse.error or "").startswith("disk full"), fuse.error
    assert str(small_disk) in (fuse.error or "") and "bytes free" in (fuse.error or "")
    assert [a.outcome for a in attempts_of(fuse.id or 0)] == ["failed"]  # not retried
    assert not any(small_disk.rglob("fused/*.safetensors"))  # the partial copy is gone
    train = train_of(experiment_id)
    assert train.status == "done"  # what was written before stays
    assert worker.poll() is None


def test_jobs_that_are_not_stage_jobs_are_refused_and_the_worker_keeps_serving(
    private_redis: PrivateRedis,
    private_workers: Workers,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    redis = Redis.from_url(private_redis.url)
    marker = tmp_path / "pwned"
    made = tmp_path / "attacker-model"
    hostile = [
        (tier_queue_name(0), "os.system", (f"touch {marker}",)),
        (host_queue_name(host_id()), "subprocess.check_call", (["touch", str(marker)],)),
        (tier_queue_name(16), "tools.local.tiny_model.make_tiny_model", (str(made),)),
        (host_queue_name(host_id()), "worker.stage_job.run_stage", ("1; rm -rf /",)),
    ]
    for queue_name, func, args in hostile:
        Queue(queue_name, connection=redis, serializer=JSONSerializer).enqueue_call(func, args=args)
    worker = private_workers.start("mac-a")
    experiment_id = submit(
        write_spec(tmp_path / "s.yaml", tiny_model, train={"iters": 4}, **ONLY_ADAPTER)
    )
    wait_until(lambda: run_done(experiment_id), timeout=300, what="the real run")
    log = private_workers.log("mac-a")
    assert log.count("refused job") == len(hostile), log[-3000:]
    for queue_name, _, _ in hostile:
        assert f"from queue {queue_name}" in log
    assert not marker.exists() and not made.exists()
    assert worker.poll() is None


def test_a_stale_attempt_cannot_write_over_the_attempt_that_replaced_it(
    database: str, tiny_model: Path, tmp_path: Path, redis_url: str
) -> None:
    """On SQLite and PostgreSQL alike."""
    from jobs import lifecycle
    from worker.context import StaleAttempt, load_context, stage_write, update_stage

    experiment_id = submit(write_spec(tmp_path / "s.yaml", tiny_model, **ONLY_ADAPTER))
    stage_id = train_of(experiment_id).id or 0
    with session_scope() as session:
        assert lifecycle.claim(session, stage_id, "mac-a") == 1
    old = load_context(stage_id, 1)
    with session_scope() as session:  # mac-a is cut off; the reconciler gives it away
        stage = session.get(Stage, stage_id)
        assert stage is not None
        lifecycle.lose(session, stage, "worker mac-a stopped sending heartbeats")
    with session_scope() as session:
        assert lifecycle.claim(session, stage_id, "mac-b") == 2
    update_stage(load_context(stage_id, 2), progress=7)
    with pytest.raises(StaleAttempt):
        update_stage(old, progress=999)  # mac-a comes back and reports
    with pytest.raises(StaleAttempt):
        with stage_write(old) as session:
            session.add(Metric(stage_id=stage_id, run_id=old.run_id, iteration=1, attempt=1))
    with session_scope() as session:
        stage = session.get(Stage, stage_id)
        assert stage is not None and stage.progress == 7 and stage.worker == "mac-b"
        assert session.exec(select(Metric).where(Metric.stage_id == stage_id)).all() == []
        # mac-a's own end report changes nothing either.
        assert lifecycle.finish(session, stage_id, 1) == []
        assert session.get(Stage, stage_id).status == "running"  # type: ignore[union-attr]
    assert os.environ["REDIS_URL"] == redis_url


def test_farm_up_puts_queued_work_back_on_an_empty_redis(
    private_redis: PrivateRedis, tiny_model: Path, tmp_path: Path
) -> None:
    from tools.local.stack import farm_stack

    experiment_id = submit(write_spec(tmp_path / "s.yaml", tiny_model, **ONLY_ADAPTER))
    redis = Redis.from_url(private_redis.url)
    redis.flushall()  # the embedded Redis of the next `farm up` starts empty too
    with farm_stack(workers=0):
        queue = Queue(tier_queue_name(0), connection=redis, serializer=JSONSerializer)
        assert queue.job_ids == [train_of(experiment_id).rq_job_id]


def test_two_claims_of_one_stage_at_once_make_one_attempt(
    database: str, tiny_model: Path, tmp_path: Path, redis_url: str
) -> None:
    """Duplicate tickets (a re-push racing a pop) are harmless: one claim wins."""
    from concurrent.futures import ThreadPoolExecutor

    from jobs import lifecycle

    experiment_id = submit(write_spec(tmp_path / "s.yaml", tiny_model, **ONLY_ADAPTER))
    stage_id = train_of(experiment_id).id or 0

    def claim(worker: str) -> int | None:
        with session_scope() as session:
            return lifecycle.claim(session, stage_id, worker)

    with ThreadPoolExecutor(8) as pool:
        won = [a for a in pool.map(claim, [f"mac-{i}" for i in range(8)]) if a is not None]
    assert won == [1]
    assert len(attempts_of(stage_id)) == 1
