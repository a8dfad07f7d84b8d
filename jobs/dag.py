"""The stage DAG of one run, planned from a spec without touching anything.

```
train ──► eval(adapter)
  │  └──► eval(ckpt-k)  for each saved checkpoint
  └──► fuse ──► eval(fused)
             └──► quantize(q-b) ──► eval(q-b)   for each b
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobs.spec import ExperimentSpec


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
    return f"ckpt-{iteration:07d}"


def plan_run(spec: ExperimentSpec) -> list[PlannedStage]:
    """Every stage of one run of `spec`, parents before children."""
    variants = set(spec.eval.variants)
    stages = [PlannedStage("train", "train", "adapter")]
    if "base" in variants:
        stages.append(PlannedStage("eval:base", "eval", "base", "train"))
    if "adapter" in variants:
        stages.append(PlannedStage("eval:adapter", "eval", "adapter", "train"))
    if spec.eval.checkpoints:
        for iteration in checkpoint_iterations(spec.train.iters, spec.train.save_every):
            variant = checkpoint_variant(iteration)
            stages.append(
                PlannedStage(f"eval:{variant}", "eval", variant, "train", {"iteration": iteration})
            )
    wants_fused = "fused" in variants or (bool(spec.quantize) and "quantized" in variants)
    if spec.fuse is not None and (wants_fused or spec.quantize):
        stages.append(
            PlannedStage("fuse", "fuse", "fused", "train", {"dequantize": spec.fuse.dequantize})
        )
        if "fused" in variants:
            stages.append(PlannedStage("eval:fused", "eval", "fused", "fuse"))
        for q in spec.quantize:
            params = {"bits": q.bits, "group_size": q.group_size}
            stages.append(
                PlannedStage(f"quantize:{q.variant}", "quantize", q.variant, "fuse", params)
            )
            if "quantized" in variants:
                stages.append(
                    PlannedStage(f"eval:{q.variant}", "eval", q.variant, f"quantize:{q.variant}")
                )
    return stages


def children(stages: list[PlannedStage], key: str) -> list[PlannedStage]:
    return [s for s in stages if s.parent == key]
