"""The stages a worker runs, one module each, found by name.

Each module reads top to bottom like the mlx-lm command it replaces:
`train` (mlx_lm.lora), `fuse` (mlx_lm.fuse), `quantize` (mlx_lm.convert),
`eval` (batched generation over the suite, scored), and `export` (a variant
zipped for the coordinator, `ship.transfer`). They are imported only
when a stage of their kind runs: all but `export` pull in MLX and mlx-lm.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# kind → (module, function); every function takes the StageContext, and the
# eval stage also the session's loaded weights (worker/weights.py).
STAGES: dict[str, tuple[str, str]] = {
    "train": ("worker.stages.train", "run_train"),
    # Another worker's rank of a gang's training: the same function, in the
    # world its MLX_RANK and MLX_HOSTFILE describe (`worker.gang`).
    "rank": ("worker.stages.train", "run_train"),
    "fuse": ("worker.stages.fuse", "run_fuse"),
    "quantize": ("worker.stages.quantize", "run_quantize"),
    "eval": ("worker.stages.eval", "run_eval"),
    "export": ("worker.stages.export", "run_export"),
}


def stage_function(kind: str) -> Callable[..., Any]:
    if kind not in STAGES:
        raise SystemExit(f"unknown stage kind {kind!r}; known: {', '.join(STAGES)}")
    module, name = STAGES[kind]
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
