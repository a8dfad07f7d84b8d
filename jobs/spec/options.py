"""The values mlx-lm accepts for the spec's closed choices, and variant names.

Stated once here: the models (`model.py`), the cross checks, the web form's
select boxes and the messages all read these tables.
"""

from __future__ import annotations

from typing import Literal

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

QUANT_BITS = (2, 3, 4, 5, 6, 8)
QUANT_GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 64

EvalVariant = Literal["base", "adapter", "fused", "quantized"]


def variant_name(bits: int, group_size: int = DEFAULT_GROUP_SIZE) -> str:
    """Variant name: q4 for 4 bits with the default group size 64, else e.g. q4g32."""
    return f"q{bits}" if group_size == DEFAULT_GROUP_SIZE else f"q{bits}g{group_size}"


def default_variants(has_fuse: bool, has_quantize: bool) -> list[EvalVariant]:
    """The eval variants of a spec that names none: the ones it produces."""
    variants: list[EvalVariant] = ["adapter"]
    if has_fuse:
        variants.append("fused")
        if has_quantize:
            variants.append("quantized")
    return variants
