"""The farm's RQ job class: a job read from Redis is data, never code or an address.

RQ keeps, in each job's hash, the import paths of callbacks to call when the
job ends (success, failure, stopped) and webhooks to POST to. It imports and
calls those callbacks not only in the worker that runs the job but also
whenever it cleans a started-job registry: at worker start, every ten minutes,
and each time the Workers page counts running jobs, in the web server. It
sends the webhooks from the worker's own loop, even for a job the farm refused
(a slow receiver once held a worker for 90 s). Anyone who can write to Redis
could so run code on every Mac and the web server, or make them call any
address.

The farm uses neither callbacks nor webhooks, so `FarmJob` drops whatever
Redis says about them when it reads a job, and keeps their names in
`dropped` so the allow-list can refuse the job and log what it carried. Every
queue, registry, worker and fetch of the farm uses this class (`job_class=`).
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import decode_redis_hash

# Fields of a job's hash that name code to import or an address to call.
FOREIGN_FIELDS = (
    "success_callback_name",
    "failure_callback_name",
    "stopped_callback_name",
    "webhooks",
)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


class FarmJob(Job):
    """An RQ job that never runs a callback and never sends a webhook."""

    # What Redis asked for and was dropped, as "field='value'" strings.
    dropped: tuple[str, ...] = ()

    def restore(self, raw_data: Any) -> Any:
        fields = decode_redis_hash(raw_data)
        dropped = []
        for name in FOREIGN_FIELDS:
            value = fields.pop(name, None)
            if value:
                dropped.append(f"{name}={_text(value)[:200]!r}")
        result = super().restore(fields)
        self.dropped = tuple(dropped)
        self._success_callback_name = None
        self._failure_callback_name = None
        self._stopped_callback_name = None
        self.webhooks = []
        return result

    # Even a job made some other way has nothing to call: RQ reaches every
    # callback through these properties and every webhook through send_webhooks.
    @property
    def success_callback(self) -> None:  # type: ignore[override]
        return None

    @property
    def failure_callback(self) -> None:  # type: ignore[override]
        return None

    @property
    def stopped_callback(self) -> None:  # type: ignore[override]
        return None

    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        return None


def fetch_job(job_id: str, redis: Redis) -> FarmJob:
    """A farm job read from Redis (raises rq's NoSuchJobError when there is none)."""
    job = FarmJob.fetch(job_id, connection=redis, serializer=JSONSerializer)
    assert isinstance(job, FarmJob)
    return job
