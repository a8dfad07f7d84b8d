"""Run diagnostics, the detections: rows in, findings out, no database.

Pure functions over `VariantResult`s (one eval stage's summary, plus what its
eval rows say), `CheckpointPoint`s and `SeedScore`s; `jobs.diagnostics.record`
builds those from the database and stores what these functions find.

Thresholds (shares are of the variant's scored prompts):

- quantization signal loss: a q-b variant ≥ 20 points below its twin of the same
  run (the fused f16 model, else the best ≥ 5-bit variant, else the adapter), or
  the fused model ≥ 20 points below the adapter;
- prose drift / alignment override: `prose` ≥ 20%;
- think-mode interference: `think` ≥ 10%;
- wrapper not learned: `direct_call` ≥ 25%;
- training distribution gaps: `wrong_tool` + `invalid_code` (+ `invalid_call`) ≥ 20%;
- mode collapse: loops (`degenerate`, or `empty` that ran to max_tokens) ≥ 10%;
- eos / stop mismatch (runaway generation): ≥ 50% of generations hit max_tokens;
- stochastic format lock: seeds of one config where one is ≥ 0.8 and another < 0.5;
- misleading val loss: the best-val-loss checkpoint scores ≥ 10 points below the
  best-adherence checkpoint.

A variant flagged for quantization signal loss is not also flagged for the
drift and runaway its lost adapter causes (they are in its evidence).
Base-model and checkpoint evals are not diagnosed for drift (an untrained base
answers in prose by design; early checkpoints are expected to be bad): they
only feed the checkpoint comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobs.checkpoints import MISLEADING_GAP_POINTS, CheckpointPoint, val_loss_verdict
from jobs.checks import (
    DISTRIBUTION_GAPS,
    EOS_MISMATCH,
    MIN_SAFE_BITS,
    MISLEADING_VAL_LOSS,
    MODE_COLLAPSE,
    PROSE_DRIFT,
    QUANTIZATION_SIGNAL_LOSS,
    STOCHASTIC_FORMAT_LOCK,
    THINK_INTERFERENCE,
    WRAPPER_NOT_LEARNED,
)
from jobs.dag import is_checkpoint_variant
from jobs.experiment_spec.options import variant_bits
from jobs.ranking import LOCK_THRESHOLD  # a seed that "locked" the format (0.8)

QUANT_LOSS_POINTS = 20.0
RUNAWAY_SHARE = 0.5
UNLOCKED_THRESHOLD = 0.5  # a seed that clearly did not
EXAMPLES_KEPT = 3


@dataclass(frozen=True)
class DriftRule:
    pattern: str
    labels: tuple[str, ...]
    threshold: float
    severity: str
    what: str
    fix: str


DRIFT_RULES: tuple[DriftRule, ...] = (
    DriftRule(
        PROSE_DRIFT,
        ("prose",),
        0.20,
        "warning",
        "answered tool prompts in prose, without a call (base-model alignment won)",
        "more training signal for the format (iterations, LoRA layers, rank), pick the "
        "best checkpoint by adherence, or try more seeds",
    ),
    DriftRule(
        THINK_INTERFERENCE,
        ("think",),
        0.10,
        "warning",
        "wrote only a <think> block, no call",
        "train with the empty think block the template renders (anti-think examples), or "
        "add '<think>' to the suite's generation.stop",
    ),
    DriftRule(
        WRAPPER_NOT_LEARNED,
        ("direct_call",),
        0.25,
        "warning",
        "called the right tool but outside the execute_code wrapper (scored 0.5)",
        "the wrapper is learned stochastically: run more seeds, pick the checkpoint by "
        "adherence, or add LoRA layers",
    ),
    DriftRule(
        DISTRIBUTION_GAPS,
        ("wrong_tool", "invalid_code", "invalid_call"),
        0.20,
        "warning",
        "called the wrong tool or wrote code that does not parse",
        "check the training data against the suite's tool API (`farm check`) and add "
        "examples for the missed tools",
    ),
)
MODE_COLLAPSE_SHARE = 0.10


@dataclass(frozen=True)
class VariantResult:
    """What one finished eval stage of a run says."""

    variant: str
    adherence: float
    n_prompts: int
    label_counts: Mapping[str, int] = field(default_factory=dict)
    hit_max_share: float | None = None
    loops: int | None = None  # degenerate + empty-at-max_tokens rows; None: rows unknown
    examples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # label -> ids
    runaway_examples: tuple[str, ...] = ()
    stage_id: int | None = None
    max_tokens: int | None = None
    median_tokens: int | None = None


@dataclass(frozen=True)
class Detection:
    """A failure pattern found on a run or a configuration."""

    pattern: str
    severity: str
    message: str
    evidence: dict[str, Any]
    variant: str | None = None


def diagnosed(variant: str) -> bool:
    """Variants the drift and runaway rules look at: what could be shipped."""
    return variant != "base" and not is_checkpoint_variant(variant)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# --------------------------------------------------------------------------- per run


def quantization_twin(variant: str, results: Mapping[str, VariantResult]) -> VariantResult | None:
    """What a quantized variant is compared with: the fused f16 model, else the best
    variant with ≥ MIN_SAFE_BITS bits, else the adapter."""
    if "fused" in results:
        return results["fused"]
    bits = variant_bits(variant) or 0
    safer = [
        r
        for name, r in results.items()
        if (b := variant_bits(name)) is not None and b >= MIN_SAFE_BITS and b > bits
    ]
    if safer:
        return max(safer, key=lambda r: variant_bits(r.variant) or 0)
    return results.get("adapter")


def detect_quantization_loss(results: Sequence[VariantResult]) -> list[Detection]:
    """Quantized (or fused) variants ≥ 20 points below their twin of the same run."""
    by_name = {r.variant: r for r in results}
    pairs: list[tuple[VariantResult, VariantResult]] = []
    for result in results:
        if variant_bits(result.variant) is not None:
            twin = quantization_twin(result.variant, by_name)
            if twin is not None:
                pairs.append((result, twin))
    if "fused" in by_name and "adapter" in by_name:
        pairs.append((by_name["fused"], by_name["adapter"]))
    out = []
    for result, twin in pairs:
        drop = round(100.0 * (twin.adherence - result.adherence), 6)
        if drop < QUANT_LOSS_POINTS:
            continue
        bits = variant_bits(result.variant)
        what = (
            f"{bits}-bit rounding erased the adapter's deltas"
            if bits
            else "fusing lost the adapter (was it fused into quantized weights?)"
        )
        out.append(
            Detection(
                QUANTIZATION_SIGNAL_LOSS,
                "error",
                f"{result.variant} scores {_pct(result.adherence)} vs {_pct(twin.adherence)} for "
                f"its twin {twin.variant} ({drop:.0f} points lower, threshold "
                f"{QUANT_LOSS_POINTS:.0f}) — {what}; ship a ≥ {MIN_SAFE_BITS}-bit variant or "
                "the fused f16 model",
                {
                    "variant": result.variant,
                    "adherence": result.adherence,
                    "twin": twin.variant,
                    "twin_adherence": twin.adherence,
                    "drop_points": drop,
                    "bits": bits,
                    "threshold_points": QUANT_LOSS_POINTS,
                    "labels": dict(result.label_counts),
                    "twin_labels": dict(twin.label_counts),
                    "hit_max_share": result.hit_max_share,
                },
                result.variant,
            )
        )
    return out


def detect_format_drift(result: VariantResult) -> list[Detection]:
    """Label shares above the thresholds of DRIFT_RULES, and mode collapse."""
    n = result.n_prompts
    if n <= 0:
        return []
    out = []
    for rule in DRIFT_RULES:
        count = sum(result.label_counts.get(label, 0) for label in rule.labels)
        share = count / n
        if share < rule.threshold - 1e-9:
            continue
        ids = [pid for label in rule.labels for pid in result.examples.get(label, ())]
        out.append(
            Detection(
                rule.pattern,
                rule.severity,
                f"{result.variant}: {count} of {n} prompts ({_pct(share)}, threshold "
                f"{rule.threshold:.0%}) {rule.what}"
                + (f", e.g. {', '.join(ids[:EXAMPLES_KEPT])}" if ids else "")
                + f" — {rule.fix}",
                {
                    "variant": result.variant,
                    "labels": list(rule.labels),
                    "count": count,
                    "n_prompts": n,
                    "share": share,
                    "threshold": rule.threshold,
                    "prompts": ids[:EXAMPLES_KEPT],
                },
                result.variant,
            )
        )
    loops = (
        result.loops
        if result.loops is not None
        else result.label_counts.get("degenerate", 0) + result.label_counts.get("empty", 0)
    )
    share = loops / n
    if share >= MODE_COLLAPSE_SHARE - 1e-9:
        ids = list(result.examples.get("degenerate", ())) + list(result.examples.get("empty", ()))
        out.append(
            Detection(
                MODE_COLLAPSE,
                "error",
                f"{result.variant}: {loops} of {n} generations ({_pct(share)}, threshold "
                f"{MODE_COLLAPSE_SHARE:.0%}) are repetition loops (a word, line or newline "
                "repeated until max_tokens)"
                + (f", e.g. {', '.join(ids[:EXAMPLES_KEPT])}" if ids else "")
                + " — the loss can look perfect while this happens; pick an earlier "
                "checkpoint by adherence, lower the learning rate or check the data for "
                "repeated structure",
                {
                    "variant": result.variant,
                    "loops": loops,
                    "n_prompts": n,
                    "share": share,
                    "threshold": MODE_COLLAPSE_SHARE,
                    "prompts": ids[:EXAMPLES_KEPT],
                },
                result.variant,
            )
        )
    return out


def detect_runaway(result: VariantResult) -> list[Detection]:
    """≥ 50% of generations ran to max_tokens (usually an eos / stop mismatch)."""
    share = result.hit_max_share
    if share is None or share < RUNAWAY_SHARE - 1e-9:
        return []
    limit = f" (max_tokens {result.max_tokens})" if result.max_tokens else ""
    return [
        Detection(
            EOS_MISMATCH,
            "error",
            f"{result.variant}: runaway generation — {_pct(share)} of {result.n_prompts} "
            f"generations hit max_tokens{limit}, threshold {RUNAWAY_SHARE:.0%}"
            + (
                f", e.g. {', '.join(result.runaway_examples[:EXAMPLES_KEPT])}"
                if result.runaway_examples
                else ""
            )
            + " — usually the model's eos id is not the template's end-of-turn token; "
            "run `farm check` on the spec, fix eos_token_id or add the end-of-turn token to "
            "the suite's generation.stop (or raise max_tokens if the answers are that long)",
            {
                "variant": result.variant,
                "hit_max_share": share,
                "n_prompts": result.n_prompts,
                "max_tokens": result.max_tokens,
                "median_tokens": result.median_tokens,
                "threshold": RUNAWAY_SHARE,
                "prompts": list(result.runaway_examples[:EXAMPLES_KEPT]),
            },
            result.variant,
        )
    ]


def detect_misleading_val_loss(points: Sequence[CheckpointPoint]) -> list[Detection]:
    """The checkpoint with the best val loss is not the one with the best adherence."""
    verdict = val_loss_verdict(points)
    if verdict is None or not verdict.misleading:
        return []
    a, b = verdict.by_val_loss, verdict.by_adherence
    return [
        Detection(
            MISLEADING_VAL_LOSS,
            "warning",
            f"the best val loss is at iteration {a.iteration} ({a.val_loss:.4f}, adherence "
            f"{_pct(a.adherence or 0.0)}), the best adherence at iteration {b.iteration} "
            f"({_pct(b.adherence or 0.0)}, val loss {b.val_loss:.4f}): choosing by val loss "
            f"would lose {verdict.gap_points:.0f} points — ship the `best` variant "
            "(`fuse: {from: best}`), not the lowest-loss checkpoint",
            {
                "best_val_loss_iteration": a.iteration,
                "best_val_loss": a.val_loss,
                "adherence_at_best_val_loss": a.adherence,
                "best_adherence_iteration": b.iteration,
                "best_adherence": b.adherence,
                "val_loss_at_best_adherence": b.val_loss,
                "gap_points": verdict.gap_points,
                "threshold_points": MISLEADING_GAP_POINTS,
                "curve": [
                    {"iteration": p.iteration, "adherence": p.adherence, "val_loss": p.val_loss}
                    for p in points
                ],
            },
            None,
        )
    ]


def run_detections(
    results: Sequence[VariantResult], points: Sequence[CheckpointPoint] = ()
) -> list[Detection]:
    """Every per-run detection."""
    shipped = [r for r in results if diagnosed(r.variant)]
    out = detect_quantization_loss(shipped)
    # A variant that lost the adapter drifts and runs away as a consequence; its
    # labels and hit_max share are in the signal-loss evidence instead.
    lost = {d.variant for d in out}
    for result in shipped:
        if result.variant in lost:
            continue
        out += detect_format_drift(result)
        out += detect_runaway(result)
    out += detect_misleading_val_loss(points)
    return out


# --------------------------------------------------------------------------- per config


@dataclass(frozen=True)
class SeedScore:
    run_id: int
    seed: int
    adherence: float


def detect_seed_instability(variant: str, scores: Sequence[SeedScore]) -> Detection | None:
    """Seeds of one config disagree: one ≥ 0.8 while another < 0.5."""
    if len(scores) < 2:
        return None
    values = [s.adherence for s in scores]
    best, worst = max(scores, key=lambda s: s.adherence), min(scores, key=lambda s: s.adherence)
    if not (best.adherence >= LOCK_THRESHOLD - 1e-9 and worst.adherence < UNLOCKED_THRESHOLD):
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    lock_rate = sum(v >= LOCK_THRESHOLD - 1e-9 for v in values) / len(values)
    listed = ", ".join(f"seed {s.seed} {_pct(s.adherence)}" for s in scores)
    spread = 100 * (best.adherence - worst.adherence)
    return Detection(
        STOCHASTIC_FORMAT_LOCK,
        "warning",
        f"{variant}: seeds disagree — {listed} (spread {spread:.0f} points, lock rate"
        f" {lock_rate:.0%}): the format locks in for some seeds only — "
        "judge this config by its worst seed and lock rate, run more seeds, ship a seed "
        "that locked",
        {
            "variant": variant,
            "seeds": [
                {"run_id": s.run_id, "seed": s.seed, "adherence": s.adherence} for s in scores
            ],
            "mean": mean,
            "std": std,
            "spread_points": spread,
            "lock_rate": lock_rate,
            "lock_threshold": LOCK_THRESHOLD,
            "unlocked_threshold": UNLOCKED_THRESHOLD,
        },
        variant,
    )


def config_detections(scores_by_variant: Mapping[str, Sequence[SeedScore]]) -> list[Detection]:
    out = []
    for variant, scores in sorted(scores_by_variant.items()):
        if not diagnosed(variant):
            continue
        found = detect_seed_instability(variant, scores)
        if found is not None:
            out.append(found)
    return out
