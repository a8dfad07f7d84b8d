"""The leaderboard as a terminal table, for `farm leaderboard` and `farm demo`;
a sweep's grid (`farm submit --dry-run`) and its view (`farm leaderboard --sweep`).

It lives with the views rather than in `tools.cli` so that the demo
(`tools.local.demo`), which `farm` itself starts, can print it without
importing the command line back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from jobs.dag import plan_run
from jobs.diagnostics import Badge
from jobs.experiment_spec.sweep import show_value
from jobs.ranking import LeaderboardRow
from read.sweep import SweepView

if TYPE_CHECKING:
    from jobs.submit import SweepPlan

COLUMNS = ("config", "variant", "seeds", "mean [95% CI]", "std", "worst", "best", "lock",
           "seed-lock@3", "val loss", "labels", "s/prompt", "tok/s", "MB", "flags")  # fmt: skip
LEFT_ALIGNED = ("config", "variant", "labels", "flags")

Flags = Mapping[tuple[str, str], Sequence[Badge]]


def leaderboard_table(rows: Sequence[LeaderboardRow], flags: Flags | None = None) -> Table:
    """One line per leaderboard row; `flags` are the failure patterns detected per
    (fingerprint, variant)."""
    flags = flags or {}
    table = Table(title="leaderboard — format adherence across seeds")
    for column in COLUMNS:
        left = column in LEFT_ALIGNED
        table.add_column(column, justify="left" if left else "right", no_wrap=column != "flags")
    for r in rows:
        top = sorted(r.label_mix.items(), key=lambda x: -x[1])[:2]
        table.add_row(
            f"{r.name} {r.fingerprint[:6]}",
            r.variant,
            str(r.seeds),
            mean_with_interval(r),
            f"{r.std:.2f}",
            f"{r.worst:.2f}",
            f"{r.best:.2f}",
            f"{r.lock_rate:.0%}",
            "-" if 3 not in r.seed_lock else f"{r.seed_lock[3]:.2f}",
            "-" if r.val_loss is None else f"{r.val_loss:.3f}",
            " ".join(f"{k} {v:.0%}" for k, v in top),
            "-" if r.latency_s is None else f"{r.latency_s:.2f}",
            "-" if r.tokens_per_sec is None else f"{r.tokens_per_sec:.0f}",
            "-" if r.size_bytes is None else f"{r.size_bytes / 1e6:.1f}",
            ", ".join(b.pattern for b in flags.get((r.fingerprint, r.variant), [])),
        )
    return table


def mean_with_interval(row: LeaderboardRow) -> str:
    """'0.52 [0.23, 0.80]': the mean and its 95% interval from the seed scores."""
    if row.ci_low is None or row.ci_high is None:
        return f"{row.mean:.2f}"
    return f"{row.mean:.2f} [{row.ci_low:.2f}, {row.ci_high:.2f}]"


def print_leaderboard(
    rows: Sequence[LeaderboardRow], flags: Flags | None = None, console: Console | None = None
) -> None:
    """Print the table; off a terminal (a pipe, a log) at a fixed width so no
    column is cut to fit an unknown one."""
    console = console or Console()
    out = console if console.is_terminal else Console(width=220)
    out.print(leaderboard_table(rows, flags))


# ------------------------------------------------------------------ sweeps


def sweep_plan_lines(plan: SweepPlan) -> list[str]:
    """`farm submit --dry-run` of a sweep: the run count, one line per grid point
    (its values, fingerprint and stages per run), then the stages of one run."""
    knobs = list(plan.axes)
    header = ["point", *knobs, "fingerprint", "runs", "stages"]
    rows = [
        [str(i), *(show_value(gp.point[k]) for k in knobs), gp.fingerprint,
         str(len(plan.seeds)), str(gp.stages)]
        for i, gp in enumerate(plan.points, start=1)
    ]  # fmt: skip
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    seeds = ", ".join(map(str, plan.seeds))
    out = [
        f"{plan.name}: sweep of {plan.summary()} (seeds {seeds}; dry run, nothing queued)",
        *("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
          for r in [header, *rows]),
        "stages of each run:",
    ]  # fmt: skip
    for stage in plan_run(plan.points[0].spec):
        out.append(f"  {stage.key}" + (f"  ← {stage.parent}" if stage.parent else ""))
    return out


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def sweep_tables(view: SweepView) -> list[Table]:
    """`farm leaderboard --sweep ID`: adherence per grid point (mean and per seed),
    then per knob value; `view.strongest_line()` goes under them."""
    title = f"sweep {view.sweep.id} {view.sweep.name} — {view.variant} adherence per grid point"
    points = Table(title=title)
    for column in [*(k.name for k in view.knobs), "exp", "seeds", "mean"]:
        points.add_column(column, justify="left" if column in view.sweep.axes else "right")
    for seed in view.seeds:
        points.add_column(f"seed {seed}", justify="right")
    points.add_column("fingerprint", justify="left")
    for row in view.points:
        points.add_row(
            *(show_value(row.point.get(k.knob)) for k in view.knobs),
            str(row.experiment_id),
            str(len(row.seeds)),
            _score(row.mean),
            *(_score(row.seeds.get(seed)) for seed in view.seeds),
            row.fingerprint,
        )
    knobs = Table(title="adherence per knob value (every point and seed with that value)")
    for column in ("knob", "value", "runs", "mean", "range"):
        knobs.add_column(column, justify="left" if column in ("knob", "value") else "right")
    for knob in view.knobs:
        for value in knob.values:
            knobs.add_row(knob.name, value.text, str(len(value.scores)), _score(value.mean),
                          _score(knob.spread))  # fmt: skip
    return [points, knobs]


def print_sweep(view: SweepView, console: Console | None = None) -> None:
    console = console or Console()
    out = console if console.is_terminal else Console(width=220)
    for table in sweep_tables(view):
        out.print(table)
    out.print(view.strongest_line(), markup=False, highlight=False)
