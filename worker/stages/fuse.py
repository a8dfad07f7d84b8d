"""`fuse`: fold the adapter into the base weights, dequantized by default.

Fusing straight into a 4-bit base rounds the LoRA deltas away (earlier runs'
"quantization signal loss"), so the default is to dequantize here and let the
`quantize` stages pick the bit widths explicitly. The fused weights keep the
base's float dtype: a float32 base stays float32, since on a Linux CPU float16
is emulated and the fused variant's eval would time the emulation.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_map, tree_unflatten
from mlx_lm.utils import dequantize_model, load, save

from worker.context import (
    StageContext,
    checkpoint_adapter,
    path_bytes,
    record_artifact,
    update_stage,
)

FLOAT_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


def keep_base_dtype(model: Any, config: dict[str, Any]) -> None:
    """Cast the floating weights to the dtype the base's config.json names, so the
    fused model (and the quantized copies made from it, which read the same
    field) is stored as the base was."""
    dtype = FLOAT_DTYPES.get(config.get("torch_dtype") or "")
    if dtype is None or "quantization" in config:
        return  # unknown, or scales of a still-quantized model: leave them as loaded
    model.update(
        tree_map(
            lambda v: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v,
            model.parameters(),
        )
    )


def fuse_model(base_model: str, adapter: Path, out: Path, dequantize: bool = True) -> None:
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
    keep_base_dtype(model, config)
    shutil.rmtree(out, ignore_errors=True)  # a retried stage starts clean
    save(out, base_model, model, tokenizer, config, donate_model=False)


def run_fuse(ctx: StageContext) -> None:
    base_model = ctx.spec.base_model
    dequantize = bool(ctx.params.get("dequantize", True))
    with tempfile.TemporaryDirectory() as workdir:
        adapter = ctx.adapter_dir
        if ctx.params.get("iteration"):  # `fuse: {from: best}`: the best checkpoint by adherence
            adapter = checkpoint_adapter(ctx, int(ctx.params["iteration"]), Path(workdir))
        print(f"fusing {adapter} into {base_model} (dequantize={dequantize})")
        fuse_model(base_model, adapter, ctx.fused_dir, dequantize)
        record_artifact(ctx, "fused", ctx.fused_dir, "fused")
        update_stage(ctx, size_bytes=path_bytes(ctx.fused_dir))
    print(f"fused model saved to {ctx.fused_dir}")
