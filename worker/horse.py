"""`python -m worker.horse`: a spawned RQ work horse (macOS, or FARM_SPAWN_HORSE=1).

RQ's own SpawnWorker passes the Redis connection arguments, password included,
on the horse's command line; this one takes everything from its environment.
"""

from __future__ import annotations

import logging
import os
import sys

from redis import Redis
from rq import Queue, Worker
from rq.executions import Execution
from rq.serializers import JSONSerializer

from jobs import logs
from jobs.rq_job import FarmJob, fetch_job
from worker.allowlist import refuse_foreign_job

log = logging.getLogger("worker.horse")  # its module name, also when run as __main__


def main() -> None:
    logs.configure()
    redis = Redis.from_url(os.environ["REDIS_URL"])
    worker = Worker.find_by_key(
        os.environ["FARM_HORSE_WORKER_KEY"],
        connection=redis,
        serializer=JSONSerializer,
        job_class=FarmJob,
    )
    if worker is None:
        sys.exit(1)
    job = fetch_job(os.environ["FARM_HORSE_JOB"], redis)
    # Checked again here: the job was read from Redis anew after the worker's check.
    why = refuse_foreign_job(job)
    if why is not None:
        log.error("refused job %s: %s", job.id, why)
        sys.exit(1)
    queue = Queue(
        os.environ["FARM_HORSE_QUEUE"],
        connection=redis,
        serializer=JSONSerializer,
        job_class=FarmJob,
    )
    worker.execution = Execution.fetch(os.environ["RQ_EXECUTION_ID"], job.id, connection=redis)
    os.setpgrp()  # a stop command kills this group: the horse and its MLX child
    worker._is_horse = True
    worker.main_work_horse(job, queue)


if __name__ == "__main__":
    main()
