"""`quantize`: one quantized copy of the fused model per variant: affine bits and
group size (q4, q4g32), a float mode (mxfp4, nvfp4, mxfp8) or a mixed-bit recipe
(mixed_3_6), all made by mlx_lm.convert."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mlx_lm.convert import convert

from worker.context import StageContext, path_bytes, record_artifact, update_stage


def quantize_model(
    src: Path,
    out: Path,
    bits: int | None,
    group_size: int,
    mode: str = "affine",
    recipe: str | None = None,
) -> None:
    # The unquantized weights (norms, embeddings' scales) keep the fused model's
    # dtype, named explicitly rather than left to the installed mlx-lm's default:
    # a float32 model stays float32 (float16 is emulated on a Linux CPU).
    dtype = json.loads((src / "config.json").read_text()).get("torch_dtype")
    shutil.rmtree(out, ignore_errors=True)  # mlx-lm refuses to overwrite
    convert(
        str(src),
        str(out),
        quantize=True,
        q_bits=bits,
        q_group_size=group_size,
        q_mode=mode,
        quant_predicate=recipe,  # a recipe name: convert builds its predicate
        dtype=dtype,
    )


def run_quantize(ctx: StageContext) -> None:
    # Stages planned before modes existed carry only bits and group_size: affine.
    bits = ctx.params.get("bits")
    bits = None if bits is None else int(bits)
    group_size = int(ctx.params["group_size"])
    mode, recipe = str(ctx.params.get("mode") or "affine"), ctx.params.get("recipe")
    out = ctx.quantized_dir(ctx.variant)
    how = recipe or (f"{mode}, " if mode != "affine" else "") + f"{bits} bits"
    print(f"quantizing {ctx.fused_dir} to {ctx.variant} ({how}, group size {group_size})")
    quantize_model(ctx.fused_dir, out, bits, group_size, mode, recipe)
    record_artifact(ctx, "quantized", out, ctx.variant)
    update_stage(ctx, size_bytes=path_bytes(out))
    print(f"quantized model saved to {out}")
