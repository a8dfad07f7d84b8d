"""The farm with real parts: Redis through RQ, SQLite, `farm worker` processes
running real mlx-lm stages on the tiny model."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
from redis import Redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer
from sqlmodel import select
from typer.testing import CliRunner

from jobs.db import Artifact, EvalResult, Experiment, Metric, Stage, WorkerRow, session_scope
from jobs.host_identity import host_id
from jobs.queue import host_queue_name, stage_job_id, tier_queue_name
from read.leaderboard import leaderboard
from tests.support.farm import all_finished, attempts_of, stage_children, stages_of, submit
from tests.support.processes import Workers, wait_until
from tests.support.spec_files import write_spec
from tools.cli import app
from tools.local.services import free_port

runner = CliRunner()
LONG_TRAIN = {
    "iters": 100_000,
    "steps_per_report": 1,
    "steps_per_eval": 100_000,
    "save_every": 100_000,
}


def test_submit_writes_rows_and_enqueues_only_train(
    farm_home: Path, redis_url: str, tiny_model: Path, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tiny_model, seeds=[1, 2, 3])
    experiment_id = submit(spec)
    stages = stages_of(experiment_id)
    assert len(stages) == 3 * 6
    trains = [s for s in stages if s.kind == "train"]
    assert {s.status for s in trains} == {"queued"}
    assert {s.status for s in stages if s.kind != "train"} == {"waiting"}
    queue = Queue(
        tier_queue_name(0), connection=Redis.from_url(redis_url), serializer=JSONSerializer
    )
    assert sorted(queue.job_ids) == sorted(stage_job_id(s.id or 0) for s in trains)


def test_refused_submission_writes_nothing(
    farm_home: Path, redis_url: str, tiny_model: Path, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "bad.yaml", tiny_model, train={"iters": -5, "learning_rat": 1e-4})
    result = runner.invoke(app, ["submit", str(spec)])
    assert result.exit_code == 2
    assert "train.iters" in result.stderr and "learning_rat" in result.stderr
    with session_scope() as session:
        assert session.exec(select(Experiment)).all() == []
    assert Redis.from_url(redis_url).keys("rq:job:*") == []


def test_run_end_to_end_on_one_worker(workers: Workers, tiny_model: Path, tmp_path: Path) -> None:
    experiment_id = submit(write_spec(tmp_path / "spec.yaml", tiny_model))
    workers.start("w1")
    wait_until(lambda: all_finished(experiment_id), timeout=400, what="the run to finish")
    stages = stages_of(experiment_id)
    assert {s.status for s in stages} == {"done"}, [(s.kind, s.variant, s.error) for s in stages]
    # Pinned: every stage ran on the worker that trained.
    assert {s.worker for s in stages} == {"w1"}
    with session_scope() as session:
        metrics = session.exec(select(Metric)).all()
        assert {m.iteration for m in metrics if m.train_loss is not None} == {2, 4, 6}
        assert any(m.val_loss is not None for m in metrics)
        kinds = {(a.kind, a.variant) for a in session.exec(select(Artifact))}
        assert {
            ("adapter", "adapter"),
            ("fused", "fused"),
            ("quantized", "q8"),
            ("checkpoint", "ckpt-0000003"),
            ("checkpoint", "ckpt-0000006"),
        } <= kinds
        evals = session.exec(select(EvalResult)).all()
        assert len(evals) == 3 * 27 and all(e.label for e in evals)
        assert {e.stop_reason for e in evals} <= {"eos", "stop", "max_tokens"}
        assert all(e.hit_max_tokens == (e.stop_reason == "max_tokens") for e in evals)
        rows = leaderboard(session)
        row = session.exec(select(WorkerRow).where(WorkerRow.name == "w1")).one()
        assert row.jobs_done == 6
    assert {r.variant for r in rows} == {"adapter", "fused", "q8"}


def test_two_workers_share_one_queue_without_running_a_stage_twice(
    workers: Workers, tiny_model: Path, tmp_path: Path
) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml",
        tiny_model,
        seeds=[1, 2, 3],
        quantize=[],
        eval={"variants": ["adapter"]},
        fuse=None,
    )
    experiment_id = submit(spec)
    workers.start("a")
    # Another Mac: its own FARM_HOME (its own disk and host id), the same farm.
    workers.start("b", env={"FARM_HOME": str(tmp_path / "mac-b")})
    wait_until(lambda: all_finished(experiment_id), timeout=400, what="three runs")
    stages = stages_of(experiment_id)
    assert {s.status for s in stages} == {"done"}
    assert {s.worker for s in stages if s.kind == "train"} == {"a", "b"}
    with session_scope() as session:
        for stage in stages:
            if stage.kind == "eval":
                rows = session.exec(select(EvalResult).where(EvalResult.stage_id == stage.id)).all()
                assert len(rows) == 27  # scored once, not twice
                train = next(s for s in stages if s.run_id == stage.run_id and s.kind == "train")
                assert stage.worker == train.worker  # eval pinned to the artifacts
            else:
                its = [
                    m.iteration
                    for m in session.exec(
                        select(Metric).where(
                            Metric.stage_id == stage.id, Metric.train_loss.is_not(None)
                        )
                    )
                ]  # type: ignore[union-attr]
                assert sorted(its) == [2, 4, 6]
    # Each stage ran once: one attempt, on the worker the stage row names. (A
    # job can run more than one stage: an eval session takes its run's next
    # evals, and their own tickets then find nothing to claim.)
    for stage in stages:
        assert [(a.attempt, a.worker) for a in attempts_of(stage.id or 0)] == [(1, stage.worker)]


def rq_worker(name: str) -> Worker | None:
    """RQ's record of a running worker, once it has registered."""
    redis = Redis.from_url(os.environ["REDIS_URL"])
    return next((w for w in Worker.all(connection=redis) if w.name == name), None)


def test_jobs_never_land_on_a_worker_with_too_little_memory(
    workers: Workers, tiny_model: Path, tmp_path: Path
) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml",
        tiny_model,
        resources={"min_memory_gb": 48},
        quantize=[],
        fuse=None,
        eval={"variants": ["adapter"]},
    )
    experiment_id = submit(spec)
    workers.start("small", memory_gb=16)
    # The small worker is up and polling, and the queue the job waits in is
    # not one it listens to: it cannot take the job, however long it polls.
    small = wait_until(lambda: rq_worker("small"), timeout=60, what="the small worker")
    (train,) = [s for s in stages_of(experiment_id) if s.kind == "train"]
    assert train.status == "queued" and train.queue not in small.queue_names()
    assert Queue(train.queue or "", connection=small.connection).get_job_ids() == [train.rq_job_id]
    workers.start("big", memory_gb=64)
    wait_until(lambda: all_finished(experiment_id), timeout=300, what="the big worker")
    assert {s.worker for s in stages_of(experiment_id)} == {"big"}


def test_a_crashing_stage_is_recorded_and_the_worker_keeps_serving(
    workers: Workers, tiny_model: Path, tmp_path: Path
) -> None:
    broken_model = tmp_path / "model-that-vanishes"
    shutil.copytree(tiny_model, broken_model)
    doomed = submit(write_spec(tmp_path / "doomed.yaml", broken_model))
    (broken_model / "model.safetensors").unlink()  # gone after validation: load fails in the stage
    healthy = submit(
        write_spec(
            tmp_path / "ok.yaml", tiny_model, quantize=[], eval={"variants": ["adapter"]}, fuse=None
        )
    )
    workers.start("w1")
    wait_until(
        lambda: all_finished(doomed) and all_finished(healthy), timeout=400, what="both experiments"
    )
    train, *rest = stages_of(doomed)
    assert train.status == "failed"
    assert "exited with code" in (train.error or "") and "safetensors" in (train.error or "")
    assert {s.status for s in rest} == {"skipped"}
    assert {s.status for s in stages_of(healthy)} == {"done"}
    assert workers.processes["w1"].poll() is None


def test_a_killed_stage_without_retries_fails_with_its_cause_and_dependents_are_skipped(
    workers: Workers, tiny_model: Path, tmp_path: Path
) -> None:
    experiment_id = submit(
        write_spec(tmp_path / "spec.yaml", tiny_model, train=LONG_TRAIN, resources={"retries": 0})
    )
    workers.start("w1")
    train = stages_of(experiment_id)[0]
    (child,) = wait_until(lambda: stage_children(train.id or 0), timeout=120, what="stage child")
    child.send_signal(signal.SIGKILL)  # what the out-of-memory killer does
    wait_until(lambda: all_finished(experiment_id), timeout=60, what="failure to be recorded")
    train, *rest = stages_of(experiment_id)
    assert train.status == "failed" and "SIGKILL" in (train.error or "")
    assert {s.status for s in rest} == {"skipped"}
    assert workers.processes["w1"].poll() is None


def test_progress_rows_appear_while_training(
    workers: Workers, tiny_model: Path, tmp_path: Path
) -> None:
    experiment_id = submit(write_spec(tmp_path / "spec.yaml", tiny_model, train=LONG_TRAIN))
    workers.start("w1")
    train_id = stages_of(experiment_id)[0].id

    def reported() -> list[Metric]:
        with session_scope() as session:
            return list(
                session.exec(
                    select(Metric).where(
                        Metric.stage_id == train_id, Metric.train_loss.is_not(None)
                    )
                )
            )  # type: ignore[union-attr]

    rows = wait_until(lambda: len(reported()) >= 3 and reported(), timeout=180, what="reports")
    with session_scope() as session:
        stage = session.get(Stage, train_id)
        assert stage is not None and stage.status == "running"
        assert stage.progress and stage.progress >= 3 and stage.total == 100_000
    assert all(r.tokens_per_sec and r.learning_rate and r.peak_memory_gb is not None for r in rows)
    runner.invoke(app, ["cancel", str(experiment_id)])


def test_cancel_stops_the_running_stage_within_seconds(
    workers: Workers, tiny_model: Path, tmp_path: Path
) -> None:
    experiment_id = submit(write_spec(tmp_path / "spec.yaml", tiny_model, train=LONG_TRAIN))
    workers.start("w1")
    train_id = stages_of(experiment_id)[0].id or 0
    (child,) = wait_until(lambda: stage_children(train_id), timeout=120, what="stage child")
    result = runner.invoke(app, ["cancel", str(experiment_id)])
    assert result.exit_code == 0, result.output
    wait_until(
        lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE,
        timeout=10,
        what="the child to die",
    )
    assert {s.status for s in stages_of(experiment_id)} == {"cancelled"}
    # The worker survives and takes the next job.
    follow_up = submit(
        write_spec(
            tmp_path / "next.yaml",
            tiny_model,
            quantize=[],
            fuse=None,
            eval={"variants": ["adapter"]},
        )
    )
    wait_until(lambda: all_finished(follow_up), timeout=300, what="the next job")
    assert {s.status for s in stages_of(follow_up)} == {"done"}


def test_spawned_horse_keeps_the_redis_password_off_every_command_line(
    farm_home: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "s3cret-farm-password"
    port = free_port()
    server = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            password,
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    monkeypatch.setenv("REDIS_URL", url)
    pool = Workers(farm_home)
    try:
        wait_until(lambda: _pings(url), timeout=10, what="private redis")
        experiment_id = submit(write_spec(tmp_path / "spec.yaml", tiny_model, train=LONG_TRAIN))
        pool.start("spawner", env={"FARM_SPAWN_HORSE": "1"})
        train_id = stages_of(experiment_id)[0].id or 0
        wait_until(lambda: stage_children(train_id), timeout=120, what="stage child")
        commands = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
        assert any("worker.horse" in c for c in commands)  # the horse really was spawned
        assert not [c for c in commands if password in c]
        runner.invoke(app, ["cancel", str(experiment_id)])
    finally:
        pool.stop_all()
        server.send_signal(signal.SIGTERM)
        server.wait()


def _pings(url: str) -> bool:
    try:
        return bool(Redis.from_url(url).ping())
    except Exception:
        return False


def test_worker_registers_itself_with_its_machine(
    workers: Workers, redis_url: str, farm_home: Path
) -> None:
    workers.start("reg", memory_gb=24)

    def row() -> WorkerRow | None:
        with session_scope() as session:
            return session.exec(select(WorkerRow).where(WorkerRow.name == "reg")).first()

    found = wait_until(row, timeout=60, what="worker row")
    assert found.memory_gb == 24 and found.mlx_version and found.host == os.uname().nodename
    assert found.total_memory_gb == round(psutil.virtual_memory().total / 1e9, 1)
    # Its Mac's queue first: the host id kept in its FARM_HOME, not its name.
    assert found.host_id == host_id(farm_home) and found.host_id.startswith(os.uname().nodename[:8])
    assert found.queues.split(",")[0] == host_queue_name(found.host_id, 24)
    assert "farm:mem:32" not in found.queues and "farm:mem:24" in found.queues
