"""Nothing read from Redis is code or an address (`jobs.rq_job.FarmJob`).

Each entry is forged directly in a private Redis the way anyone who can write
to it could: job hashes naming callbacks (a module of this test's own that
writes to a file when it is imported and when it is called) and webhooks (an
HTTP server of this test's own on 127.0.0.1 that records every request). RQ
would import and call those callbacks when it cleans a started-job registry
(a real worker at start, the Workers page when it counts) and would send the
webhooks when a worker fails a job, even one the farm refused. Here nothing is
imported, nothing is called, no request arrives, and a real worker goes on to
run a real stage.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.timeouts import UnixSignalDeathPenalty

from jobs.queue import STAGE_FUNCTION, tier_queue_name
from jobs.rq_job import fetch_job
from read.workers import queue_depths
from tests.support.farm import stages_of, submit
from tests.support.faults import PrivateRedis
from tests.support.processes import Workers, wait_until
from tests.support.spec_files import write_spec
from worker.allowlist import refuse_foreign_job

PROBE = "lorafarm_redis_probe"
ONLY_ADAPTER = {"quantize": [], "fuse": None, "eval": {"variants": ["adapter"]}}


@dataclass
class Probe:
    """A module that leaves a line in `log` when imported and when called."""

    folder: Path
    log: Path

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Probe]:
    folder, log = tmp_path / "probe", tmp_path / "probe.log"
    folder.mkdir()
    (folder / f"{PROBE}.py").write_text(
        "import pathlib\n"
        f"LOG = pathlib.Path({str(log)!r})\n"
        "with LOG.open('a') as f:\n"
        "    f.write('imported\\n')\n"
        "def record(*args, **kwargs):\n"
        "    with LOG.open('a') as f:\n"
        "        f.write('called\\n')\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    yield Probe(folder, log)
    sys.modules.pop(PROBE, None)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records each request it gets."""

    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got: list[str] = []

    class Record(BaseHTTPRequestHandler):
        def _record(self) -> None:
            got.append(f"{self.command} {self.path}")
            self.send_response(200)
            self.end_headers()

        do_GET = do_POST = _record

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Record)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Receiver(f"http://127.0.0.1:{server.server_address[1]}", got)
    server.shutdown()
    server.server_close()


@pytest.fixture
def private_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, farm_home: Path
) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    monkeypatch.setenv("REDIS_URL", server.url)
    yield server
    server.stop()


def webhooks(receiver: Receiver, name: str) -> str:
    return json.dumps(
        [
            {"url": f"{receiver.url}/{name}/failed", "job_status": "failed", "method": "POST"},
            {"url": f"{receiver.url}/{name}/finished", "job_status": "finished"},
        ]
    )


def forge(redis: Redis, job_id: str, queue: str, **fields: Any) -> None:
    """A job hash as RQ writes one for the farm's stage runner, with `fields` on top."""
    job = Job.create(
        STAGE_FUNCTION,
        args=(424242,),
        connection=redis,
        serializer=JSONSerializer,
        id=job_id,
        origin=queue,
    )
    mapping = {k: v for k, v in job.to_dict().items() if v is not None}
    redis.hset(f"rq:job:{job_id}", mapping={**mapping, **fields})
    redis.sadd("rq:queues", f"rq:queue:{queue}")


def forge_expired_started(redis: Redis, job_id: str, queue: str, **fields: Any) -> None:
    """A started job whose registry entry expired long ago: RQ's registry
    cleaning fails it and calls its failure callback."""
    forge(redis, job_id, queue, status="started", **fields)
    redis.zadd(f"rq:wip:{queue}", {f"{job_id}:forged-execution": 1})


def test_callbacks_and_webhooks_named_in_redis_are_dropped_when_a_job_is_read(
    private_redis: PrivateRedis, probe: Probe, receiver: Receiver
) -> None:
    redis = Redis.from_url(private_redis.url)
    hook = f"{PROBE}.record"
    forge(
        redis,
        "forged-all",
        tier_queue_name(0),
        status="queued",
        success_callback_name=hook,
        failure_callback_name=hook,
        stopped_callback_name=hook,
        webhooks=webhooks(receiver, "all"),
    )
    job = fetch_job("forged-all", redis)
    # What RQ does with a job when it ends, is stopped, or is found abandoned.
    job.execute_success_callback(UnixSignalDeathPenalty, "result")
    job.execute_failure_callback(UnixSignalDeathPenalty, ValueError, ValueError("x"), None)
    job.execute_stopped_callback(UnixSignalDeathPenalty)
    job.send_webhooks("finished")
    job.send_webhooks("failed", exc_string="x")
    assert probe.lines() == [] and PROBE not in sys.modules
    assert receiver.requests == []
    # The allow-list still sees what the job asked for, and refuses it.
    why = refuse_foreign_job(job) or ""
    assert why.startswith("callbacks or webhooks")
    for named in ("success_callback_name", "failure_callback_name", "stopped_callback_name"):
        assert f"{named}='{hook}'" in why
    assert f"{receiver.url}/all/failed" in why


def test_the_workers_page_counts_an_expired_entry_without_calling_its_callback(
    private_redis: PrivateRedis, probe: Probe
) -> None:
    redis = Redis.from_url(private_redis.url)
    queue = tier_queue_name(0)
    forge_expired_started(redis, "forged-wip", queue, failure_callback_name=f"{PROBE}.record")
    rows = queue_depths(redis)
    assert probe.lines() == [] and PROBE not in sys.modules
    # Counting cleaned the registry: the abandoned job is failed, as RQ does.
    assert rows == [{"queue": queue, "queued": 0, "running": 0, "deferred": 0, "failed": 1}]
    assert queue_depths(redis) == rows


def test_a_worker_runs_nothing_redis_names_and_goes_on_to_run_a_real_stage(
    private_redis: PrivateRedis,
    farm_home: Path,
    probe: Probe,
    receiver: Receiver,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    redis = Redis.from_url(private_redis.url)
    queue = tier_queue_name(0)
    hook = f"{PROBE}.record"
    # Cleaned by the worker's registry cleaning when it starts.
    forge_expired_started(redis, "forged-wip", queue, failure_callback_name=hook)
    # Waiting jobs the worker takes and refuses: failing them would send their webhooks.
    forge(redis, "forged-hooks", queue, status="queued", webhooks=webhooks(receiver, "hooks"))
    forge(
        redis,
        "forged-callbacks",
        queue,
        status="queued",
        success_callback_name=hook,
        failure_callback_name=hook,
        stopped_callback_name=hook,
        webhooks=webhooks(receiver, "callbacks"),
    )
    redis.rpush(f"rq:queue:{queue}", "forged-hooks", "forged-callbacks")

    pool = Workers(farm_home)
    try:
        path = os.pathsep.join(filter(None, [str(probe.folder), os.environ.get("PYTHONPATH")]))
        worker = pool.start("mac-a", env={"PYTHONPATH": path})
        experiment_id = submit(
            write_spec(tmp_path / "s.yaml", tiny_model, train={"iters": 4}, **ONLY_ADAPTER)
        )
        wait_until(
            lambda: all(s.status == "done" for s in stages_of(experiment_id)),
            timeout=300,
            what="the real run",
        )
        log = pool.log("mac-a")
        assert worker.poll() is None
    finally:
        pool.stop_all()
    assert probe.lines() == []
    assert receiver.requests == []
    for refused in ("forged-hooks", "forged-callbacks"):
        assert f"refused job {refused}" in log, log[-3000:]
    assert "lorafarm_redis_probe" in log  # the refusal says what the job named
    # The worker did clean the forged entry: the abandoned job is in the failed registry.
    assert redis.zscore(f"rq:failed:{queue}", "forged-wip") is not None


def test_malformed_worker_and_queue_entries_are_shown_not_crashing(
    private_redis: PrivateRedis,
) -> None:
    from read.workers import live_worker_names

    redis = Redis.from_url(private_redis.url)
    redis.sadd("rq:queues", "rq:queue:farm:mem:lots", f"rq:queue:{tier_queue_name(0)}")
    redis.rpush("rq:queue:farm:mem:lots", "not-a-job")
    redis.sadd("rq:workers", "rq:worker:mac-forged")
    redis.hset("rq:worker:mac-forged", mapping={"birth": "yesterday", "queues": "\x00", "x": "y"})
    depths = {row["queue"]: row for row in queue_depths(redis)}
    assert set(depths) == {"farm:mem:lots", tier_queue_name(0)}
    assert list(depths)[-1] == "farm:mem:lots"  # a malformed tier sorts last
    assert "mac-forged" in live_worker_names(redis)
