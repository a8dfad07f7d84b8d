"""The leaderboard: one ranked page, filter choices, plot points, comparisons.

`leaderboard_page` is the farm's one ranker: the web page, `farm leaderboard`
and the demo all read it (`leaderboard` is its rows alone). Two steps keep a
page fast at 100,000 runs: one scan ranks every config × variant on just the
aggregate the chosen order needs and counts the groups (a window function, so
no second scan), then `jobs.ranking`'s aggregation and the per-seed details run
over the eval stages of that page only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, func
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from jobs.db import Experiment, Run, Stage
from jobs.ranking import (
    LOCK_THRESHOLD,
    SEED_DETAIL_COLUMNS,
    SORT_KEYS,
    LeaderboardRow,
    aggregate_query,
    attach_seed_details,
    count_rows,
    row_from_aggregate,
)
from jobs.stats import FragilePrompt
from read.compare import config_diff, config_specs

SORT_LABELS = {
    "mean": "mean adherence, then worst seed",
    "worst": "worst seed",
    "best": "best seed",
    "lock_rate": "lock rate",
    "std": "spread across seeds (std)",
    "seeds": "seeds finished",
    "val_loss": "final val loss",
    "tokens_per_sec": "tokens/s",
}
FILTERS = ("base_model", "dataset", "suite")
# Below this many eval stages on a page, they are passed to SQL as a list of ids (which
# SQLite plans well without statistics); above it, as a subquery (under every driver's
# limit on bound parameters).
MAX_LISTED_IDS = 10_000


@dataclass
class LeaderboardPage:
    total: int
    rows: list[LeaderboardRow]


def _sort_columns(sort: str) -> list[Any]:
    """Only what the chosen order needs: each extra aggregate costs time at 100,000 runs."""
    adherence = Stage.adherence
    mean = func.avg(adherence)
    columns = {
        "mean": [mean.label("key"), func.min(adherence).label("tie")],
        "worst": [func.min(adherence).label("key")],
        "best": [func.max(adherence).label("key")],
        "std": [(func.avg(adherence * adherence) - mean * mean).label("key")],
        "lock_rate": [func.avg(case((adherence >= LOCK_THRESHOLD, 1.0), else_=0.0)).label("key")],
        "seeds": [func.count(func.distinct(Run.seed)).label("key")],
        "tokens_per_sec": [func.avg(Stage.tokens_per_sec).label("key")],
    }
    return columns[sort]


def _ranking_query(
    sort: str,
    base_model: str | None,
    dataset: str | None,
    suite: str | None,
    variant: str | None,
):  # type: ignore[no-untyped-def]
    conditions = [Stage.kind == "eval", Stage.status == "done", Stage.adherence.is_not(None)]  # type: ignore[union-attr]
    if variant:
        conditions.append(Stage.variant == variant)
    wanted = [
        column == value
        for column, value in (
            (Experiment.base_model, base_model),
            (Experiment.dataset, dataset),
            (Experiment.suite, suite),
        )
        if value
    ]
    if wanted:
        experiments = select(Experiment.id).where(*wanted)
        conditions.append(Run.experiment_id.in_(experiments))  # type: ignore[attr-defined]
    query = select(Run.fingerprint, Stage.variant).select_from(Stage)
    query = query.join(Run, Run.id == Stage.run_id)
    if sort == "val_loss":  # only this order needs the train stage of every run
        train = aliased(Stage)
        query = query.add_columns(func.avg(train.val_loss).label("key")).outerjoin(
            train, and_(train.run_id == Run.id, train.kind == "train")
        )
    else:
        query = query.add_columns(*_sort_columns(sort))
    return query.where(and_(*conditions)).group_by(Run.fingerprint, Stage.variant)


def leaderboard_page(
    session: Session,
    *,
    base_model: str | None = None,
    dataset: str | None = None,
    suite: str | None = None,
    variant: str | None = None,
    sort: str = "mean",
    descending: bool = True,
    limit: int = 25,
    offset: int = 0,
) -> LeaderboardPage:
    """One page of ranked rows (default order: mean adherence, then worst seed)
    and the number of rows in all pages."""
    if sort not in SORT_KEYS:
        raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}")
    filters = {"base_model": base_model, "dataset": dataset, "suite": suite, "variant": variant}
    ranked = _ranking_query(sort, base_model, dataset, suite, variant).subquery()
    direction = (lambda c: c.desc()) if descending else (lambda c: c.asc())
    order = [direction(ranked.c.key)]
    if sort == "mean":
        order.append(direction(ranked.c.tie))  # then the worst seed
    order += [ranked.c.fingerprint, ranked.c.variant]
    page = session.execute(
        select(ranked.c.fingerprint, ranked.c.variant, func.count().over().label("total"))
        .order_by(*order)
        .limit(limit)
        .offset(offset)
    ).all()
    if not page:
        return LeaderboardPage(count_rows(session, **filters) if offset else 0, [])
    keys = [(fp, v) for fp, v, _ in page]
    details = {(r.fingerprint, r.variant): r for r in _full_rows(session, keys, filters)}
    return LeaderboardPage(int(page[0].total), [details[k] for k in keys if k in details])


def leaderboard(session: Session, limit: int = 100, **query: Any) -> list[LeaderboardRow]:
    """The ranked rows of one page (`leaderboard_page`'s filters and order), for
    `farm leaderboard` and the demo."""
    return leaderboard_page(session, limit=limit, **query).rows


def _full_rows(
    session: Session, keys: list[tuple[str, str]], filters: dict[str, str | None]
) -> list[LeaderboardRow]:
    """`jobs.ranking`'s aggregation and details, for the rows of one page.

    The eval stages of the page are found from its runs (by fingerprint, then run id),
    so the planner never walks every eval stage of the farm for them."""
    wanted = set(keys)
    runs = select(Run.id).where(Run.fingerprint.in_(sorted({fp for fp, _ in keys})))  # type: ignore[attr-defined]
    candidates = session.execute(
        select(Stage.id, Stage.kind, Stage.status, Stage.variant, Stage.adherence).where(
            Stage.run_id.in_(runs)  # type: ignore[attr-defined]
        )
    )
    stage_ids = [
        i
        for i, kind, status, variant, adherence in candidates
        if kind == "eval" and status == "done" and adherence is not None
    ]
    if len(stage_ids) > MAX_LISTED_IDS:  # a huge page (thousands of seeds): let SQL find them
        listed: Any = select(Stage.id).where(Stage.run_id.in_(runs))  # type: ignore[attr-defined]
    else:
        listed = stage_ids
    query = aggregate_query(**filters).where(Stage.id.in_(listed))  # type: ignore[union-attr]
    rows = [
        row_from_aggregate(r)
        for r in session.execute(query)
        if (r.fingerprint, r.variant) in wanted
    ]  # fmt: skip
    per_seed = session.execute(
        select(*SEED_DETAIL_COLUMNS)
        .join(Run, Run.id == Stage.run_id)
        .where(Stage.id.in_(listed), Stage.kind == "eval", Stage.status == "done")  # type: ignore[union-attr]
        .where(Stage.adherence.is_not(None))  # type: ignore[union-attr]
        .order_by(Run.seed)
    )
    attach_seed_details(rows, per_seed)
    return rows


def filter_choices(session: Session, limit: int = 500) -> dict[str, list[str]]:
    """Distinct base models, datasets and suites (each an indexed column)."""
    out = {}
    for name in FILTERS:
        column = getattr(Experiment, name)
        out[name] = list(session.exec(select(column).distinct().order_by(column).limit(limit)))
    return out


def row_label(row: LeaderboardRow) -> str:
    return f"{row.name} · {row.fingerprint[:8]} · {row.variant}"


def label_mix_text(mix: dict[str, float], top: int = 4) -> str:
    ranked = sorted(mix.items(), key=lambda item: -item[1])[:top]
    return ", ".join(f"{label} {share:.0%}" for label, share in ranked)


def table_rows(rows: Sequence[LeaderboardRow]) -> list[dict[str, Any]]:
    return [
        {
            "config": f"{r.name} · {r.fingerprint[:8]}",
            "variant": r.variant,
            "seeds": r.seeds,
            "mean": r.mean,
            # next to the mean: what this variant's quantization (or fuse) cost
            "points_lost": r.points_lost,
            # the mean's 95% interval from the seed scores, as "[23, 80]" in points
            "interval": interval_text(r),
            "seed_lock": r.seed_lock.get(3),
            "std": r.std,
            "worst": r.worst,
            "best": r.best,
            "lock_rate": r.lock_rate,
            "per_seed": [score for _, score in r.seed_scores],
            "label_mix": label_mix_text(r.label_mix),
            "val_loss": r.val_loss,
            "latency_s": r.latency_s,
            "tokens_per_sec": r.tokens_per_sec,
            "peak_memory_gb": r.peak_memory_gb,
            "size_mb": r.size_bytes / 1e6 if r.size_bytes is not None else None,
            "hit_max": r.hit_max_share,
            "base_model": r.base_model,
        }
        for r in rows
    ]


def interval_text(row: LeaderboardRow) -> str:
    if row.ci_low is None or row.ci_high is None:
        return ""
    return f"[{100 * row.ci_low:.0f}, {100 * row.ci_high:.0f}] · {len(row.seed_scores)} seeds"


def fragile_rows(fragile: Sequence[FragilePrompt]) -> list[dict[str, Any]]:
    """One row per seed-fragile prompt: how many seeds got it right, each seed's label."""
    return [
        {"prompt": f.prompt_id, "right": f"{f.right} of {f.seeds} seeds",
         **{f"seed {seed}": label for seed, label in f.labels.items()}}
        for f in fragile
    ]  # fmt: skip


def seed_points(rows: Sequence[LeaderboardRow]) -> list[dict[str, Any]]:
    """One point per seed per row, for the strip plot."""
    return [
        {"config": row_label(r), "rank": i, "seed": seed, "adherence": score}
        for i, r in enumerate(rows)
        for seed, score in r.seed_scores
    ]


def scatter_points(rows: Sequence[LeaderboardRow]) -> list[dict[str, Any]]:
    """Mean final val loss against mean adherence, one point per row that has a loss."""
    return [
        {
            "config": row_label(r),
            "name": f"{r.name} · {r.fingerprint[:8]}",
            "variant": r.variant,
            "val_loss": r.val_loss,
            "adherence": r.mean,
            "worst": r.worst,
            "seeds": r.seeds,
        }
        for r in rows
        if r.val_loss is not None
    ]


def compare_rows(
    session: Session, rows: Sequence[LeaderboardRow], only_differences: bool = False
) -> list[dict[str, Any]]:
    """Field-by-field comparison of the configs behind leaderboard rows, the variant first."""
    specs = config_specs(session, [r.fingerprint for r in rows])
    columns = [(row_label(r), {"variant": r.variant, **specs.get(r.fingerprint, {})}) for r in rows]
    return config_diff(columns, only_differences=only_differences)


def best_seed_run(session: Session, row: LeaderboardRow) -> int | None:
    """The run of the row's best-scoring seed (its newest, when a seed ran twice):
    the one the page offers to export."""
    if not row.seed_scores:
        return None
    seed = max(row.seed_scores, key=lambda pair: pair[1])[0]
    return session.exec(
        select(Run.id)
        .where(Run.fingerprint == row.fingerprint, Run.seed == seed)
        .order_by(Run.id.desc())  # type: ignore[union-attr]
    ).first()
