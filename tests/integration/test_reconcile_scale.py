"""The reconciler's repair of queued stages is total and scales (`jobs.reconcile`).

Against a private redis-server and a SQLite farm: a job forged `started` that
no live worker holds is pushed again and the stage runs; job states nobody can
read are repaired by `farm reconcile`, which exits 0; a pass over 10,000
queued stages reads each queue's list once (Redis's own command counts say
so); and a worker's heartbeat starts the periodic pass in a child process
instead of running it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from sqlmodel import select

from jobs.db import Stage, session_scope
from jobs.queue import tier_queue_name
from jobs.reconcile import reconcile_once
from jobs.rq_job import fetch_job
from tests.support.farm import runner, stages_of, submit
from tests.support.faults import PrivateRedis
from tests.support.processes import Workers, wait_until
from tests.support.spec_files import write_spec
from tools.bench.reconcile import command_calls, commands_between, seed_queued_stages
from tools.cli import app

ONLY_ADAPTER = {"quantize": [], "fuse": None, "eval": {"variants": ["adapter"]}}


@pytest.fixture
def private_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, farm_home: Path
) -> Iterator[Redis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    monkeypatch.setenv("REDIS_URL", server.url)
    yield Redis.from_url(server.url)
    server.stop()


def queue_ids(redis: Redis, queue: str) -> list[str]:
    return [i.decode() for i in redis.lrange(f"rq:queue:{queue}", 0, -1)]


def job_ids(stage_ids: list[int]) -> dict[int, str]:
    with session_scope() as session:
        rows = session.exec(select(Stage.id, Stage.rq_job_id).where(Stage.id.in_(stage_ids)))  # type: ignore[union-attr]
        return {sid: jid or "" for sid, jid in rows}


def test_a_job_forged_started_that_no_worker_holds_is_pushed_again_and_runs(
    private_redis: Redis, farm_home: Path, tiny_model: Path, tmp_path: Path
) -> None:
    redis = private_redis
    experiment_id = submit(
        write_spec(tmp_path / "s.yaml", tiny_model, train={"iters": 4}, **ONLY_ADAPTER)
    )
    train = next(s for s in stages_of(experiment_id) if s.kind == "train")
    job_id, queue = train.rq_job_id or "", train.queue or ""
    # Started, as far as Redis says, and off its queue; no worker runs it.
    redis.hset(f"rq:job:{job_id}", "status", "started")
    redis.lrem(f"rq:queue:{queue}", 0, job_id)

    # A live worker holding it would be running it: nothing to repair then.
    redis.sadd("rq:workers", "rq:worker:mac-z")
    redis.hset("rq:worker:mac-z", "current_job", job_id)
    assert not reconcile_once(redis, recheck_after_s=0.1)
    redis.delete("rq:worker:mac-z")  # the worker is gone: its registration expired

    result = runner.invoke(app, ["reconcile"])
    assert result.exit_code == 0, result.output
    assert "given their job back" in result.stdout
    assert queue_ids(redis, queue) == [job_id]
    assert fetch_job(job_id, redis).get_status() == "queued"

    pool = Workers(farm_home)
    try:
        worker = pool.start("mac-a")
        wait_until(
            lambda: all(s.status == "done" for s in stages_of(experiment_id)),
            timeout=300,
            what="the run",
        )
        assert worker.poll() is None
    finally:
        pool.stop_all()


def test_farm_reconcile_repairs_job_states_nobody_can_read(private_redis: Redis) -> None:
    redis = private_redis
    stage_ids = seed_queued_stages(redis, 5)
    jobs = job_ids(stage_ids)
    garbage_status, undecodable, no_data, not_the_stage, fine = (jobs[s] for s in stage_ids)
    redis.hset(f"rq:job:{garbage_status}", "status", "running-backwards")
    redis.hset(f"rq:job:{undecodable}", "data", b"\x00\xffnot a job")
    redis.hdel(f"rq:job:{no_data}", "data")
    redis.hset(f"rq:job:{not_the_stage}", "data", b'["os.system", null, ["id"], {}]')

    result = runner.invoke(app, ["reconcile"])
    assert result.exit_code == 0, result.output
    assert "given their job back" in result.stdout
    repaired = [garbage_status, undecodable, no_data, not_the_stage]
    assert sorted(queue_ids(redis, tier_queue_name(0))) == sorted(repaired + [fine])
    for stage_id, job_id in jobs.items():
        job = fetch_job(job_id, redis)
        assert job.get_status() == "queued" and job.func_name.endswith("run_stage")
        assert job.args == [stage_id]
    second = runner.invoke(app, ["reconcile"])
    assert second.exit_code == 0 and "nothing to repair" in second.stdout


def test_a_pass_over_10000_queued_stages_reads_each_queue_once(private_redis: Redis) -> None:
    redis = private_redis
    small, big = tier_queue_name(0), tier_queue_name(16)
    stage_ids = seed_queued_stages(redis, 5000, small) + seed_queued_stages(redis, 5000, big)
    jobs = job_ids([stage_ids[0], stage_ids[-1]])
    lost, popped = jobs[stage_ids[0]], jobs[stage_ids[-1]]
    redis.delete(f"rq:job:{lost}")  # Redis lost one job
    redis.lrem(f"rq:queue:{big}", 0, popped)  # and one queue entry

    before = command_calls(redis)
    repairs = reconcile_once(redis, recheck_after_s=0.1)
    used = commands_between(before, command_calls(redis))
    assert sorted(repairs.repushed_stages) == [stage_ids[0], stage_ids[-1]]
    # Each queue's list read once to check, once more before re-pushing, and the
    # list of the entry seen missing once after the short wait: never per stage.
    assert used.get("lrange", 0) <= 2 * 2 + 1, used
    # One pipelined read per job, whatever the length of the queues.
    assert sum(used.values()) < 1.2 * len(stage_ids), used
    assert lost in queue_ids(redis, small) and popped in queue_ids(redis, big)
    assert not reconcile_once(redis, recheck_after_s=0.1)


def test_a_worker_heartbeat_starts_the_periodic_pass_in_a_child_process(
    private_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rq.serializers import JSONSerializer

    import jobs.reconcile
    from worker.main import FarmWorker

    redis = private_redis
    [stage_id] = seed_queued_stages(redis, 1)
    redis.delete(f"rq:queue:{tier_queue_name(0)}")  # its job needs pushing again
    passes_here: list[str] = []
    monkeypatch.setattr(jobs.reconcile, "reconcile_once", lambda *a, **k: passes_here.append("x"))
    worker = FarmWorker(
        [tier_queue_name(0)], connection=redis, name="mac-hb", serializer=JSONSerializer
    )
    worker.heartbeat()
    assert worker._reconciler is not None and worker._reconciler.process is not None
    child = worker._reconciler.process
    assert child.args[:3] == [sys.executable, "-m", "jobs.reconcile"]
    assert child.args[3:] == ["--every", "30", "--parent", str(os.getpid())]
    # the child's first pass gives the stage its job back…
    expected = [job_ids([stage_id])[stage_id]]
    wait_until(lambda: queue_ids(redis, tier_queue_name(0)) == expected, timeout=120,
               what="the reconciler child's first pass")  # fmt: skip
    worker.heartbeat()  # …and it stays: one process for the worker's life
    assert worker._reconciler.process is child and child.poll() is None
    assert passes_here == []  # nothing ran in the worker's own process
    child.kill()
    child.wait()
    worker.heartbeat()  # a child that died is started again
    assert worker._reconciler.process is not child
    worker._reconciler.stop()
    assert worker._reconciler.process is None


def test_the_reconciler_child_ends_when_its_worker_is_killed(private_redis: Redis) -> None:
    import psutil

    # A stand-in worker: a shell that starts the child as the worker does, then
    # is killed with SIGKILL (no chance to stop its child).
    shell = subprocess.Popen(
        ["bash", "-c", f"{sys.executable} -m jobs.reconcile --every 1 --parent $$ & wait"],
        start_new_session=True,
    )
    (child,) = wait_until(lambda: psutil.Process(shell.pid).children(), timeout=60,
                          what="the reconciler child")  # fmt: skip
    os.kill(shell.pid, signal.SIGKILL)
    shell.wait()
    wait_until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE,
               timeout=30, what="the orphaned reconciler to end")  # fmt: skip
