"""`quantize`: one quantized copy of the fused model per variant (bits, group size)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mlx_lm.convert import convert

from worker.context import StageContext, path_bytes, record_artifact, update_stage


def quantize_model(src: Path, out: Path, bits: int, group_size: int) -> None:
    # The unquantized weights (norms, embeddings' scales) keep the fused model's
    # dtype, named explicitly rather than left to the installed mlx-lm's default:
    # a float32 model stays float32 (float16 is emulated on a Linux CPU).
    dtype = json.loads((src / "config.json").read_text()).get("torch_dtype")
    shutil.rmtree(out, ignore_errors=True)  # mlx-lm refuses to overwrite
    convert(str(src), str(out), quantize=True, q_bits=bits, q_group_size=group_size, dtype=dtype)


def run_quantize(ctx: StageContext) -> None:
    bits, group_size = int(ctx.params["bits"]), int(ctx.params["group_size"])
    out = ctx.quantized_dir(ctx.variant)
    print(f"quantizing {ctx.fused_dir} to {bits} bits, group size {group_size}")
    quantize_model(ctx.fused_dir, out, bits, group_size)
    record_artifact(ctx, "quantized", out, ctx.variant)
    update_stage(ctx, size_bytes=path_bytes(out))
    print(f"quantized model saved to {out}")
