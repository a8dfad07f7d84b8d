"""`python -m worker.child STAGE_ID`: run one stage's MLX work in its own process."""

from __future__ import annotations

import sys

from worker.context import exit_with_parent, load_context


def main(argv: list[str]) -> int:
    exit_with_parent()
    ctx = load_context(int(argv[1]))
    print(f"stage {ctx.stage_id}: {ctx.kind} {ctx.variant} of run {ctx.run_id} (seed {ctx.seed})")
    if ctx.kind == "train":
        from worker.train import run_train

        run_train(ctx)
    elif ctx.kind == "fuse":
        from worker.fuse import run_fuse

        run_fuse(ctx)
    elif ctx.kind == "quantize":
        from worker.quantize import run_quantize

        run_quantize(ctx)
    elif ctx.kind == "eval":
        from worker.eval import run_eval

        run_eval(ctx)
    else:
        raise SystemExit(f"unknown stage kind {ctx.kind!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
