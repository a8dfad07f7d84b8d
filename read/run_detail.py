"""The run page: one run's curves, stages, artifacts and eval rows, variants side by side.

Every query is scoped to one run (indexed by run_id), and the per-prompt eval
table is filtered and paginated in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from jobs.dag import is_checkpoint_variant
from jobs.db import Artifact, Diagnostic, EvalResult, Experiment, Metric, Run, Stage
from jobs.experiment_spec.options import variant_bits
from read.attempts import (
    attempt_lines,
    attempts_by_stage,
    has_history,
    progress_note,
    run_story,
)
from read.stages import elapsed_s, stage_label


@dataclass
class RunHeader:
    id: int
    seed: int
    status: str
    host: str | None
    created_at: datetime
    finished_at: datetime | None
    experiment_id: int
    name: str
    fingerprint: str
    base_model: str
    dataset: str
    suite: str
    sibling_runs: list[tuple[int, int, str]] = field(default_factory=list)  # id, seed, status
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    # "training stopped early after iteration 300 of 500 — locked: …", or None.
    early_stop: str | None = None
    iters: int | None = None  # the training iterations the spec plans


def run_header(session: Session, run_id: int) -> RunHeader | None:
    row = session.exec(
        select(Run, Experiment)
        .join(Experiment, Experiment.id == Run.experiment_id)
        .where(Run.id == run_id)
    ).first()
    if row is None:
        return None
    run, experiment = row
    siblings = session.execute(
        select(Run.id, Run.seed, Run.status)
        .where(Run.experiment_id == experiment.id)
        .order_by(Run.seed)
        .limit(200)
    ).all()
    diagnostics = session.exec(
        select(Diagnostic)
        .where((Diagnostic.run_id == run_id) | (Diagnostic.experiment_id == experiment.id))
        .where((Diagnostic.run_id == run_id) | Diagnostic.run_id.is_(None))  # type: ignore[union-attr]
        .order_by(Diagnostic.id)
    ).all()
    return RunHeader(
        id=run.id or 0,
        seed=run.seed,
        status=run.status,
        host=run.host,
        created_at=run.created_at,
        finished_at=run.finished_at,
        experiment_id=experiment.id or 0,
        name=experiment.name,
        fingerprint=experiment.fingerprint,
        base_model=experiment.base_model,
        dataset=experiment.dataset,
        suite=experiment.suite,
        sibling_runs=[(int(i), int(s), str(st)) for i, s, st in siblings],
        diagnostics=[
            {
                "severity": d.severity,
                "pattern": d.pattern,
                "scope": d.scope,
                "message": d.message,
                "variant": (d.evidence or {}).get("variant"),
            }
            for d in diagnostics
        ],
        early_stop=early_stop_of(session, run_id),
        iters=(experiment.spec.get("train") or {}).get("iters"),
    )


def early_stop_of(session: Session, run_id: int) -> str | None:
    """Why the run's training ended before its last iteration, in one line, e.g.
    "training stopped early after iteration 300 of 500 — locked: …"; None if it did not."""
    train = session.exec(select(Stage).where(Stage.run_id == run_id, Stage.kind == "train")).first()
    if train is None or not train.early_stop:
        return None
    where = f" after iteration {train.progress} of {train.total}" if train.total else ""
    return f"training stopped early{where} — {train.early_stop}"


_SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}


def diagnostic_groups(diagnostics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's diagnostics, one card per pattern rather than one near-identical
    line per variant: {pattern, severity (the worst), scope, variants, messages},
    the worst first, and within a card the worst finding first, then by variant.
    Preflight findings group apart from the run's."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for d in diagnostics:
        scope = "preflight" if d["scope"] == "preflight" else "run"
        groups.setdefault((scope, d["pattern"]), []).append(d)
    out = []
    for (scope, pattern), found in groups.items():
        found.sort(key=lambda d: (_rank(d["severity"]), variant_order(d.get("variant") or "")))
        variants = [d["variant"] for d in found if d.get("variant")]
        messages = [d["message"] for d in found]
        out.append(
            {
                "pattern": pattern,
                "severity": found[0]["severity"],
                "scope": scope,
                "variants": sorted(set(variants), key=variant_order),
                "messages": list(dict.fromkeys(messages)),  # in order, once each
            }
        )
    return sorted(out, key=lambda g: _rank(g["severity"]))


def _rank(severity: str) -> int:
    return _SEVERITY_RANK.get(severity, len(_SEVERITY_RANK))


# --- training curves ------------------------------------------------------------


def training_metrics(session: Session, run_id: int) -> list[dict[str, Any]]:
    """Every loss report and adherence probe of the run's training, oldest first."""
    query = (
        select(
            Metric.iteration,
            Metric.train_loss,
            Metric.val_loss,
            Metric.learning_rate,
            Metric.tokens_per_sec,
            Metric.iterations_per_sec,
            Metric.peak_memory_gb,
            Metric.trained_tokens,
            Metric.probe_adherence,
            Metric.probe_labels,
        )
        .where(Metric.run_id == run_id)
        .order_by(Metric.iteration, Metric.id)
    )
    return [dict(row._mapping) for row in session.execute(query)]


def loss_series(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Long format for one chart: {iteration, loss, value}."""
    out = []
    for m in metrics:
        for name in ("train_loss", "val_loss"):
            if m[name] is not None:
                out.append({"iteration": m["iteration"], "loss": name.replace("_", " "),
                            "value": m[name]})  # fmt: skip
    return out


def probe_series(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The adherence probe at each checkpoint: {iteration, adherence, labels}, where
    labels reads like "execute_code 6, wrong_tool 2"."""
    return [
        {
            "iteration": m["iteration"],
            "adherence": m["probe_adherence"],
            "labels": ", ".join(
                f"{k} {v}"
                for k, v in sorted((m["probe_labels"] or {}).items(), key=lambda x: -x[1])
            ),
        }
        for m in metrics
        if m["probe_adherence"] is not None
    ]


def throughput_series(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Long format: {iteration, measure, value} for tokens/s and peak memory (GB)."""
    out = []
    for m in metrics:
        if m["tokens_per_sec"] is not None:
            out.append({"iteration": m["iteration"], "measure": "tokens/s",
                        "value": m["tokens_per_sec"]})  # fmt: skip
        if m["peak_memory_gb"] is not None:
            out.append({"iteration": m["iteration"], "measure": "peak memory (GB)",
                        "value": m["peak_memory_gb"]})  # fmt: skip
    return out


# --- stages and artifacts ------------------------------------------------------------


def stage_timeline(session: Session, run_id: int) -> list[dict[str, Any]]:
    stages = session.exec(select(Stage).where(Stage.run_id == run_id).order_by(Stage.id)).all()
    label = {s.id: stage_label(s.kind, s.variant) for s in stages}
    tries = attempts_by_stage(session, [s.id or 0 for s in stages])
    out = []
    for s in stages:
        error = (s.error or "").strip()
        rows = tries[s.id or 0]
        out.append(
            {
                "id": s.id,
                "stage": label[s.id],
                "kind": s.kind,
                "variant": s.variant,
                "after": label.get(s.depends_on, ""),
                "status": s.status,
                "worker": s.worker or "",
                "queue": s.queue or "",
                "progress": f"{s.progress}/{s.total}" if s.total else "",
                "enqueued_at": s.enqueued_at,
                "started_at": s.started_at,
                "finished_at": s.finished_at,
                "seconds": elapsed_s(s.started_at, s.finished_at),
                "adherence": s.adherence,
                "attempt": s.attempt,
                "resumed_from": s.resumed_from,
                "error": error.splitlines()[-1] if error else "",
                "error_full": error,
                # In words, only when retried, resumed, lost or re-planned.
                "attempts": attempt_lines(s, rows) if has_history(s, rows) else [],
                "attempts_title": _attempts_title(label[s.id], s),
            }
        )
    return out


def _attempts_title(label: str, stage: Stage) -> str:
    """The heading of a stage's attempt list, e.g. "train: attempt 2, resumed from 20"."""
    return f"{label}: {progress_note(stage) or f'attempt {stage.attempt}'}"


def attempt_story(session: Session, run_id: int) -> str:
    """One sentence on what the run went through (lost workers, retries, resumes,
    re-plans), for the top of the run page; empty for a run that ran straight."""
    stages = session.exec(select(Stage).where(Stage.run_id == run_id).order_by(Stage.id)).all()
    tries = attempts_by_stage(session, [s.id or 0 for s in stages])
    return run_story((s, tries[s.id or 0]) for s in stages)


def artifacts(session: Session, run_id: int) -> list[dict[str, Any]]:
    rows = session.exec(
        select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.id)
    ).all()
    return [
        {
            "kind": a.kind,
            "variant": a.variant,
            "iteration": a.iteration,
            "size_mb": a.bytes / 1e6,
            "host": a.host,
            "path": a.path,
            "sha256": a.sha256[:12],
        }
        for a in rows
    ]


# --- variants side by side ------------------------------------------------------------


def variant_order(variant: str) -> tuple[int, int, str]:
    """adapter, fused, then quantized variants from most bits to fewest (q8, mxfp8,
    q6, … mxfp4, mixed_3_6, q2), then checkpoints in order, then best and base."""
    if variant == "adapter":
        return (0, 0, "")
    if variant == "fused":
        return (1, 0, "")
    bits = variant_bits(variant)
    if bits is not None:
        return (2, -bits, variant)
    if is_checkpoint_variant(variant):
        return (3, 0, variant)
    return (4, 0, variant)


def variant_summaries(session: Session, run_id: int) -> list[dict[str, Any]]:
    """One row per evaluated variant of the run: adherence, label mix, speed, size."""
    stages = session.exec(select(Stage).where(Stage.run_id == run_id, Stage.kind == "eval")).all()
    ended_by = stop_reasons(session, [s.id or 0 for s in stages])
    # What each quantized / fused variant lost against its twin, as the leaderboard
    # and the signal-loss diagnostic measure it.
    from jobs.ranking import points_lost

    lost = points_lost({s.variant: s.adherence for s in stages if s.adherence is not None})
    rows = []
    for s in sorted(stages, key=lambda s: variant_order(s.variant)):
        counts = s.label_counts or {}
        total = sum(counts.values())
        rows.append(
            {
                "variant": s.variant,
                "status": s.status,
                "adherence": s.adherence,
                "points_lost": lost.get(s.variant),
                "prompts": s.n_prompts,
                "label_mix": {k: v / total for k, v in sorted(counts.items())} if total else {},
                # eos / a stop string / max_tokens: a model that never stops shows here.
                "ended_by": ended_by.get(s.id or 0, {}),
                "eval_s": elapsed_s(s.started_at, s.finished_at) if s.finished_at else None,
                "hit_max_tokens": s.hit_max_share,
                "latency_s": s.latency_s,
                "tokens_per_sec": s.tokens_per_sec,
                "peak_memory_gb": s.peak_memory_gb,
                "size_mb": s.size_bytes / 1e6 if s.size_bytes else None,
            }
        )
    return rows


def stop_reasons(session: Session, stage_ids: list[int]) -> dict[int, dict[str, int]]:
    """Per eval stage, how many responses ended on eos, a stop string or max_tokens."""
    out: dict[int, dict[str, int]] = {}
    if not stage_ids:
        return out
    rows = session.execute(
        select(EvalResult.stage_id, EvalResult.stop_reason, func.count())
        .where(col(EvalResult.stage_id).in_(stage_ids))
        .group_by(EvalResult.stage_id, EvalResult.stop_reason)
    )
    for stage_id, reason, n in rows:
        out.setdefault(stage_id, {})[reason or "unknown"] = int(n)
    return out


def eval_cost(summaries: list[dict[str, Any]]) -> str:
    """One line on what evaluating the run cost, e.g. "eval 24.7 s over 11 variants
    (base 6.9 s, adapter 1.1 s, …)"; empty before any eval finished."""
    timed = [(s["variant"], s["eval_s"]) for s in summaries if s["eval_s"] is not None]
    if not timed:
        return ""
    parts = ", ".join(f"{v} {t:.1f} s" for v, t in timed)
    return f"eval {sum(t for _, t in timed):.1f} s over {len(timed)} variants ({parts})"


def variant_matrix(session: Session, run_id: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Per prompt, the label each variant got: (variants in order, rows)."""
    query = (
        select(
            EvalResult.prompt_id,
            EvalResult.category,
            EvalResult.expect,
            Stage.variant,
            EvalResult.label,
            EvalResult.score,
        )
        .join(Stage, Stage.id == EvalResult.stage_id)
        .where(EvalResult.run_id == run_id)
        .order_by(EvalResult.id)
    )
    variants: set[str] = set()
    rows: dict[str, dict[str, Any]] = {}
    for prompt_id, category, expect, variant, label, score in session.execute(query):
        variants.add(variant)
        row = rows.setdefault(
            prompt_id, {"prompt": prompt_id, "category": category, "expect": expect}
        )
        row[variant] = f"{label} ({score:g})"
    ordered = sorted(variants, key=variant_order)
    return ordered, list(rows.values())


# --- the per-prompt eval table ------------------------------------------------------


def eval_variants(session: Session, run_id: int) -> list[str]:
    variants = session.exec(
        select(Stage.variant).where(Stage.run_id == run_id, Stage.kind == "eval")
    ).all()
    return sorted(set(variants), key=variant_order)


def eval_filter_options(session: Session, run_id: int, variant: str) -> tuple[list[str], list[str]]:
    """(labels, categories) present in one variant's eval rows."""
    base = (
        select(EvalResult.label, EvalResult.category)
        .join(Stage, Stage.id == EvalResult.stage_id)
        .where(EvalResult.run_id == run_id, Stage.variant == variant)
        .distinct()
    )
    pairs = session.execute(base).all()
    return sorted({p[0] for p in pairs}), sorted({p[1] for p in pairs})


def _eval_query(run_id: int, variant: str, labels: list[str] | None, categories: list[str] | None):  # type: ignore[no-untyped-def]
    conditions = [EvalResult.run_id == run_id, Stage.variant == variant]
    if labels:
        conditions.append(EvalResult.label.in_(labels))  # type: ignore[attr-defined]
    if categories:
        conditions.append(EvalResult.category.in_(categories))  # type: ignore[attr-defined]
    return select(EvalResult).join(Stage, Stage.id == EvalResult.stage_id).where(*conditions)


def count_eval_rows(
    session: Session,
    run_id: int,
    variant: str,
    labels: list[str] | None = None,
    categories: list[str] | None = None,
) -> int:
    query = _eval_query(run_id, variant, labels, categories).subquery()
    return int(session.execute(select(func.count()).select_from(query)).scalar_one())


def eval_rows(
    session: Session,
    run_id: int,
    variant: str,
    labels: list[str] | None = None,
    categories: list[str] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """One page of one variant's eval rows, filtered by label and category."""
    query = _eval_query(run_id, variant, labels, categories)
    page = session.exec(query.order_by(EvalResult.id).limit(limit).offset(offset)).all()
    return [
        {
            "prompt_id": r.prompt_id,
            "category": r.category,
            "expect": r.expect,
            "prompt": r.prompt,
            "response": r.response,
            "label": r.label,
            "score": r.score,
            "thought": r.thought,
            "tokens": r.tokens,
            "latency_s": r.latency_s,
            "hit_max_tokens": r.hit_max_tokens,
        }
        for r in page
    ]
