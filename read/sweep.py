"""The sweep view: what a grid of experiments says about each swept knob.

`sweep_scores` is the one query (every finished eval of the sweep's runs);
everything else is pure over its rows: per grid point the mean adherence and
each seed's, per swept knob the adherence at each of its values (pooling every
point and seed that has the value), and the knob that moved adherence most,
measured as the range of its per-value means. The Leaderboard page and
`farm leaderboard --sweep ID` show the same `SweepView`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from statistics import fmean
from typing import Any

from sqlmodel import Session, col, select

from jobs.dag import is_checkpoint_variant
from jobs.db import Experiment, Run, Stage, Sweep
from jobs.experiment_spec.sweep import point_label, short_knob
from jobs.experiment_spec.sweep import show_value as value_text
from jobs.states import StageStatus
from jobs.stats import (
    Interval,
    SeedPlan,
    Verdict,
    compare_seeds,
    mean_interval,
    seeds_needed,
    unpaired,
)

# The variant a sweep is read by unless another is picked: train knobs act on it directly.
DEFAULT_VARIANT = "adapter"


@dataclass(frozen=True)
class SweepInfo:
    id: int
    name: str
    axes: dict[str, list[Any]]
    created_at: datetime | None = None

    @property
    def title(self) -> str:
        return f"#{self.id} {self.name} ({', '.join(self.axes)})"


@dataclass(frozen=True)
class PointInfo:
    experiment_id: int
    point: dict[str, Any]
    fingerprint: str


@dataclass(frozen=True)
class SeedScore:
    experiment_id: int
    seed: int
    variant: str
    adherence: float


@dataclass
class PointRow:
    experiment_id: int
    point: dict[str, Any]
    fingerprint: str
    seeds: dict[int, float] = field(default_factory=dict)

    @property
    def mean(self) -> float | None:
        return fmean(self.seeds.values()) if self.seeds else None

    @property
    def label(self) -> str:
        return point_label(self.point)


@dataclass(frozen=True)
class KnobValue:
    value: Any
    text: str
    scores: tuple[float, ...]

    @property
    def mean(self) -> float | None:
        return fmean(self.scores) if self.scores else None

    @property
    def interval(self) -> Interval | None:
        """The mean's 95% interval over every point and seed with this value."""
        return mean_interval(self.scores) if self.scores else None


@dataclass(frozen=True)
class KnobEffect:
    knob: str  # the dotted path
    name: str  # as people read it: the last part unless two knobs share it
    values: tuple[KnobValue, ...]

    @property
    def scored(self) -> list[KnobValue]:
        return [v for v in self.values if v.mean is not None]

    @property
    def low(self) -> KnobValue | None:
        return min(self.scored, key=lambda v: v.mean or 0.0, default=None)

    @property
    def high(self) -> KnobValue | None:
        return max(self.scored, key=lambda v: v.mean or 0.0, default=None)

    @property
    def spread(self) -> float | None:
        """Range of the per-value means; None until two values have scores."""
        if len(self.scored) < 2 or self.low is None or self.high is None:
            return None
        return (self.high.mean or 0.0) - (self.low.mean or 0.0)

    def verdict(self) -> tuple[Verdict, SeedPlan] | None:
        """The highest value against the lowest: is the gap more than seed noise?
        Unpaired (Welch): each value pools several grid points and seeds."""
        if self.spread is None or self.low is None or self.high is None:
            return None
        high, low = unpaired(self.high.scores, self.low.scores)
        labels = (f"{self.name}={self.high.text}", f"{self.name}={self.low.text}")
        return compare_seeds(high, low, labels), seeds_needed(high, low)


@dataclass
class SweepView:
    sweep: SweepInfo
    variant: str
    variants: list[str]
    points: list[PointRow]
    knobs: list[KnobEffect]

    @property
    def strongest(self) -> KnobEffect | None:
        """The knob with the widest range of per-value means (ties: the first written)."""
        ranked = [k for k in self.knobs if k.spread is not None]
        return max(ranked, key=lambda k: k.spread or 0.0, default=None)

    @property
    def seeds(self) -> list[int]:
        return sorted({s for p in self.points for s in p.seeds})

    def strongest_line(self) -> str:
        """The knob whose values differ most, claimed as an effect only when the
        verdict between its best and worst value shows it beyond seed noise:
        `learning_rate moved adherence most: 0.21 → 0.55 (1e-05 → 0.0001); …`."""
        knob = self.strongest
        judged = knob.verdict() if knob is not None else None
        if knob is None or knob.low is None or knob.high is None or judged is None:
            return f"no {self.variant} adherence on two values of any knob yet"
        low, high = knob.low, knob.high
        verdict, plan = judged
        move = f"{low.mean:.2f} → {high.mean:.2f} ({low.text} → {high.text})"
        if verdict.shown:
            return f"{knob.name} moved adherence most: {move}; {verdict.text()}"
        return (
            f"no knob moved adherence beyond seed noise yet: {knob.name} differs most, {move}, "
            f"but {verdict.text()}; {plan.text(verdict.a, verdict.b)}"
        )


# ------------------------------------------------------------------ queries


def list_sweeps(session: Session, limit: int = 200) -> list[SweepInfo]:
    """The newest sweeps first."""
    rows = session.exec(select(Sweep).order_by(col(Sweep.id).desc()).limit(limit)).all()
    return [SweepInfo(r.id or 0, r.name, dict(r.axes), r.created_at) for r in rows]


def sweep_scores(
    session: Session, sweep_id: int
) -> tuple[SweepInfo, list[PointInfo], list[SeedScore]] | None:
    """The sweep, its grid points (experiments) and every finished eval of their
    runs; None for an unknown sweep."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        return None
    experiments = session.exec(
        select(Experiment).where(Experiment.sweep_id == sweep_id).order_by(col(Experiment.id))
    ).all()
    points = [PointInfo(e.id or 0, dict(e.sweep_point or {}), e.fingerprint) for e in experiments]
    rows = session.exec(
        select(Run.experiment_id, Run.seed, Stage.variant, Stage.adherence)
        .join(Stage, col(Stage.run_id) == Run.id)
        .join(Experiment, col(Experiment.id) == Run.experiment_id)
        .where(
            Experiment.sweep_id == sweep_id,
            Stage.kind == "eval",
            Stage.status == StageStatus.DONE,
            col(Stage.adherence).is_not(None),
        )
        .order_by(col(Run.experiment_id), col(Run.seed))
    ).all()
    scores = [SeedScore(e, s, v, float(a)) for e, s, v, a in rows if a is not None]
    info = SweepInfo(sweep.id or 0, sweep.name, dict(sweep.axes), sweep.created_at)
    return info, points, scores


def load_sweep_view(
    session: Session, sweep_id: int, variant: str | None = None
) -> SweepView | None:
    found = sweep_scores(session, sweep_id)
    return None if found is None else build_view(*found, variant=variant)


# ------------------------------------------------------------------ pure


def variants_of(scores: Sequence[SeedScore]) -> list[str]:
    """Variants with scores, the default first; checkpoint evals left out (they
    are steps of one run, not configurations)."""
    names = {s.variant for s in scores if not is_checkpoint_variant(s.variant)}
    return sorted(names, key=lambda v: (v != DEFAULT_VARIANT, v))


def build_view(
    sweep: SweepInfo,
    points: Sequence[PointInfo],
    scores: Sequence[SeedScore],
    variant: str | None = None,
) -> SweepView:
    variants = variants_of(scores)
    chosen = variant or (variants[0] if variants else DEFAULT_VARIANT)
    rows = {p.experiment_id: PointRow(p.experiment_id, p.point, p.fingerprint) for p in points}
    for s in scores:
        if s.variant == chosen and s.experiment_id in rows:
            rows[s.experiment_id].seeds[s.seed] = s.adherence
    knobs = [_knob_effect(path, values, list(rows.values()), sweep.axes)
             for path, values in sweep.axes.items()]  # fmt: skip
    return SweepView(sweep, chosen, variants, list(rows.values()), knobs)


def _knob_effect(
    path: str, values: Sequence[Any], rows: Sequence[PointRow], axes: Mapping[str, Any]
) -> KnobEffect:
    out = []
    for value in values:
        scores = tuple(
            score
            for row in rows
            if path in row.point and value_text(row.point[path]) == value_text(value)
            for score in row.seeds.values()
        )
        out.append(KnobValue(value, value_text(value), scores))
    return KnobEffect(path, short_knob(path, axes), tuple(out))


def point_table(view: SweepView) -> list[dict[str, Any]]:
    """One row per grid point: its knob values, mean adherence, and each seed's."""
    out = []
    for row in view.points:
        item: dict[str, Any] = {"experiment": row.experiment_id}
        for knob in view.knobs:
            item[knob.name] = value_text(row.point.get(knob.knob))
        item["seeds"] = len(row.seeds)
        item["mean"] = row.mean
        for seed in view.seeds:
            item[f"seed {seed}"] = row.seeds.get(seed)
        item["fingerprint"] = row.fingerprint
        out.append(item)
    return out


def knob_table(view: SweepView) -> list[dict[str, Any]]:
    """One row per knob value: the mean over every point and seed that has it."""
    return [
        {"knob": k.name, "value": v.text, "runs": len(v.scores), "mean": v.mean,
         "ci_low": v.interval.low if v.interval else None,
         "ci_high": v.interval.high if v.interval else None, "range": k.spread}
        for k in view.knobs
        for v in k.values
    ]  # fmt: skip


def knob_points(view: SweepView) -> list[dict[str, Any]]:
    """Long rows for the chart: each seed's adherence at each value of each knob."""
    return [
        {"knob": knob.name, "value": value_text(row.point.get(knob.knob)), "seed": seed,
         "adherence": score, "point": row.label}
        for knob in view.knobs
        for row in view.points
        for seed, score in sorted(row.seeds.items())
    ]  # fmt: skip


def knob_means(view: SweepView) -> list[dict[str, Any]]:
    """The per-value means the chart draws as a line over the seed points, with
    their 95% intervals as error bars."""
    out = []
    for k in view.knobs:
        for v in k.values:
            interval = v.interval
            if interval is not None:
                out.append({"knob": k.name, "value": v.text, "adherence": interval.mean,
                            "low": interval.low, "high": interval.high,
                            "runs": interval.seeds})  # fmt: skip
    return out
