"""What the demo shows once it has run: the lines `farm demo` prints under the
leaderboard, in the order a new user should read them.

Each line is one of the failures earlier runs hit, seen on this farm's own
results: configurations that separate, seeds of one config that disagree, a
quantized variant that loses the adapter, a checkpoint val loss would have
picked against the one adherence picks, runs the probe stopped early, and
what the probe cost. The queries gather rows; `story_lines` is pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import fmean

from sqlmodel import Session, col, select

from jobs.checkpoints import checkpoint_points, val_loss_verdict
from jobs.db import Diagnostic, Experiment, Run, Stage
from jobs.stats import compare_seeds, mean_interval, seeds_needed

# Two seeds of one config this far apart or more "disagree" (the notes that
# started the farm: 82% with one seed, 22% with another).
DISAGREE_POINTS = 20.0


@dataclass(frozen=True)
class RunFacts:
    config: str  # the grid point, e.g. "train.learning_rate=0.0002"
    seed: int
    adapter: float | None  # adherence of the final adapter
    base: float | None
    early_stop: str | None
    probe_share: float | None  # probe seconds / training seconds
    # (iteration val loss picks, iteration adherence picks, points lost) when they differ
    val_loss_pick: tuple[int, int, float] | None = None
    experiment_id: int | None = None  # where `farm seeds add` would add seeds


@dataclass(frozen=True)
class StoryFacts:
    runs: list[RunFacts]
    flagged: dict[str, list[str]] = field(default_factory=dict)  # pattern → variants


def gather(session: Session, experiment_ids: Sequence[int]) -> StoryFacts:
    experiments = session.exec(
        select(Experiment).where(col(Experiment.id).in_(list(experiment_ids)))
    ).all()
    label = {e.id: _config_label(e) for e in experiments}
    runs = session.exec(
        select(Run).where(col(Run.experiment_id).in_(list(experiment_ids))).order_by(Run.id)
    ).all()
    facts = []
    for run in runs:
        stages = session.exec(select(Stage).where(Stage.run_id == run.id)).all()
        by_variant = {(s.kind, s.variant): s for s in stages}
        train = by_variant.get(("train", "adapter"))
        adapter = by_variant.get(("eval", "adapter"))
        base = by_variant.get(("eval", "base"))
        verdict = val_loss_verdict(checkpoint_points(session, run.id or 0))
        pick = None
        if verdict is not None and verdict.by_val_loss.iteration != verdict.by_adherence.iteration:
            pick = (
                verdict.by_val_loss.iteration,
                verdict.by_adherence.iteration,
                verdict.gap_points,
            )
        share = (train.params or {}).get("probe_share") if train else None
        facts.append(
            RunFacts(
                config=label.get(run.experiment_id, "?"),
                seed=run.seed,
                adapter=adapter.adherence if adapter else None,
                base=base.adherence if base else None,
                early_stop=train.early_stop if train else None,
                probe_share=float(share) if isinstance(share, int | float) else None,
                val_loss_pick=pick,
                experiment_id=run.experiment_id,
            )
        )
    flagged: dict[str, set[str]] = defaultdict(set)
    diagnostics = session.exec(
        select(Diagnostic).where(col(Diagnostic.experiment_id).in_(list(experiment_ids)))
    ).all()
    for d in diagnostics:
        if d.severity in ("warning", "error"):
            variant = str((d.evidence or {}).get("variant") or d.scope or "")
            flagged[d.pattern].add(variant)
    return StoryFacts(facts, {k: sorted(v - {""}) for k, v in sorted(flagged.items())})


def _config_label(experiment: Experiment) -> str:
    point = experiment.sweep_point or {}
    if not point:
        return experiment.name
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items())


def story_lines(facts: StoryFacts) -> list[str]:
    """The demo's closing lines (pure: facts in, sentences out)."""
    lines: list[str] = []
    by_config: dict[str, list[RunFacts]] = defaultdict(list)
    for run in facts.runs:
        by_config[run.config].append(run)
    lines += verdict_lines(by_config)
    for config, runs in by_config.items():
        scored = sorted((r for r in runs if r.adapter is not None), key=lambda r: r.adapter or 0)
        if len(scored) < 2:
            continue
        low, high = scored[0], scored[-1]
        spread = 100 * ((high.adapter or 0) - (low.adapter or 0))
        seeds = ", ".join(f"seed {r.seed} {r.adapter:.2f}" for r in scored)
        verdict = "disagree" if spread >= DISAGREE_POINTS else "agree"
        lines.append(f"{config}: seeds {verdict} ({spread:.0f} points apart): {seeds}")
    bases = [r.base for r in facts.runs if r.base is not None]
    if bases:
        lines.append(f"untrained base: {max(bases):.2f} adherence at best")
    for pattern, variants in facts.flagged.items():
        lines.append(f"flagged {pattern}: {', '.join(variants) or 'the run'}")
    for run in facts.runs:
        if run.val_loss_pick is not None:
            by_loss, by_adherence, gap = run.val_loss_pick
            lines.append(
                f"{run.config} seed {run.seed}: val loss picks checkpoint {by_loss}, adherence "
                f"picks {by_adherence} ({gap:.0f} points better)"
            )
    for run in facts.runs:
        if run.early_stop:
            lines.append(f"{run.config} seed {run.seed}: stopped early, {run.early_stop}")
    shares = [r.probe_share for r in facts.runs if r.probe_share is not None]
    if shares:
        lines.append(
            f"adherence probe: {100 * sum(shares) / len(shares):.1f}% of training time "
            f"on average (at most {100 * max(shares):.1f}%)"
        )
    return lines


def verdict_lines(by_config: dict[str, list[RunFacts]]) -> list[str]:
    """Best and worst configuration with their intervals, then the best against the
    runner-up (and the worst, when there are more than two): each verdict, and
    how many seeds would settle it with the command that adds them."""
    seeds = {
        config: {r.seed: r.adapter for r in runs if r.adapter is not None}
        for config, runs in by_config.items()
    }
    seeds = {config: scores for config, scores in seeds.items() if scores}
    if not seeds:
        return []
    ranked = sorted(seeds, key=lambda c: -fmean(seeds[c].values()))
    best, worst = ranked[0], ranked[-1]
    best_i, worst_i = (
        mean_interval(list(seeds[best].values())),
        mean_interval(list(seeds[worst].values())),
    )
    lines = [
        f"configurations: best {best} at {best_i.mean:.2f} mean adapter adherence "
        f"[95%: {best_i.low:.2f}, {best_i.high:.2f}; {best_i.seeds} seeds], worst {worst} at "
        f"{worst_i.mean:.2f} [95%: {worst_i.low:.2f}, {worst_i.high:.2f}; {worst_i.seeds} seeds]"
    ]
    experiments = {c: next((r.experiment_id for r in by_config[c] if r.experiment_id), None)
                   for c in ranked}  # fmt: skip
    for other in dict.fromkeys(ranked[1:2] + ranked[-1:]):
        if other == best:
            continue
        verdict = compare_seeds(seeds[best], seeds[other], (best, other))
        lines.append(f"verdict: {verdict.text()}")
        plan = seeds_needed(seeds[best], seeds[other])
        if plan.settled:
            continue
        command = ""
        if plan.more_a or plan.more_b:
            adds = [f"farm seeds add {experiments[c]} {n}"
                    for c, n in ((best, plan.more_a), (other, plan.more_b))
                    if n and experiments[c] is not None]  # fmt: skip
            command = f" ({'; '.join(adds)})" if adds else ""
        lines.append(f"seeds: {plan.text(best, other)}{command}")
    return lines


def demo_story(session: Session, experiment_ids: Sequence[int]) -> list[str]:
    return story_lines(gather(session, experiment_ids))
