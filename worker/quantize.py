"""`quantize`: one quantized copy of the fused model per variant (bits, group size)."""

from __future__ import annotations

import shutil

from mlx_lm.convert import convert

from worker.context import StageContext, path_bytes, record_artifact, update_stage


def run_quantize(ctx: StageContext) -> None:
    bits, group_size = int(ctx.params["bits"]), int(ctx.params["group_size"])
    out = ctx.quantized_dir(ctx.variant)
    print(f"quantizing {ctx.fused_dir} to {bits} bits, group size {group_size}")
    shutil.rmtree(out, ignore_errors=True)  # mlx-lm refuses to overwrite
    convert(str(ctx.fused_dir), str(out), quantize=True, q_bits=bits, q_group_size=group_size)
    record_artifact(ctx, "quantized", out, ctx.variant)
    update_stage(ctx, size_bytes=path_bytes(out))
    print(f"quantized model saved to {out}")
