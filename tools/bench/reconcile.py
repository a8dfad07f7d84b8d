"""`farm bench --only reconcile`: one reconciler pass over N queued stages.

Seeds a database (SQLite under the benchmark's FARM_HOME, or DATABASE_URL)
with N runs whose train stages are queued, their jobs in a Redis of the
benchmark's own (a private `redis-server` on a spare port, so the figures do
not depend on what else the farm's Redis holds), then times passes of the
reconciler: one with every job carried (the pass every worker's reconciler
makes every 30 s), and one after the queue was flushed (every job pushed
again). It also counts the Redis commands of the first pass, which must not
grow with N per stage beyond one pipelined read.

    uv run python -m tools.bench.reconcile --stages 10000 100000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy import insert, text

from jobs import db
from jobs.processes import stop_process
from jobs.queue import STAGE_FUNCTION, tier_queue_name
from jobs.rq_job import FarmJob
from jobs.states import StageStatus
from tools.bench.environment import private_farm_environment

DEFAULT_STAGES = 10_000
_PUSH_BATCH = 2_000


def seed_queued_stages(redis: Redis, n: int, queue: str | None = None) -> list[int]:
    """N runs of one experiment, each with its train stage queued on `queue` (the
    smallest memory tier by default) and its job waiting there: bulk inserts and
    pipelined pushes, a few seconds for 10,000. Returns the stage ids."""
    queue = queue or tier_queue_name(0)
    with db.session_scope() as session:
        experiment = db.Experiment(
            name="reconcile-bench",
            fingerprint="bench",
            base_model="bench",
            dataset="bench",
            suite="bench",
            spec_yaml="",
            spec={},
        )
        session.add(experiment)
        session.flush()
        first = _next_id(session, "run")
        now = db.utcnow()
        session.execute(
            insert(db.Run),
            [
                {
                    "id": first + i,
                    "experiment_id": experiment.id,
                    "seed": i,
                    "fingerprint": "b",
                    "status": "queued",
                    "created_at": now,
                }
                for i in range(n)
            ],  # fmt: skip
        )
        stage_first = _next_id(session, "stage")
        ids = [stage_first + i for i in range(n)]
        session.execute(
            insert(db.Stage),
            [
                {
                    "id": sid,
                    "run_id": first + i,
                    "kind": "train",
                    "variant": "",
                    "params": {},
                    "status": StageStatus.QUEUED,
                    "attempt": 0,
                    "queue": queue,
                    "rq_job_id": f"stage-{sid}-a1",
                    "enqueued_at": now,
                }
                for i, sid in enumerate(ids)
            ],  # fmt: skip
        )
    rq_queue = Queue(queue, connection=redis, serializer=JSONSerializer, job_class=FarmJob)
    for start in range(0, n, _PUSH_BATCH):
        with redis.pipeline() as pipe:
            rq_queue.enqueue_many(
                [
                    Queue.prepare_data(
                        STAGE_FUNCTION,
                        args=(sid,),
                        job_id=f"stage-{sid}-a1",
                        timeout=3600,
                        result_ttl=86400,
                        failure_ttl=7 * 86400,
                    )
                    for sid in ids[start : start + _PUSH_BATCH]
                ],
                pipeline=pipe,
            )
            pipe.execute()
    return ids


def _next_id(session: Any, table: str) -> int:
    """The next free id of a table: explicit ids let the rows be bulk inserted."""
    return int(session.execute(text(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}")).scalar())


def command_calls(redis: Redis) -> dict[str, int]:
    """Redis commands served so far, by name (INFO commandstats)."""
    stats = redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def commands_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def bench_reconcile(sizes: list[int] | None = None) -> dict[str, Any]:
    """Seconds of one pass with every job carried, and of one pass after the
    queue was flushed, at each size; with the first pass's Redis commands."""
    from jobs.reconcile import reconcile_once

    results: dict[str, Any] = {}
    for n in sizes or [DEFAULT_STAGES]:
        with _private_farm() as redis:
            started = time.perf_counter()
            seed_queued_stages(redis, n)
            seeded_s = time.perf_counter() - started
            before = command_calls(redis)
            started = time.perf_counter()
            repairs = reconcile_once(redis)
            carried_s = time.perf_counter() - started
            commands = commands_between(before, command_calls(redis))
            commands.pop("info", None)
            assert not repairs, repairs.lines()
            redis.delete(f"rq:queue:{tier_queue_name(0)}")  # the queue entries are lost
            started = time.perf_counter()
            repairs = reconcile_once(redis)
            repush_s = time.perf_counter() - started
            assert len(repairs.repushed_stages) == n
        results[f"{n}"] = {
            "stages": n,
            "pass_all_carried_s": round(carried_s, 3),
            "pass_repushing_all_s": round(repush_s, 3),
            "seed_s": round(seeded_s, 3),
            "redis_commands": sum(commands.values()),
            "redis_lrange": commands.get("lrange", 0),
        }
    return results


def reconcile_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The `farm bench` table's rows for `bench_reconcile`'s results."""
    return [
        (
            f"reconcile pass, {r['stages']:,} queued stages: all carried / all re-pushed",
            f"{r['pass_all_carried_s']:.2f} s / {r['pass_repushing_all_s']:.2f} s"
            f" ({r['redis_commands']:,} Redis commands, {r['redis_lrange']} queue reads)",
            "",
        )
        for r in results.values()
    ]


@contextmanager
def _private_farm() -> Iterator[Redis]:
    """A temporary SQLite farm and a redis-server of its own, environment restored after."""
    import subprocess

    from tools.local.services import free_port, redis_server_binary

    with tempfile.TemporaryDirectory(prefix="farm-bench-reconcile-") as tmp:
        port = free_port()
        server = subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        home, url = Path(tmp) / "home", f"redis://127.0.0.1:{port}/0"
        try:
            home.mkdir()
            with private_farm_environment(home, url):
                db.migrate()
                redis = Redis.from_url(url)
                _wait_for(redis)
                yield redis
        finally:
            stop_process(server)


def _wait_for(redis: Redis) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            redis.ping()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, nargs="+", default=[DEFAULT_STAGES])
    print(json.dumps(bench_reconcile(parser.parse_args().stages), indent=2))


if __name__ == "__main__":
    main()
