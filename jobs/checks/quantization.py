"""Spec checks: quantizing a fused adapter (and its ≥ 5-bit twin), seeds, and
which checkpoints get a val loss. Pure functions of the spec."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from jobs.checks.findings import (
    MAX_LISTED,
    MIN_SAFE_BITS,
    MIN_SEEDS,
    MISLEADING_VAL_LOSS,
    QUANTIZATION_SIGNAL_LOSS,
    STOCHASTIC_FORMAT_LOCK,
    TWIN_BITS,
    VAL_LOSS_TOLERANCE_STEPS,
    Finding,
)
from jobs.experiment_spec import DEFAULT_GROUP_SIZE, QUANT_GROUP_SIZES, ExperimentSpec, QuantizeSpec
from jobs.experiment_spec.options import QUANT_RECIPES

# --------------------------------------------------------------------------- spec checks


def quantized_bits(base_model: str, config: Mapping[str, Any] | None) -> int | None:
    """Bits of a quantized base model, from its config or (for an HF id) its name."""
    if config:
        quant = config.get("quantization") or config.get("quantization_config")
        if isinstance(quant, Mapping) and isinstance(quant.get("bits"), int):
            return int(quant["bits"])
        return None
    match = re.search(r"(?<![0-9])([2-8])-?bit", base_model, flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


def _twin_present(spec: ExperimentSpec) -> bool:
    """A ≥ MIN_SAFE_BITS (mxfp8 counts as 8 bits) or f16 variant is evaluated next to
    the quantized ones."""
    variants = set(spec.eval.variants)
    if "fused" in variants and (spec.fuse is None or spec.fuse.dequantize):
        return True
    return "quantized" in variants and any(q.min_bits >= MIN_SAFE_BITS for q in spec.quantize)


def _twin_for(low: QuantizeSpec) -> QuantizeSpec:
    """The q5 twin of a low variant: same group size where affine takes it (nvfp4's 16
    it does not), so the gap between them is the bits alone."""
    group = low.convert_args["q_group_size"]
    return QuantizeSpec(
        bits=TWIN_BITS, group_size=group if group in QUANT_GROUP_SIZES else DEFAULT_GROUP_SIZE
    )


def _how_low(q: QuantizeSpec) -> str:
    """What a low variant does to the weights, for the warning."""
    if q.recipe is not None:
        low, high = QUANT_RECIPES[q.recipe]
        return f"{low} bits in most layers ({2**low} levels; {high} bits in a few)"
    if q.mode != "affine":
        return f"{q.min_bits}-bit floats ({q.mode}, {2**q.min_bits} levels)"
    return f"{q.min_bits} bits ({2**q.min_bits} levels)"


def check_quantization(
    spec: ExperimentSpec,
    base_bits: int | None = None,
    spec_file: str = "",
    line_of: Callable[[tuple[str | int, ...]], int | None] = lambda _loc: None,
) -> list[Finding]:
    """Quantizing a fused adapter below 5 bits, or fusing into a quantized base."""
    findings: list[Finding] = []
    if spec.fuse is None:
        return findings
    low = [(i, q) for i, q in enumerate(spec.quantize) if q.min_bits < MIN_SAFE_BITS]
    if low:
        i, first = low[0]
        variants = ", ".join(q.variant for _, q in low)
        twin = (
            "it is compared with the run's f16 / ≥ 5-bit twin"
            if _twin_present(spec)
            else f"the farm adds a {_twin_for(first).variant} twin to compare against"
        )
        # The line of what makes it low: bits, else the mode or the recipe.
        key = "recipe" if first.recipe else "mode" if first.mode != "affine" else "bits"
        findings.append(
            Finding(
                "warning",
                QUANTIZATION_SIGNAL_LOSS,
                f"{variants} quantizes the fused adapter to {_how_low(first)}: LoRA deltas "
                "are small and get rounded away (earlier runs: 100% in f16 → 60% at 4 bits, "
                "near 0% after a 4-bit fuse); " + twin,
                f"ship a ≥ {MIN_SAFE_BITS}-bit variant (quantize: [{{bits: {MIN_SAFE_BITS}}}] "
                "or {mode: mxfp8}) or the fused f16 model",
                spec_file,
                line_of(("quantize", i, key)) or line_of(("quantize", i)),
                evidence={
                    "variants": [q.variant for _, q in low],
                    "bits": first.min_bits,
                    "modes": sorted({q.mode for _, q in low}),
                    "recipes": sorted({q.recipe for _, q in low if q.recipe}),
                },
            )
        )
    if not spec.fuse.dequantize and base_bits is not None and base_bits < MIN_SAFE_BITS:
        findings.append(
            Finding(
                "warning",
                QUANTIZATION_SIGNAL_LOSS,
                f"fuse.dequantize is false and the base model is {base_bits}-bit: the adapter "
                f"is fused back into {base_bits}-bit weights, which erased earlier runs' adapter",
                "set `fuse: {dequantize: true}` and quantize explicitly to ≥ 5 bits",
                spec_file,
                line_of(("fuse", "dequantize")),
                evidence={"base_bits": base_bits},
            )
        )
    return findings


def ensure_quant_twin(spec: ExperimentSpec) -> tuple[ExperimentSpec, Finding | None]:
    """When a fused adapter is quantized below 5 bits (affine, mxfp4, nvfp4 or a
    mixed recipe) and evaluated, and neither the fused f16 model nor a ≥ 5-bit variant
    (mxfp8 included) is evaluated next to it, add a q5 variant (same group size where
    affine takes it) so the run has a twin to compare against. Returns the spec
    (unchanged when nothing is needed) and an info Finding naming what was added."""
    if spec.fuse is None or "quantized" not in spec.eval.variants or _twin_present(spec):
        return spec, None
    low = [q for q in spec.quantize if q.min_bits < MIN_SAFE_BITS]
    if not low:
        return spec, None
    twin = _twin_for(low[0])
    new = spec.model_copy(update={"quantize": [*spec.quantize, twin]})
    return new, Finding(
        "info",
        QUANTIZATION_SIGNAL_LOSS,
        f"added quantize variant {twin.variant} as the ≥ {MIN_SAFE_BITS}-bit twin of "
        f"{', '.join(q.variant for q in low)}, so a lost adapter shows as a gap between them",
        evidence={"added": twin.variant, "twin_of": [q.variant for q in low]},
    )


def checkpoint_val_iterations(iters: int, steps_per_eval: int) -> list[int]:
    """Iterations mlx-lm reports a val loss for (its callback gets `it - 1`)."""
    its = {1, iters, *range(steps_per_eval, iters + 1, steps_per_eval)}
    return sorted(it - 1 for it in its)


def check_seeds_and_checkpoints(
    spec: ExperimentSpec,
    spec_file: str = "",
    line_of: Callable[[tuple[str | int, ...]], int | None] = lambda _loc: None,
) -> list[Finding]:
    findings: list[Finding] = []
    if len(spec.seeds) < MIN_SEEDS:
        findings.append(
            Finding(
                "info",
                STOCHASTIC_FORMAT_LOCK,
                f"{len(spec.seeds)} seed(s): identical configs scored 82.4%, 38.9% and 22.2% "
                "across seeds in earlier runs, and one seed cannot show that spread",
                f"use at least {MIN_SEEDS} seeds",
                spec_file,
                line_of(("seeds",)),
                evidence={"seeds": list(spec.seeds)},
            )
        )
    if spec.eval.checkpoints:
        train = spec.train
        reports = checkpoint_val_iterations(train.iters, train.steps_per_eval)
        ckpts = list(range(train.save_every, train.iters + 1, train.save_every))
        without = [
            k for k in ckpts if not any(abs(r - k) <= VAL_LOSS_TOLERANCE_STEPS for r in reports)
        ]
        if without:
            findings.append(
                Finding(
                    "info",
                    MISLEADING_VAL_LOSS,
                    f"{len(without)} of {len(ckpts)} checkpoints get no val loss "
                    f"(steps_per_eval {train.steps_per_eval}, save_every {train.save_every}), "
                    "so the best-by-val-loss checkpoint is chosen among the others only",
                    f"set train.steps_per_eval to {train.save_every} (or a divisor of it)",
                    spec_file,
                    line_of(("train", "steps_per_eval")),
                    evidence={"checkpoints_without_val_loss": without[:MAX_LISTED]},
                )
            )
    return findings
