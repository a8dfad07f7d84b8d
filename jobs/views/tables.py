"""The leaderboard as a terminal table, for `farm leaderboard` and `farm demo`.

It lives with the views rather than in `jobs.cli` so that the demo
(`jobs.local.demo`), which `farm` itself starts, can print it without
importing the command line back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table

from jobs.diagnostics import Badge
from jobs.leaderboard import LeaderboardRow

COLUMNS = ("config", "variant", "seeds", "mean ± std", "worst", "best", "lock", "val loss",
           "labels", "s/prompt", "tok/s", "MB", "flags")  # fmt: skip
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
            f"{r.mean:.2f} ± {r.std:.2f}",
            f"{r.worst:.2f}",
            f"{r.best:.2f}",
            f"{r.lock_rate:.0%}",
            "-" if r.val_loss is None else f"{r.val_loss:.3f}",
            " ".join(f"{k} {v:.0%}" for k, v in top),
            "-" if r.latency_s is None else f"{r.latency_s:.2f}",
            "-" if r.tokens_per_sec is None else f"{r.tokens_per_sec:.0f}",
            "-" if r.size_bytes is None else f"{r.size_bytes / 1e6:.1f}",
            ", ".join(b.pattern for b in flags.get((r.fingerprint, r.variant), [])),
        )
    return table


def print_leaderboard(
    rows: Sequence[LeaderboardRow], flags: Flags | None = None, console: Console | None = None
) -> None:
    """Print the table; off a terminal (a pipe, a log) at a fixed width so no
    column is cut to fit an unknown one."""
    console = console or Console()
    out = console if console.is_terminal else Console(width=220)
    out.print(leaderboard_table(rows, flags))
