"""`python -m worker.child STAGE_ID ATTEMPT`: run one stage's MLX work in its own process.

The exit code tells the horse how the stage ended: 0 done, `EXIT_STALE` when a
newer attempt owns the stage (nothing to record), `EXIT_DISK_FULL` when the
disk filled up (the last line says which disk and how much was free), any
other code a Python error in the stage's own code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from worker.context import StageContext, StaleAttempt, exit_with_parent, load_context
from worker.diskspace import DiskFull, disk_full, remove_partial_outputs
from worker.stage_job import EXIT_DISK_FULL, EXIT_STALE


def stage_runner(kind: str) -> Callable[[StageContext], None]:
    # Imported on demand: each pulls in MLX and mlx-lm.
    if kind == "train":
        from worker.train import run_train

        return run_train
    if kind == "fuse":
        from worker.fuse import run_fuse

        return run_fuse
    if kind == "quantize":
        from worker.quantize import run_quantize

        return run_quantize
    if kind == "eval":
        from worker.eval import run_eval

        return run_eval
    raise SystemExit(f"unknown stage kind {kind!r}")


def main(argv: list[str]) -> int:
    exit_with_parent()
    ctx = load_context(int(argv[1]), int(argv[2]) if len(argv) > 2 else 0)
    print(
        f"stage {ctx.stage_id}: {ctx.kind} {ctx.variant} of run {ctx.run_id} "
        f"(seed {ctx.seed}, attempt {ctx.attempt})",
        flush=True,
    )
    run = stage_runner(ctx.kind)
    try:
        run(ctx)
    except StaleAttempt as exc:
        print(f"stopping: {exc}; a newer attempt owns this stage", flush=True)
        return EXIT_STALE
    except BaseException as exc:
        full = exc if isinstance(exc, DiskFull) else disk_full(exc, ctx.run_dir)
        if full is None:
            raise
        remove_partial_outputs(ctx)
        print(full.line(), flush=True)
        return EXIT_DISK_FULL
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
