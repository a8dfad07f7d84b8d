"""The leaderboard's aggregation: configurations scored by format adherence across seeds.

One row per config fingerprint × variant. The one ranker that orders and pages
these rows is `read.leaderboard.leaderboard_page`. Aggregation runs in SQL over the
per-stage summaries that each eval stage writes once (adherence, label counts,
latency…), so the query cost grows with runs, not with eval rows. Validation
loss is shown for contrast and never used as the rank key: among earlier runs
is one whose val loss improved while adherence collapsed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import aliased
from sqlmodel import Session

from jobs.checks.findings import MIN_SAFE_BITS
from jobs.db import Experiment, Run, Stage
from jobs.experiment_spec.options import variant_bits
from jobs.states import StageStatus
from jobs.stats import Interval, mean_interval, seed_locks

LOCK_THRESHOLD = 0.8

SORT_KEYS = ("mean", "worst", "best", "std", "lock_rate", "seeds", "val_loss", "tokens_per_sec")


@dataclass
class LeaderboardRow:
    fingerprint: str
    variant: str
    name: str
    base_model: str
    dataset: str
    suite: str
    seeds: int
    mean: float
    std: float
    worst: float
    best: float
    lock_rate: float
    val_loss: float | None
    latency_s: float | None
    tokens_per_sec: float | None
    peak_memory_gb: float | None
    size_bytes: float | None
    hit_max_share: float | None
    label_mix: dict[str, float] = field(default_factory=dict)
    seed_scores: list[tuple[int, float]] = field(default_factory=list)
    # Quantized and fused variants: adherence minus their twin's, in points, averaged
    # over the runs that evaluated both (-34.0: the quantization cost 34 points).
    points_lost: float | None = None
    # The mean's 95% interval from the seed scores (jobs.stats.mean_interval).
    ci_low: float | None = None
    ci_high: float | None = None
    # seed-lock@k for k = 1…3: the chance k seeds all get a prompt right.
    seed_lock: dict[int, float] = field(default_factory=dict)

    def interval(self) -> Interval | None:
        if self.ci_low is None or self.ci_high is None:
            return None
        return Interval(self.mean, self.ci_low, self.ci_high, len(self.seed_scores) or self.seeds)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def population_std(mean: float, mean_of_squares: float) -> float:
    # SQLite has no stddev(); E[x²] − E[x]² is computed in SQL, the root here.
    return math.sqrt(max(mean_of_squares - mean * mean, 0.0))


def label_shares(counts: list[dict[str, int] | None]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c or {})
    n = sum(total.values())
    return {label: total[label] / n for label in sorted(total)} if n else {}


def twin_variant(variant: str, evaluated: Iterable[str]) -> str | None:
    """What a variant's adherence is compared with, by the rule the signal-loss
    diagnostic uses: a quantized variant against the fused f16 model, else the best
    variant of ≥ MIN_SAFE_BITS bits with more bits than it, else the adapter; the fused
    model against the adapter. None for any other variant, or when no twin was evaluated."""
    names = set(evaluated)
    if variant == "fused":
        return "adapter" if "adapter" in names else None
    bits = variant_bits(variant)
    if bits is None:
        return None
    if "fused" in names:
        return "fused"
    safer = [
        (b, name)
        for name in names
        if (b := variant_bits(name)) is not None and b >= MIN_SAFE_BITS and b > bits
    ]
    if safer:
        return max(safer)[1]
    return "adapter" if "adapter" in names else None


def points_lost(adherence: Mapping[str, float]) -> dict[str, float]:
    """One run's adherence per variant -> each quantized / fused variant's adherence
    minus its twin's, in points (negative when the variant lost the adapter's signal)."""
    out = {}
    for variant, score in adherence.items():
        twin = twin_variant(variant, adherence)
        if twin is not None:
            out[variant] = round(100.0 * (score - adherence[twin]), 6)
    return out


def mean_points_lost(
    scores: Iterable[tuple[str, int, str, float]],
) -> dict[tuple[str, str], float]:
    """(fingerprint, run id, variant, adherence) rows -> (fingerprint, variant) -> the
    mean over runs of `points_lost`: the drop is measured within each run (its own
    twin, same seed), then averaged, as the leaderboard averages adherence."""
    runs: dict[tuple[str, int], dict[str, float]] = {}
    for fingerprint, run_id, variant, adherence in scores:
        runs.setdefault((fingerprint, run_id), {})[variant] = float(adherence)
    drops: dict[tuple[str, str], list[float]] = {}
    for (fingerprint, _), adherence in runs.items():
        for variant, drop in points_lost(adherence).items():
            drops.setdefault((fingerprint, variant), []).append(drop)
    return {key: sum(values) / len(values) for key, values in drops.items()}


def aggregate_query(
    base_model: str | None, dataset: str | None, suite: str | None, variant: str | None
):  # type: ignore[no-untyped-def]
    train = aliased(Stage)
    val_loss = (
        select(train.val_loss)
        .where(train.run_id == Run.id, train.kind == "train")
        .limit(1)
        .scalar_subquery()
    )
    adherence = Stage.adherence
    conditions = [Stage.kind == "eval", Stage.status == StageStatus.DONE, adherence.is_not(None)]
    if base_model:
        conditions.append(Experiment.base_model == base_model)
    if dataset:
        conditions.append(Experiment.dataset == dataset)
    if suite:
        conditions.append(Experiment.suite == suite)
    if variant:
        conditions.append(Stage.variant == variant)
    mean = func.avg(adherence).label("mean")
    worst = func.min(adherence).label("worst")
    return (
        select(
            Run.fingerprint,
            Stage.variant,
            func.min(Experiment.name).label("name"),
            func.min(Experiment.base_model).label("base_model"),
            func.min(Experiment.dataset).label("dataset"),
            func.min(Experiment.suite).label("suite"),
            func.count(func.distinct(Run.seed)).label("seeds"),
            mean,
            func.avg(adherence * adherence).label("mean_sq"),
            worst,
            func.max(adherence).label("best"),
            func.avg(case((adherence >= LOCK_THRESHOLD, 1.0), else_=0.0)).label("lock_rate"),
            func.avg(val_loss).label("val_loss"),
            func.avg(Stage.latency_s).label("latency_s"),
            func.avg(Stage.tokens_per_sec).label("tokens_per_sec"),
            func.max(Stage.peak_memory_gb).label("peak_memory_gb"),
            func.avg(Stage.size_bytes).label("size_bytes"),
            func.avg(Stage.hit_max_share).label("hit_max_share"),
        )
        .select_from(Stage)
        .join(Run, Run.id == Stage.run_id)
        .join(Experiment, Experiment.id == Run.experiment_id)
        .where(and_(*conditions))
        .group_by(Run.fingerprint, Stage.variant)
    )


def row_from_aggregate(r: Any) -> LeaderboardRow:
    """A LeaderboardRow from one row of `aggregate_query` (details attached later)."""
    return LeaderboardRow(
        fingerprint=r.fingerprint,
        variant=r.variant,
        name=r.name,
        base_model=r.base_model,
        dataset=r.dataset,
        suite=r.suite,
        seeds=int(r.seeds),
        mean=float(r.mean),
        std=population_std(float(r.mean), float(r.mean_sq)),
        worst=float(r.worst),
        best=float(r.best),
        lock_rate=float(r.lock_rate),
        val_loss=optional_float(r.val_loss),
        latency_s=optional_float(r.latency_s),
        tokens_per_sec=optional_float(r.tokens_per_sec),
        peak_memory_gb=optional_float(r.peak_memory_gb),
        size_bytes=optional_float(r.size_bytes),
        hit_max_share=optional_float(r.hit_max_share),
    )


def count_rows(session: Session, **filters: str | None) -> int:
    query = aggregate_query(
        filters.get("base_model"),
        filters.get("dataset"),
        filters.get("suite"),
        filters.get("variant"),
    ).subquery()
    return int(session.execute(select(func.count()).select_from(query)).scalar_one())


# What `attach_seed_details` reads of each finished eval stage of a page's runs.
SEED_DETAIL_COLUMNS = (
    Run.fingerprint, Stage.variant, Run.seed, Stage.adherence, Stage.label_counts, Run.id,
    Stage.passed_prompts, Stage.n_prompts,
)  # fmt: skip


def attach_seed_details(rows: list[LeaderboardRow], per_seed: Iterable[Any]) -> None:
    """Fill each row's per-seed scores, label mix, points lost, interval and
    seed-lock@k from `SEED_DETAIL_COLUMNS` rows (ordered by seed). Every eval of
    the page's runs is needed, not only the page's variants: a q4 row needs its
    twin (fused, q8…) from the same runs for its points lost."""
    scores: dict[tuple[str, str], list[tuple[int, float]]] = {}
    labels: dict[tuple[str, str], list[dict[str, int] | None]] = {}
    passes: dict[tuple[str, str], list[list[str]]] = {}
    prompts: dict[tuple[str, str], int] = {}
    per_run = []
    for fp, variant, seed, adherence, counts, run_id, passed, n_prompts in per_seed:
        key = (fp, variant)
        scores.setdefault(key, []).append((int(seed), float(adherence)))
        labels.setdefault(key, []).append(counts)
        per_run.append((fp, int(run_id), variant, float(adherence)))
        if passed is not None and n_prompts:
            passes.setdefault(key, []).append(list(passed))
            prompts[key] = max(prompts.get(key, 0), int(n_prompts))
    lost = mean_points_lost(per_run)
    for row in rows:
        key = (row.fingerprint, row.variant)
        row.seed_scores = scores.get(key, [])
        row.label_mix = label_shares(labels.get(key, []))
        row.points_lost = lost.get(key)
        if row.seed_scores:
            interval = mean_interval([score for _, score in row.seed_scores])
            row.ci_low, row.ci_high = interval.low, interval.high
        row.seed_lock = seed_locks(passes.get(key, []), prompts.get(key, 0))


def optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
