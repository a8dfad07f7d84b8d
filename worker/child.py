"""`python -m worker.child STAGE_ID ATTEMPT [--report-fd FD]`: stages' MLX work, in its own process.

Alone, the child runs its one stage and its exit code tells the horse how the
stage ended: 0 done, `EXIT_STALE` when a newer attempt owns the stage (nothing
to record), `EXIT_DISK_FULL` when the disk filled up (the last line says which
disk and how much was free), any other code a Python error in the stage.

With `--report-fd` it is a session: after the first stage it reads more
assignments from stdin (a JSON line each: stage, attempt, log) until stdin
closes, and reports each stage's code on that pipe as `STAGE CODE`. The horse
gives a session the eval stages of one run, so the model in memory serves
them all (`worker/weights.py`). A stage that fails reports its code and the
session goes on with a fresh load; only a crash of the whole process ends it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jobs import logs
from worker.context import StaleAttempt, exit_with_parent, load_context
from worker.diskspace import DiskFull, disk_full, remove_partial_outputs
from worker.stage_job import EXIT_DISK_FULL, EXIT_ERROR, EXIT_STALE
from worker.stages import stage_function
from worker.weights import Weights

log = logging.getLogger("worker.child")  # its module name, also when run as __main__


def run_one(stage_id: int, attempt: int, weights: Weights, *, alone: bool) -> int:
    """Run one stage; its exit code. A Python error raises when the stage runs
    alone (the traceback and exit code 1 are Python's own) and is printed and
    reported as `EXIT_ERROR` in a session, which goes on."""
    with logs.about_stage(stage_id, attempt):
        return _run_one(stage_id, attempt, weights, alone=alone)


def _run_one(stage_id: int, attempt: int, weights: Weights, *, alone: bool) -> int:
    ctx = load_context(stage_id, attempt)
    log.info("%s %s of run %s (seed %s)", ctx.kind, ctx.variant, ctx.run_id, ctx.seed)
    run = stage_function(ctx.kind)
    try:
        if ctx.kind == "eval":
            run(ctx, weights)  # the session's model, kept between its eval stages
        else:
            run(ctx)
    except StaleAttempt as exc:
        log.warning("stopping: %s; a newer attempt owns this stage", exc)
        return EXIT_STALE
    except Exception as exc:
        weights.forget()  # whatever failed may have left the model half-changed
        full = exc if isinstance(exc, DiskFull) else disk_full(exc, ctx.run_dir)
        if full is not None:
            remove_partial_outputs(ctx)
            print(full.line(), flush=True)  # the stage's error: its last line, as it is
            return EXIT_DISK_FULL
        if alone:
            raise
        log.exception("the stage failed")
        return EXIT_ERROR
    return 0


@contextmanager
def output_to(log_path: str) -> Iterator[None]:
    """Send this process's stdout and stderr (MLX's and mlx-lm's too) to a stage's log."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def serve(first: tuple[int, int], report_fd: int) -> int:
    """Run the first stage, then every stage the horse assigns, reporting each."""
    weights = Weights()
    with os.fdopen(report_fd, "w", buffering=1) as report:
        report.write(f"{first[0]} {run_one(*first, weights, alone=False)}\n")
        for line in sys.stdin:
            assignment: dict[str, Any] = json.loads(line)
            stage_id, attempt = int(assignment["stage"]), int(assignment["attempt"])
            with output_to(str(assignment["log"])):
                code = run_one(stage_id, attempt, weights, alone=False)
            report.write(f"{stage_id} {code}\n")
    return 0


def main(argv: list[str]) -> int:
    logs.configure()
    exit_with_parent()
    first = (int(argv[1]), int(argv[2]) if len(argv) > 2 and argv[2].isdigit() else 0)
    if "--report-fd" in argv:
        return serve(first, int(argv[argv.index("--report-fd") + 1]))
    return run_one(*first, Weights(), alone=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
