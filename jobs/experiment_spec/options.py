"""The values mlx-lm accepts for the spec's closed choices, and variant names.

Stated once here: the models (`model.py`), the cross checks, the web form's
select boxes and the messages all read these tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

# name -> (min args, max args, argument positions that are step counts, signature)
SCHEDULES: dict[str, tuple[int, int, tuple[int, ...], str]] = {
    "cosine_decay": (2, 3, (1,), "init, decay_steps, end=0.0"),
    "linear_schedule": (3, 3, (2,), "init, end, steps"),
    "exponential_decay": (2, 2, (), "init, decay_rate"),
    "step_decay": (3, 3, (2,), "init, decay_rate, step_size"),
}
ScheduleName = Literal["cosine_decay", "linear_schedule", "exponential_decay", "step_decay"]

# Keyword arguments of mlx.optimizers classes (besides learning_rate), as of mlx 0.29.
OPTIMIZER_KWARGS: dict[str, tuple[str, ...]] = {
    "adam": ("betas", "eps", "bias_correction"),
    "adamw": ("betas", "eps", "weight_decay", "bias_correction"),
    "muon": ("momentum", "weight_decay", "nesterov", "ns_steps"),
    "sgd": ("momentum", "weight_decay", "dampening", "nesterov"),
    "adafactor": (
        "eps",
        "clip_threshold",
        "decay_rate",
        "beta_1",
        "weight_decay",
        "scale_parameter",
        "relative_step",
        "warmup_init",
    ),
}

# Affine quantization (mlx's default mode): these bits and group sizes.
QUANT_BITS = (2, 3, 4, 5, 6, 8)
QUANT_GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 64
# Train defaults that the cross-field checks read for keys a YAML leaves out;
# TrainSpec's fields use the same constants.
DEFAULT_ITERS = 1000
DEFAULT_SAVE_EVERY = 100
DEFAULT_OPTIMIZER = "adam"

QuantMode = Literal["affine", "mxfp4", "nvfp4", "mxfp8"]
QUANT_MODES: tuple[str, ...] = ("affine", "mxfp4", "nvfp4", "mxfp8")
# The float modes fix both numbers: mx.quantize refuses any other bits or group
# size ("mxfp4 quantization requires group size 32 but got 64"), and mlx-lm's
# quantize_model fills in exactly these when none are given.
FLOAT_MODES: dict[str, tuple[int, int]] = {"mxfp4": (4, 32), "nvfp4": (4, 16), "mxfp8": (8, 32)}
# Every group size any mode takes (nvfp4's 16 is refused by affine).
ALL_GROUP_SIZES = (16, 32, 64, 128)

QuantRecipe = Literal["mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6"]
# mlx_lm.convert's mixed-bit recipes (its QUANT_RECIPES): recipe -> (bits of most
# layers, bits of lm_head and of v_proj / down_proj in the first and last eighth of
# the layers and every third one between). Affine only: convert refuses a recipe
# with another mode ("Quant predicates only support 'affine' quantization").
QUANT_RECIPES: dict[str, tuple[int, int]] = {
    "mixed_2_6": (2, 6),
    "mixed_3_4": (3, 4),
    "mixed_3_6": (3, 6),
    "mixed_4_6": (4, 6),
}

EvalVariant = Literal["base", "adapter", "fused", "quantized"]


def variant_name(bits: int, group_size: int = DEFAULT_GROUP_SIZE) -> str:
    """Affine variant name: q4 for 4 bits with the default group size 64, else e.g. q4g32."""
    return f"q{bits}" if group_size == DEFAULT_GROUP_SIZE else f"q{bits}g{group_size}"


def quant_variant(
    mode: str = "affine",
    bits: int | None = None,
    group_size: int | None = None,
    recipe: str | None = None,
) -> str:
    """Variant name of any quantize entry: q4 / q4g32 (affine), mxfp4 / nvfp4 / mxfp8
    (their bits and group size are fixed), mixed_3_6 / mixed_3_6g32 (a recipe)."""
    group = group_size or DEFAULT_GROUP_SIZE
    if recipe is not None:
        return recipe if group == DEFAULT_GROUP_SIZE else f"{recipe}g{group}"
    if mode in FLOAT_MODES:
        return mode
    return variant_name(bits or 0, group)


_AFFINE_VARIANT = re.compile(r"q(\d+)(?:g\d+)?")
_RECIPE_VARIANT = re.compile(r"(mixed_\d_\d)(?:g\d+)?")


def variant_bits(variant: str) -> int | None:
    """The fewest bits any weight of a quantized variant gets (what decides whether a
    LoRA delta survives): q4g32 -> 4, mxfp4 / nvfp4 -> 4, mxfp8 -> 8, mixed_3_6 -> 3;
    None for a variant that is not quantized (adapter, fused, base, checkpoints)."""
    if match := _AFFINE_VARIANT.fullmatch(variant):
        return int(match.group(1))
    if variant in FLOAT_MODES:
        return FLOAT_MODES[variant][0]
    if (match := _RECIPE_VARIANT.fullmatch(variant)) and match.group(1) in QUANT_RECIPES:
        return QUANT_RECIPES[match.group(1)][0]
    return None


def quant_entry_problems(item: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for each combination of one quantize entry that mlx-lm refuses
    (or, for bits next to a recipe, ignores). Runs on raw YAML too, so a value of the
    wrong type is left to the field's own check."""
    mode, recipe = item.get("mode", "affine"), item.get("recipe")
    bits, group = item.get("bits"), item.get("group_size")
    if mode not in QUANT_MODES or (recipe is not None and recipe not in QUANT_RECIPES):
        return []
    out: list[tuple[str, str]] = []
    if recipe is not None:
        low, high = QUANT_RECIPES[recipe]
        if mode != "affine":
            out.append(
                (
                    "recipe",
                    f"{recipe} is an affine recipe: mlx-lm refuses a recipe with mode {mode} "
                    "(quant predicates only support affine quantization) — remove mode or recipe",
                )
            )
        if bits is not None:
            out.append(
                (
                    "bits",
                    f"{recipe} sets each layer's bits itself ({low} in most layers, {high} in a "
                    "few), so bits would be ignored — remove bits",
                )
            )
        if mode == "affine" and group not in QUANT_GROUP_SIZES and group in ALL_GROUP_SIZES:
            out.append(("group_size", _affine_group_message(group)))
    elif mode == "affine":
        if bits is None:
            out.append(
                (
                    "bits",
                    f"affine quantization needs bits (one of {', '.join(map(str, QUANT_BITS))}) "
                    f"— or a recipe ({', '.join(QUANT_RECIPES)}) or another mode "
                    f"({', '.join(FLOAT_MODES)})",
                )
            )
        if group not in QUANT_GROUP_SIZES and group in ALL_GROUP_SIZES:
            out.append(("group_size", _affine_group_message(group)))
    else:
        fixed_bits, fixed_group = FLOAT_MODES[mode]
        if bits is not None and bits != fixed_bits:
            other = next((m for m, (b, _) in FLOAT_MODES.items() if b == bits), None)
            hint = f" or use mode {other}" if other else ""
            out.append(
                (
                    "bits",
                    f"{mode} is {fixed_bits}-bit: mlx refuses {bits} bits — remove bits{hint}",
                )
            )
        if group is not None and group != fixed_group and group in ALL_GROUP_SIZES:
            out.append(
                (
                    "group_size",
                    f"{mode} uses group size {fixed_group}: mlx refuses {group} — remove "
                    "group_size",
                )
            )
    return out


def _affine_group_message(group: int) -> str:
    sizes = ", ".join(map(str, QUANT_GROUP_SIZES))
    return f"affine quantization takes group size {sizes}: mlx refuses {group} (nvfp4's size)"


def default_variants(has_fuse: bool, has_quantize: bool) -> list[EvalVariant]:
    """The eval variants of a spec that names none: the ones it produces."""
    variants: list[EvalVariant] = ["adapter"]
    if has_fuse:
        variants.append("fused")
        if has_quantize:
            variants.append("quantized")
    return variants
