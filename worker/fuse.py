"""`fuse`: fold the adapter into the base weights, dequantized to float16 by default.

Fusing straight into a 4-bit base rounds the LoRA deltas away (the seeds'
"quantization signal loss"), so the default is to dequantize here and let the
`quantize` stages pick the bit widths explicitly.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mlx.utils import tree_unflatten
from mlx_lm.utils import dequantize_model, load, save

from worker.context import (
    StageContext,
    checkpoint_adapter,
    path_bytes,
    record_artifact,
    update_stage,
)


def run_fuse(ctx: StageContext) -> None:
    base_model = ctx.spec["base_model"]
    dequantize = bool(ctx.params.get("dequantize", True))
    with tempfile.TemporaryDirectory() as workdir:
        adapter = ctx.adapter_dir
        if ctx.params.get("iteration"):  # `fuse: {from: best}`: the best checkpoint by adherence
            adapter = checkpoint_adapter(ctx, int(ctx.params["iteration"]), Path(workdir))
        print(f"fusing {adapter} into {base_model} (dequantize={dequantize})")
        model, tokenizer, config = load(base_model, adapter_path=str(adapter), return_config=True)
        fused = [
            (name, m.fuse(dequantize=dequantize))
            for name, m in model.named_modules()
            if hasattr(m, "fuse")
        ]
        if fused:
            model.update_modules(tree_unflatten(fused))
        if dequantize:
            model = dequantize_model(model)
            config.pop("quantization", None)
            config.pop("quantization_config", None)

        shutil.rmtree(ctx.fused_dir, ignore_errors=True)  # a retried stage starts clean
        save(ctx.fused_dir, base_model, model, tokenizer, config, donate_model=False)
        record_artifact(ctx, "fused", ctx.fused_dir, "fused")
        update_stage(ctx, size_bytes=path_bytes(ctx.fused_dir))
    print(f"fused model saved to {ctx.fused_dir}")
