"""Verdicts between configurations, read from the database.

What `farm compare`, the leaderboard's comparison of two rows, its
"seeds needed" sentence and the sweep view use: the seed scores of a config
fingerprint × variant, the verdict of `jobs.stats` on two of them, and the
prompts its seeds disagree on. The statistics themselves live in
`jobs.stats`; this module only gathers their inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from jobs.db import EvalResult, Experiment, Run, Stage
from jobs.problems import InputError, Problem
from jobs.ranking import LeaderboardRow
from jobs.states import StageStatus
from jobs.stats import (
    FragilePrompt,
    SeedPlan,
    Verdict,
    compare_seeds,
    fragile_prompts,
    seeds_needed,
)

MIN_PREFIX = 4  # characters of a fingerprint that name it on the command line


@dataclass(frozen=True)
class Config:
    """A configuration as the user named it: its fingerprint, a label, its suite."""

    fingerprint: str
    label: str
    suite: str
    experiment_id: int  # the newest experiment of the fingerprint (where seeds are added)


@dataclass(frozen=True)
class Comparison:
    """A against B on one variant: the verdict and how many seeds would settle it."""

    variant: str
    verdict: Verdict
    plan: SeedPlan

    def lines(self) -> list[str]:
        return [
            f"{self.variant}: {self.verdict.text()}",
            f"{self.variant}: {self.plan.text(self.verdict.a, self.verdict.b)}",
        ]

    def as_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "verdict": self.verdict.as_dict(),
                "seeds_needed": self.plan.as_dict(),
                "seeds_needed_text": self.plan.text(self.verdict.a, self.verdict.b)}  # fmt: skip


def _not_found(ref: str, message: str) -> InputError:
    return InputError([Problem(file="farm compare", field=ref, message=message)])


def resolve_config(session: Session, ref: str) -> Config:
    """An experiment id or a fingerprint (or a unique prefix of one) → its Config."""
    ref = ref.strip()
    if ref.isdigit() and len(ref) < 16:
        experiment = session.get(Experiment, int(ref))
        if experiment is None:
            raise _not_found(ref, f"no experiment {ref}")
        fingerprint = experiment.fingerprint
    else:
        if len(ref) < MIN_PREFIX:
            raise _not_found(ref, f"give an experiment id or at least {MIN_PREFIX} characters "
                                  "of a config fingerprint")  # fmt: skip
        found = session.exec(
            select(Experiment.fingerprint)
            .where(Experiment.fingerprint.startswith(ref))  # type: ignore[attr-defined]
            .distinct()
            .limit(2)
        ).all()
        if not found:
            raise _not_found(ref, f"no experiment or config fingerprint {ref!r}")
        if len(found) > 1:
            raise _not_found(ref, f"{ref!r} starts several fingerprints; give more characters")
        fingerprint = found[0]
    newest = session.exec(
        select(Experiment)
        .where(Experiment.fingerprint == fingerprint)
        .order_by(Experiment.id.desc())  # type: ignore[union-attr]
    ).first()
    assert newest is not None
    label = f"{newest.name} · {fingerprint[:8]}"
    return Config(fingerprint, label, newest.suite, newest.id or 0)


def seed_scores(session: Session, fingerprint: str, variant: str) -> dict[int, float]:
    """{seed: adherence} of a config's finished evals of one variant (a seed run in
    two experiments of the same config counts once, at its mean)."""
    rows = session.execute(
        select(Run.seed, func.avg(Stage.adherence))
        .join(Run, Run.id == Stage.run_id)
        .where(Run.fingerprint == fingerprint, Stage.kind == "eval",
               Stage.status == StageStatus.DONE, Stage.variant == variant,
               Stage.adherence.is_not(None))  # type: ignore[union-attr]
        .group_by(Run.seed)
    )  # fmt: skip
    return {int(seed): float(score) for seed, score in rows}


def evaluated_variants(session: Session, fingerprint: str) -> list[str]:
    rows = session.exec(
        select(Stage.variant)
        .join(Run, Run.id == Stage.run_id)
        .where(
            Run.fingerprint == fingerprint, Stage.kind == "eval", Stage.status == StageStatus.DONE
        )  # fmt: skip
        .distinct()
    ).all()
    return sorted(rows)


def compare_configs(
    session: Session, a_ref: str, b_ref: str, variant: str | None = None
) -> tuple[Config, Config, list[Comparison]]:
    """A against B on every variant both evaluated (or on `variant`)."""
    a, b = resolve_config(session, a_ref), resolve_config(session, b_ref)
    if a.suite != b.suite:
        raise _not_found(
            b_ref, f"{a.label} was evaluated on {a.suite} and {b.label} on {b.suite}: "
                   "adherence on different suites does not compare"
        )  # fmt: skip
    shared = sorted(set(evaluated_variants(session, a.fingerprint))
                    & set(evaluated_variants(session, b.fingerprint)))  # fmt: skip
    if variant is not None:
        if variant not in shared:
            raise _not_found(variant, f"not evaluated in both (both have: {', '.join(shared)})")
        shared = [variant]
    comparisons = []
    for name in shared:
        sa, sb = (
            seed_scores(session, a.fingerprint, name),
            seed_scores(session, b.fingerprint, name),
        )
        labels = (a.label, b.label)
        comparisons.append(Comparison(name, compare_seeds(sa, sb, labels), seeds_needed(sa, sb)))
    return a, b, comparisons


def rows_comparison(a: LeaderboardRow, b: LeaderboardRow) -> Comparison:
    """Two leaderboard rows (their per-seed scores are on the rows)."""
    sa, sb = _per_seed(a), _per_seed(b)
    labels = (row_name(a), row_name(b))
    variant = a.variant if a.variant == b.variant else f"{a.variant} / {b.variant}"
    return Comparison(variant, compare_seeds(sa, sb, labels), seeds_needed(sa, sb))


def row_name(row: LeaderboardRow) -> str:
    return f"{row.name} · {row.fingerprint[:8]} · {row.variant}"


def _per_seed(row: LeaderboardRow) -> dict[int, float]:
    grouped: dict[int, list[float]] = {}
    for seed, score in row.seed_scores:
        grouped.setdefault(seed, []).append(score)
    return {seed: sum(v) / len(v) for seed, v in grouped.items()}


def top_two(rows: Sequence[LeaderboardRow]) -> Comparison | None:
    """The top row against the runner-up: the best row of another configuration
    with the same variant and suite (else of any variant). None below two configs."""
    index = runner_up_index(rows)
    return None if index is None else rows_comparison(rows[0], rows[index])


def runner_up_index(rows: Sequence[LeaderboardRow]) -> int | None:
    """Where the runner-up is in `rows`: the next row of another configuration on
    the same suite, with the top row's variant if one has it."""
    if not rows:
        return None
    top = rows[0]
    others = [i for i, r in enumerate(rows)
              if i and r.fingerprint != top.fingerprint and r.suite == top.suite]  # fmt: skip
    same_variant = [i for i in others if rows[i].variant == top.variant]
    return (same_variant or others or [None])[0]


def seed_fragile_prompts(session: Session, fingerprint: str, variant: str) -> list[FragilePrompt]:
    """The prompts some seeds of a config got right and others did not, each
    seed's label with them (the current attempt of each finished eval). The
    config's runs first, then their eval stages, then those stages' rows: the
    planner never walks every eval stage or row of the farm for one config."""
    runs = dict(
        session.execute(select(Run.id, Run.seed).where(Run.fingerprint == fingerprint)).all()
    )
    # by run id alone: with kind and status in the query SQLite picks their index
    # and walks every eval stage of the farm
    stages = session.execute(
        select(
            Stage.id, Stage.attempt, Stage.run_id, Stage.kind, Stage.variant, Stage.status
        ).where(Stage.run_id.in_(list(runs)))  # type: ignore[attr-defined]
    ).all()
    current = {
        stage_id: (attempt, runs[run_id])
        for stage_id, attempt, run_id, kind, name, status in stages
        if kind == "eval" and name == variant and status == StageStatus.DONE
    }
    if not current:
        return []
    rows = session.execute(
        select(
            EvalResult.stage_id,
            EvalResult.attempt,
            EvalResult.prompt_id,
            EvalResult.label,
            EvalResult.score,
        ).where(EvalResult.stage_id.in_(list(current)))  # type: ignore[attr-defined]
    )
    return fragile_prompts(
        (current[stage_id][1], prompt, label, float(score))
        for stage_id, attempt, prompt, label, score in rows
        if attempt == current[stage_id][0]
    )
