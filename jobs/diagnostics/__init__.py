"""Run diagnostics: the failure patterns that only show after a run.

Computed when a run's evals finish (`record_run_diagnostics`) and per
configuration across seeds (`record_config_diagnostics`), stored as
`Diagnostic` rows, shown by `farm status`, the run page and as badges on the
leaderboard (`badges`).

The detections are pure functions over `VariantResult`s (one eval stage's
summary, plus what its eval rows say) and `CheckpointPoint`s; the database
is read and written only by the `record_*` functions and `badges`.

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
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, delete, select

from jobs.checkpoints import (
    MISLEADING_GAP_POINTS,
    CheckpointPoint,
    checkpoint_iteration,
    checkpoint_points,
    val_loss_verdict,
)
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
from jobs.db import Diagnostic, EvalResult, Experiment, Run, Stage
from jobs.leaderboard import LOCK_THRESHOLD  # a seed that "locked" the format (0.8)
from jobs.states import StageStatus

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


def variant_bits(variant: str) -> int | None:
    """`q4` / `q4g32` -> 4; None for any other variant."""
    match = re.fullmatch(r"q(\d)(?:g\d+)?", variant)
    return int(match.group(1)) if match else None


def diagnosed(variant: str) -> bool:
    """Variants the drift and runaway rules look at: what could be shipped."""
    return variant != "base" and checkpoint_iteration(variant) is None


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


# --------------------------------------------------------------------------- database edge


def variant_results(session: Session, run_id: int) -> list[VariantResult]:
    """A VariantResult for each finished eval stage of a run, from its summary and rows."""
    stages = session.exec(
        select(Stage).where(
            Stage.run_id == run_id,
            Stage.kind == "eval",
            Stage.status == StageStatus.DONE,
            col(Stage.adherence).is_not(None),
        )
    ).all()
    if not stages:
        return []
    ids = [s.id for s in stages]
    rows = session.exec(select(EvalResult).where(col(EvalResult.stage_id).in_(ids))).all()
    by_stage: dict[int, list[EvalResult]] = defaultdict(list)
    for row in rows:
        by_stage[row.stage_id].append(row)
    out = []
    for stage in stages:
        own = sorted(by_stage.get(stage.id or 0, []), key=lambda r: r.id or 0)
        examples: dict[str, list[str]] = defaultdict(list)
        for row in own:
            if len(examples[row.label]) < EXAMPLES_KEPT:
                examples[row.label].append(row.prompt_id)
        loops = (
            sum(r.label == "degenerate" or (r.label == "empty" and r.hit_max_tokens) for r in own)
            if own
            else None
        )
        tokens = sorted(r.tokens for r in own)
        max_tokens = max((r.tokens for r in own if r.hit_max_tokens), default=None)
        out.append(
            VariantResult(
                variant=stage.variant,
                adherence=float(stage.adherence or 0.0),
                n_prompts=int(stage.n_prompts or len(own)),
                label_counts=dict(stage.label_counts or Counter(r.label for r in own)),
                hit_max_share=stage.hit_max_share,
                loops=loops,
                examples={k: tuple(v) for k, v in examples.items()},
                runaway_examples=tuple(r.prompt_id for r in own if r.hit_max_tokens)[
                    :EXAMPLES_KEPT
                ],
                stage_id=stage.id,
                max_tokens=max_tokens,
                median_tokens=tokens[len(tokens) // 2] if tokens else None,
            )
        )
    return out


def _diagnostic(
    detection: Detection,
    scope: str,
    *,
    experiment_id: int | None,
    run_id: int | None,
    fingerprint: str | None,
) -> Diagnostic:
    return Diagnostic(
        experiment_id=experiment_id,
        run_id=run_id,
        fingerprint=fingerprint,
        scope=scope,
        pattern=detection.pattern,
        severity=detection.severity,
        message=detection.message,
        evidence={**detection.evidence, "variant": detection.variant},
    )


def record_run_diagnostics(session: Session, run_id: int) -> list[Diagnostic]:
    """Detect the per-run patterns from the run's finished evals and store them,
    replacing the run's previous `scope="run"` rows (idempotent: call it again after
    any further eval finishes). Flushes, does not commit."""
    run = session.exec(select(Run).where(Run.id == run_id).with_for_update()).first()
    if run is None:
        raise ValueError(f"no run {run_id}")
    detections = run_detections(
        variant_results(session, run_id), checkpoint_points(session, run_id)
    )
    session.exec(  # type: ignore[call-overload]
        delete(Diagnostic).where(col(Diagnostic.run_id) == run_id, col(Diagnostic.scope) == "run")
    )
    rows = [
        _diagnostic(
            d,
            "run",
            experiment_id=run.experiment_id,
            run_id=run_id,
            fingerprint=run.fingerprint,
        )
        for d in detections
    ]
    session.add_all(rows)
    session.flush()
    return rows


def seed_scores(session: Session, fingerprint: str) -> dict[str, list[SeedScore]]:
    """Adherence per variant and run, over every run with this config fingerprint."""
    found = session.exec(
        select(Stage, Run)
        .join(Run, col(Run.id) == col(Stage.run_id))
        .where(
            Run.fingerprint == fingerprint,
            Stage.kind == "eval",
            Stage.status == StageStatus.DONE,
            col(Stage.adherence).is_not(None),
        )
        .order_by(col(Run.id))
    ).all()
    out: dict[str, list[SeedScore]] = defaultdict(list)
    for stage, run in found:
        out[stage.variant].append(SeedScore(run.id or 0, run.seed, float(stage.adherence or 0.0)))
    return dict(out)


def record_config_diagnostics(session: Session, fingerprint: str) -> list[Diagnostic]:
    """Detect seed instability for a configuration and store it once per experiment
    with that fingerprint (so `farm status` shows it), replacing the previous
    `scope="config"` rows of the fingerprint. Flushes, does not commit."""
    experiments = session.exec(
        select(Experiment)
        .where(Experiment.fingerprint == fingerprint)
        .order_by(col(Experiment.id))
        .with_for_update()
    ).all()
    detections = config_detections(seed_scores(session, fingerprint))
    session.exec(  # type: ignore[call-overload]
        delete(Diagnostic).where(
            col(Diagnostic.fingerprint) == fingerprint, col(Diagnostic.scope) == "config"
        )
    )
    rows = [
        _diagnostic(d, "config", experiment_id=e.id, run_id=None, fingerprint=fingerprint)
        for d in detections
        for e in experiments
    ]
    session.add_all(rows)
    session.flush()
    return rows


@dataclass(frozen=True)
class Badge:
    """One pattern on one leaderboard row (fingerprint × variant)."""

    pattern: str
    severity: str
    runs: int  # runs of the config it was detected on (config-scope: 0)


def badges(session: Session, fingerprints: Sequence[str]) -> dict[tuple[str, str], list[Badge]]:
    """Leaderboard badges: {(fingerprint, variant): [Badge]} from run and config
    diagnostics (run diagnostics without a variant, such as misleading val loss,
    go on the `best` row)."""
    if not fingerprints:
        return {}
    rows = session.exec(
        select(Diagnostic).where(
            col(Diagnostic.fingerprint).in_(list(fingerprints)),
            col(Diagnostic.scope).in_(["run", "config"]),
        )
    ).all()
    runs: dict[tuple[str, str, str], set[int]] = defaultdict(set)
    severity: dict[tuple[str, str, str], str] = {}
    order = {"error": 0, "warning": 1, "info": 2}
    for d in rows:
        variant = (d.evidence or {}).get("variant") or "best"
        key = (d.fingerprint or "", variant, d.pattern)
        if d.run_id is not None:
            runs[key].add(d.run_id)
        else:
            runs.setdefault(key, set())
        if key not in severity or order.get(d.severity, 3) < order.get(severity[key], 3):
            severity[key] = d.severity
    out: dict[tuple[str, str], list[Badge]] = defaultdict(list)
    for (fp, variant, pattern), run_ids in sorted(runs.items()):
        out[(fp, variant)].append(Badge(pattern, severity[(fp, variant, pattern)], len(run_ids)))
    return dict(out)
