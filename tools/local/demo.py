"""The demo: the tiny local model learns the Code-Mode format on the demo data.

Nothing is downloaded: the model is built locally (random weights, a BPE
tokenizer trained on the demo data) and the dataset and suite live in `data/`.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jobs import settings
from jobs.db import session_scope
from jobs.experiment_spec import ExperimentSpec, parse_spec
from jobs.states import FINISHED, StageStatus
from read.status import ExperimentView, experiment_view
from tools.local.stack import DATA_DIR, PROJECT_ROOT, farm_stack, wait_for_workers

DEMO_SPEC = DATA_DIR / "specs" / "demo.yaml"


def tiny_model_dir() -> Path:
    return settings.farm_home() / "models" / "tiny-qwen3"


def ensure_tiny_model() -> Path:
    from tools.local.tiny_model import is_current, make_tiny_model

    path = tiny_model_dir()
    # Rebuilt when the builder or the demo data it trains its tokenizer on changed.
    if not (path / "config.json").exists() or not is_current(path):
        make_tiny_model(path)
    return path


def demo_spec(
    seeds: list[int] | None = None, overrides: dict | None = None
) -> tuple[ExperimentSpec, str]:
    """The demo spec pointed at this FARM_HOME's tiny model, and its YAML text."""
    data = yaml.safe_load(DEMO_SPEC.read_text())
    data["base_model"] = str(ensure_tiny_model())
    if seeds:
        data["seeds"] = seeds
    for key, value in (overrides or {}).items():
        data[key] = value
    text = yaml.safe_dump(data, sort_keys=False)
    return parse_spec(text, source=str(DEMO_SPEC), base_dir=PROJECT_ROOT), text


def submit_demo(redis_url: str, seeds: list[int] | None = None) -> list[int]:
    """Build the tiny model if needed and submit the demo spec (`farm up --demo`):
    a sweep, one experiment per grid point; returns the experiments' ids."""
    from redis import Redis

    from jobs.checks import preflight
    from jobs.submit import plan_sweep, submit_sweep, sweep_experiment_ids

    spec, text = demo_spec(seeds)
    findings = preflight(spec, DEMO_SPEC)
    plan = plan_sweep(spec, text, source=str(DEMO_SPEC))
    sweep_id = submit_sweep(plan, Redis.from_url(redis_url), findings)
    with session_scope() as session:
        return sweep_experiment_ids(session, sweep_id)


def stage_line(view: ExperimentView, run_index: int) -> tuple[str, int, int]:
    run = view.runs[run_index]
    done = sum(s.status in FINISHED for s in run.stages)
    active = [s for s in run.stages if s.status == StageStatus.RUNNING]
    what = ", ".join(
        f"{s.kind} {s.variant}"
        + (f" {s.progress}/{s.total}" if s.kind == "train" and s.total else "")
        for s in active
    )
    point = f"{view.name} " if view.name else ""
    return f"{point}seed {run.seed}: {what or run.status}", done, len(run.stages)


def follow(
    experiment_ids: list[int], console: Console, poll_s: float = 1.0
) -> list[ExperimentView]:
    """Progress bars, one per run, until every stage of every experiment has finished."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("stages"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks: dict[tuple[int, int], int] = {}
        while True:
            with session_scope() as session:
                views = [experiment_view(session, i) for i in experiment_ids]
            for view in views:
                assert view is not None
                for index, run in enumerate(view.runs):
                    key = (view.id, index)
                    if key not in tasks:
                        tasks[key] = progress.add_task("", total=len(run.stages))
                    line, done, total = stage_line(view, index)
                    progress.update(tasks[key], description=line, completed=done, total=total)
            if all(s.status in FINISHED for v in views if v for r in v.runs for s in r.stages):
                return [v for v in views if v is not None]
            time.sleep(poll_s)


def run_demo(workers: int = 2, web_port: int | None = None, console: Console | None = None) -> bool:
    from read.demo_story import demo_story
    from read.leaderboard import leaderboard
    from read.tables import print_leaderboard

    console = console or Console()
    console.print(f"FARM_HOME {settings.farm_home()}")
    with console.status("building the tiny model"):
        demo_spec()
    with farm_stack(workers=workers, web_port=web_port) as stack:
        if stack.web_url:
            console.print(f"web UI: {stack.web_url}")
        wait_for_workers(stack.redis_url, workers)
        experiment_ids = submit_demo(stack.redis_url)
        console.print(
            f"demo: {len(experiment_ids)} configurations (experiments "
            f"{', '.join(map(str, experiment_ids))}) on {workers} workers"
        )
        views = follow(experiment_ids, console)
    with session_scope() as session:
        rows = leaderboard(session, limit=40)
        story = demo_story(session, experiment_ids)
    print_leaderboard(rows, console=console)
    for line in story:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    # A checkpoint eval skipped because the probe ended training is the demo working.
    failed = [
        s
        for v in views
        for r in v.runs
        for s in r.stages
        if s.status != StageStatus.DONE and "stopped early" not in (s.error or "")
    ]
    for stage in failed:
        console.print(f"[red]{stage.kind} {stage.variant}: {stage.status}[/] {stage.error or ''}")
    return not failed
