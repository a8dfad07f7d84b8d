"""The stage DAG of one run, planned from a spec without touching anything.

```
train ──► eval(adapter)
  │  └──► eval(ckpt-k)  for each saved checkpoint
  ├──► rank(k)          with train.workers: N > 1, k = 1..N-1 (`jobs.gang`)
  └──► fuse ──► eval(fused)
             └──► quantize(v) ──► eval(v)   for each quantize variant v (q4, mxfp4, mixed_3_6…)
```

A rank stage is not run after train but beside it: the train stage is rank 0
of the gang and each rank stage one more worker. They hang below train so that
a failed, cancelled, retried or re-planned train takes its ranks with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from jobs.experiment_spec import ExperimentSpec

HOLD = "after_checkpoints"  # stage params flag: enqueue once checkpoint evals are done
# The eval variant of a saved checkpoint: "ckpt-" and the iteration, 7 digits
# like mlx-lm's `{it:07d}_adapters.safetensors` so variants sort by iteration.
_CHECKPOINT_VARIANT = re.compile(r"^ckpt-(\d+)$")


@dataclass(frozen=True)
class PlannedStage:
    key: str  # unique within a run: "train", "fuse", "quantize:q4", "eval:adapter"
    kind: str
    variant: str = ""
    parent: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


def checkpoint_iterations(iters: int, save_every: int) -> list[int]:
    # mlx-lm's trainer saves `{it:07d}_adapters.safetensors` whenever
    # it % save_every == 0, for it in 1..iters.
    return list(range(save_every, iters + 1, save_every))


def checkpoint_variant(iteration: int) -> str:
    """100 -> `ckpt-0000100`, the variant of the checkpoint saved at that iteration."""
    return f"ckpt-{iteration:07d}"


def checkpoint_iteration(variant: str) -> int | None:
    """`ckpt-0000100` -> 100; None for any other variant (`best` included)."""
    match = _CHECKPOINT_VARIANT.match(variant)
    return int(match.group(1)) if match else None


def is_checkpoint_variant(variant: str) -> bool:
    """True for the eval variant of one saved checkpoint (not `best`)."""
    return checkpoint_iteration(variant) is not None


def weights_of(variant: str) -> str:
    """The weights an eval of `variant` loads: the base model serves the base,
    the adapter, every checkpoint and `best` (adapters swap in); a fused or
    quantized variant is a model of its own."""
    if variant in ("base", "adapter", "best") or is_checkpoint_variant(variant):
        return "base"
    return variant


def plan_run(spec: ExperimentSpec) -> list[PlannedStage]:
    """Every stage of one run of `spec`, parents before children.

    The diagram in the module docstring; with `eval.checkpoints` also a `best`
    eval, and with `fuse.from: best` the fuse (and all below it) waits for it."""
    variants = set(spec.eval.variants)
    world = spec.train.workers
    stages = [
        PlannedStage("train", "train", "adapter", params={"world": world} if world > 1 else {})
    ]
    for rank in range(1, world):
        stages.append(
            PlannedStage(
                f"rank:{rank}", "rank", f"rank-{rank}", "train", {"rank": rank, "world": world}
            )  # fmt: skip
        )
    if "base" in variants:
        stages.append(PlannedStage("eval:base", "eval", "base", "train"))
    if "adapter" in variants:
        stages.append(PlannedStage("eval:adapter", "eval", "adapter", "train"))
    from_best = spec.fuse is not None and spec.fuse.from_ == "best" and spec.eval.checkpoints
    if spec.eval.checkpoints:
        for iteration in checkpoint_iterations(spec.train.iters, spec.train.save_every):
            variant = checkpoint_variant(iteration)
            stages.append(
                PlannedStage(f"eval:{variant}", "eval", variant, "train", {"iteration": iteration})
            )
        # `best` is the checkpoint with the highest adherence: known only once
        # every checkpoint is evaluated, so it waits for them (HOLD).
        stages.append(PlannedStage("eval:best", "eval", "best", "train", {HOLD: True}))
    wants_fused = "fused" in variants or (bool(spec.quantize) and "quantized" in variants)
    if spec.fuse is not None and (wants_fused or spec.quantize):
        params: dict[str, Any] = {"dequantize": spec.fuse.dequantize}
        if from_best:
            params[HOLD] = True
        stages.append(PlannedStage("fuse", "fuse", "fused", "train", params))
        if "fused" in variants:
            stages.append(PlannedStage("eval:fused", "eval", "fused", "fuse"))
        for q in spec.quantize:
            # What mlx_lm.convert needs: bits is None for a recipe (it sets each
            # layer's bits), and a float mode's fixed bits and group size are spelled out.
            args = q.convert_args
            params = {
                "bits": args["q_bits"],
                "group_size": args["q_group_size"],
                "mode": q.mode,
                "recipe": q.recipe,
            }
            stages.append(
                PlannedStage(f"quantize:{q.variant}", "quantize", q.variant, "fuse", params)
            )
            if "quantized" in variants:
                stages.append(
                    PlannedStage(f"eval:{q.variant}", "eval", q.variant, f"quantize:{q.variant}")
                )
    return stages
