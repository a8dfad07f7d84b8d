"""Which RQ jobs a farm worker runs: only its own stage jobs.

Redis carries work; it is not trusted with code. RQ imports and calls whatever
function a job names, so anyone who can write to the farm's Redis could run
code on every Mac. The check here reads the job as data, before RQ imports or
calls anything, and the worker fails and logs whatever it refuses.
"""

from __future__ import annotations

from rq.job import Job

from jobs.queue import STAGE_FUNCTION


def refuse_foreign_job(job: Job) -> str | None:
    """Why a job must not run, or None for the farm's own stage jobs."""
    try:
        name, args, kwargs = job.func_name, job.args, job.kwargs
        callbacks = [
            job._success_callback_name,  # RQ keeps only the names until a callback runs
            job._failure_callback_name,
            job._stopped_callback_name,
        ]
    except Exception as exc:  # undecodable job data is refused like any other stranger
        return f"job data cannot be read ({type(exc).__name__})"
    if name != STAGE_FUNCTION:
        return f"function {str(name)[:200]!r} is not the farm's stage runner"
    if len(args) != 1 or type(args[0]) is not int or kwargs:
        return f"arguments {str(args)[:200]} {str(kwargs)[:200]} are not one stage id"
    if any(callbacks):
        return f"callbacks {[c for c in callbacks if c]} are not the farm's"
    return None
