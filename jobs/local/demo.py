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
from jobs.local.stack import DATA_DIR, PROJECT_ROOT, farm_stack, wait_for_workers
from jobs.spec import ExperimentSpec, parse_spec
from jobs.states import FINISHED, StageStatus
from jobs.views.status import ExperimentView, experiment_view

DEMO_SPEC = DATA_DIR / "specs" / "demo.yaml"


def tiny_model_dir() -> Path:
    return settings.farm_home() / "models" / "tiny-qwen3"


def ensure_tiny_model() -> Path:
    from jobs.local.tiny_model import is_current, make_tiny_model

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


def submit_demo(redis_url: str, seeds: list[int] | None = None) -> int:
    """Build the tiny model if needed and submit the demo spec (`farm up --demo`)."""
    from redis import Redis

    from jobs.checks import preflight
    from jobs.submit import submit_experiment

    spec, text = demo_spec(seeds)
    findings = preflight(spec, DEMO_SPEC)
    return submit_experiment(spec, Redis.from_url(redis_url), text, findings)


def stage_line(view: ExperimentView, run_index: int) -> tuple[str, int, int]:
    run = view.runs[run_index]
    done = sum(s.status in FINISHED for s in run.stages)
    active = [s for s in run.stages if s.status == StageStatus.RUNNING]
    what = ", ".join(
        f"{s.kind} {s.variant}"
        + (f" {s.progress}/{s.total}" if s.kind == "train" and s.total else "")
        for s in active
    )
    return f"seed {run.seed}: {what or run.status}", done, len(run.stages)


def follow(experiment_id: int, console: Console, poll_s: float = 1.0) -> ExperimentView:
    """Progress bars, one per run, until every stage has finished."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("stages"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks: list[int] = []
        while True:
            with session_scope() as session:
                view = experiment_view(session, experiment_id)
            assert view is not None
            if not tasks:
                tasks = [progress.add_task("", total=len(r.stages)) for r in view.runs]
            for index, task in enumerate(tasks):
                line, done, total = stage_line(view, index)
                progress.update(task, description=line, completed=done, total=total)
            if all(s.status in FINISHED for r in view.runs for s in r.stages):
                return view
            time.sleep(poll_s)


def run_demo(workers: int = 2, web_port: int | None = None, console: Console | None = None) -> bool:
    from redis import Redis

    from jobs.checks import preflight
    from jobs.db import Diagnostic
    from jobs.leaderboard import leaderboard
    from jobs.submit import submit_experiment
    from jobs.views.tables import print_leaderboard

    console = console or Console()
    console.print(f"FARM_HOME {settings.farm_home()}")
    with console.status("building the tiny model"):
        spec, text = demo_spec()
    with farm_stack(workers=workers, web_port=web_port) as stack:
        if stack.web_url:
            console.print(f"web UI: {stack.web_url}")
        wait_for_workers(stack.redis_url, workers)
        findings = preflight(spec, DEMO_SPEC)
        experiment_id = submit_experiment(spec, Redis.from_url(stack.redis_url), text, findings)
        console.print(
            f"demo experiment {experiment_id}: {len(spec.seeds)} seeds on {workers} workers"
        )
        view = follow(experiment_id, console)
    with session_scope() as session:
        rows = leaderboard(session, limit=20)
        diagnostics = (
            session.query(Diagnostic).filter(Diagnostic.experiment_id == experiment_id).all()
        )
    print_leaderboard(rows, console=console)
    for d in diagnostics:
        console.print(f"[yellow]{d.severity}[/] {d.pattern}: {d.message}")
    failed = [s for r in view.runs for s in r.stages if s.status != StageStatus.DONE]
    for stage in failed:
        console.print(f"[red]{stage.kind} {stage.variant}: {stage.status}[/] {stage.error or ''}")
    return not failed
