"""Which RQ jobs a farm worker runs: only its own stage jobs.

Redis carries work; it is not trusted with code. RQ imports and calls whatever
function a job names, so anyone who can write to the farm's Redis could run
code on every Mac. The check here reads the job as data, before RQ imports or
calls anything, and the worker fails and logs whatever it refuses. Callbacks
and webhooks a job names are dropped when the farm reads it (`jobs.rq_job`);
a job that named any is refused all the same, and the log says what it named.
"""

from __future__ import annotations

from rq.job import Job

from jobs.queue import STAGE_FUNCTION


def refuse_foreign_job(job: Job) -> str | None:
    """Why a job must not run, or None for the farm's own stage jobs."""
    try:
        name, args, kwargs = job.func_name, job.args, job.kwargs
        foreign = [
            *getattr(job, "dropped", ()),  # what FarmJob dropped on reading the job
            job._success_callback_name,  # RQ keeps only the names until a callback runs
            job._failure_callback_name,
            job._stopped_callback_name,
            *(w.url for w in job.webhooks),
        ]
    except Exception as exc:  # undecodable job data is refused like any other stranger
        return f"job data cannot be read ({type(exc).__name__})"
    if name != STAGE_FUNCTION:
        return f"function {str(name)[:200]!r} is not the farm's stage runner"
    if len(args) != 1 or type(args[0]) is not int or kwargs:
        return f"arguments {str(args)[:200]} {str(kwargs)[:200]} are not one stage id"
    if any(foreign):
        return f"callbacks or webhooks {[f for f in foreign if f]} are not the farm's"
    return None
