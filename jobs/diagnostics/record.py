"""Run diagnostics, the database edge: read a run's (or a configuration's)
finished evals, run the detections of `jobs.diagnostics.detect` on them and
store what they find as `Diagnostic` rows; `badges` reads them back for the
leaderboard.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, delete, select

from jobs.checkpoints import checkpoint_points
from jobs.db import Diagnostic, EvalResult, Experiment, Run, Stage
from jobs.diagnostics.detect import (
    EXAMPLES_KEPT,
    Detection,
    SeedScore,
    VariantResult,
    config_detections,
    run_detections,
)
from jobs.states import StageStatus


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
