"""`farm compare` and `farm seeds add`: deciding between configurations.

`farm compare A B` says whether A and B differ beyond seed noise (and how many
seeds would settle it); `farm seeds add EXPERIMENT N` runs the seeds it asks
for. A and B are experiment ids or config fingerprints (a unique prefix will do).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from jobs import settings
from jobs.plaintext import printable
from jobs.problems import InputError

EXIT_INVALID = 2

console = Console()
err = Console(stderr=True)
seeds_app = typer.Typer(help="Seeds of an experiment.", no_args_is_help=True)


def _refuse(exc: InputError) -> None:
    for problem in exc.problems:
        err.print(printable(str(problem)), markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_INVALID)


def compare(
    a: Annotated[str, typer.Argument(metavar="A", help="experiment id or config fingerprint")],
    b: Annotated[str, typer.Argument(metavar="B", help="experiment id or config fingerprint")],
    variant: Annotated[
        str | None, typer.Option(help="One variant (default: every variant both evaluated)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Is A better than B beyond seed noise? The difference with its 95% interval,
    a plain verdict, and how many seeds would settle it."""
    from jobs.db import migrate, session_scope
    from read.verdicts import compare_configs

    migrate()
    try:
        with session_scope() as session:
            config_a, config_b, comparisons = compare_configs(session, a, b, variant)
    except InputError as exc:
        _refuse(exc)
        return
    if as_json:
        out = {"a": vars(config_a), "b": vars(config_b),
               "comparisons": [c.as_dict() for c in comparisons]}  # fmt: skip
        print(json.dumps(out, indent=2))
        return
    console.print(f"A = {printable(config_a.label)}, B = {printable(config_b.label)}",
                  markup=False, highlight=False, soft_wrap=True)  # fmt: skip
    if not comparisons:
        console.print("no variant evaluated in both yet", markup=False)
    for comparison in comparisons:
        for line in comparison.lines():
            console.print(printable(line), markup=False, highlight=False, soft_wrap=True)


@seeds_app.command("add")
def add(
    experiment_id: Annotated[int, typer.Argument(metavar="EXPERIMENT")],
    count: Annotated[int, typer.Argument(metavar="N", help="how many new seeds")],
) -> None:
    """Add N new seeds to an experiment: only the new runs are queued; they pool
    with the others by config fingerprint."""
    from redis import Redis

    from jobs.db import migrate
    from jobs.seeds import add_seeds

    url = settings.redis_url()
    if url is None:
        err.print("REDIS_URL is not set (use `farm up` to run an embedded Redis)", markup=False)
        raise typer.Exit(1)
    migrate()
    try:
        seeds = add_seeds(experiment_id, count, Redis.from_url(url))
    except InputError as exc:
        _refuse(exc)
        return
    console.print(
        f"experiment {experiment_id}: {len(seeds)} new runs queued (seeds "
        f"{', '.join(map(str, seeds))})",
        markup=False,
        highlight=False,
    )
