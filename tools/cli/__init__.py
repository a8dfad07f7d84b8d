"""`farm`: the command line of lorafarm."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from jobs import settings
from jobs.plaintext import printable
from jobs.problems import InputError
from tools.cli import decide, lan, ship, workers

# The tokenizer checks import transformers, which announces at import time that
# PyTorch is absent; MLX needs no PyTorch, so that notice is only noise here.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


class FarmApp(typer.Typer):
    """The CLI, ending in one line rather than a traceback when the database or
    Redis cannot be used (with any password in their URLs masked)."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        from jobs.connection_errors import describe
        from tools.local.services import EmbeddedRedisError

        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            message = str(exc) if isinstance(exc, EmbeddedRedisError) else describe(exc)
            if message is None:
                raise
            err.print(message, markup=False, highlight=False, soft_wrap=True)
            sys.exit(1)


app = FarmApp(
    help="lorafarm: LoRA fine-tuning on a farm of Macs, ranked by format adherence across seeds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

EXIT_INVALID = 2


def _redis():  # type: ignore[no-untyped-def]
    from redis import Redis

    url = settings.redis_url()
    if url is None:
        err.print("[red]REDIS_URL is not set[/] (use `farm up` to run an embedded Redis)")
        raise typer.Exit(1)
    return Redis.from_url(url)


def _report_problems(problems: list) -> None:  # type: ignore[type-arg]
    # One problem, one line (soft_wrap): scripts and editors read `file:line: field:`.
    for problem in problems:
        err.print(str(problem), markup=False, highlight=False, soft_wrap=True)


# --- submitting and following work --------------------------------------------


@app.command()
def submit(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="Experiment spec")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and plan only")] = False,
) -> None:
    """Validate an experiment spec, run the preflight checks, then enqueue it.

    A spec with a `sweep:` section submits one experiment per grid point (all its
    runs counted against the per-submission limit first) and prints their ids."""
    from jobs.checks import ensure_quant_twin, preflight
    from jobs.dag import plan_run
    from jobs.db import migrate, session_scope
    from jobs.experiment_spec import config_fingerprint
    from jobs.experiment_spec.sweep import load_sweep
    from jobs.submit import plan_sweep, submit_experiment, submit_sweep, sweep_experiment_ids

    try:
        spec, grid = load_sweep(spec_path)
        plan = plan_sweep(spec, spec_path.read_text(), grid, str(spec_path)) if spec.sweep else None
    except InputError as exc:
        _report_problems(exc.problems)
        raise typer.Exit(EXIT_INVALID) from None
    findings = preflight(spec, spec_path)
    errors = [f for f in findings if f.severity == "error"]
    for finding in findings:
        err.print(finding.render(), markup=False, highlight=False)
    if errors:
        raise typer.Exit(EXIT_INVALID)
    if plan is not None:
        if dry_run:
            print_sweep_plan(plan)
            return
        migrate()
        try:
            sweep_id = submit_sweep(plan, _redis(), findings)
        except InputError as exc:  # a queue quota: nothing was written
            _report_problems(exc.problems)
            raise typer.Exit(EXIT_INVALID) from None
        with session_scope() as session:
            ids = sweep_experiment_ids(session, sweep_id)
        err.print(
            f"sweep {sweep_id}: {len(ids)} experiments, {plan.runs} runs queued — "
            f"`farm leaderboard --sweep {sweep_id}` shows adherence per knob",
            markup=False,
        )
        for experiment_id in ids:
            print(experiment_id)
        return
    if dry_run:
        spec, twin = ensure_quant_twin(spec)
        if twin:
            err.print(twin.render(), markup=False, highlight=False)
        stages = plan_run(spec)
        console.print(
            f"{spec.name}: {len(spec.seeds)} runs × {len(stages)} stages, "
            f"fingerprint {config_fingerprint(spec)} (dry run, nothing queued)"
        )
        for stage in stages:
            console.print(f"  {stage.key}" + (f"  ← {stage.parent}" if stage.parent else ""))
        return
    migrate()
    try:
        experiment_id = submit_experiment(spec, _redis(), spec_path.read_text(), findings)
    except InputError as exc:  # a queue quota: nothing was written
        _report_problems(exc.problems)
        raise typer.Exit(EXIT_INVALID) from None
    print(experiment_id)


def print_sweep_plan(plan) -> None:  # type: ignore[no-untyped-def]
    """The grid of a dry run: one line per point, then the stages of one run."""
    from read.tables import sweep_plan_lines

    for line in sweep_plan_lines(plan):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
def status(
    experiment_id: Annotated[int | None, typer.Argument(metavar="[ID]")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Experiments and their runs, or one experiment's stages."""
    from jobs.db import migrate, session_scope
    from read.attempts import progress_note
    from read.status import experiment_view, list_experiments
    from read.workers import worker_rows, worker_status

    migrate()
    with session_scope() as session:
        if experiment_id is None:
            rows = list_experiments(session)
            if as_json:
                workers = [worker_status(w) for w in worker_rows(session)]
                print(json.dumps({"experiments": rows, "workers": workers}, indent=2))
                return
            table = Table("id", "name", "status", "runs", "by status", "created")
            for r in rows:
                by = ", ".join(f"{k} {v}" for k, v in sorted(r["run_status"].items()))
                table.add_row(
                    str(r["id"]), r["name"], r["status"], str(r["runs"]), by, r["created_at"]
                )
            console.print(table)
            return
        view = experiment_view(session, experiment_id)
    if view is None:
        err.print(f"no experiment {experiment_id}")
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(view.as_dict(), indent=2, default=str))
        return
    console.print(
        f"[bold]{view.name}[/] (#{view.id}) {view.status} — fingerprint {view.fingerprint}"
    )
    for d in view.diagnostics:
        print_diagnostic(d)
    for run in view.runs:
        evals = f" · eval {run.eval_seconds:.1f} s" if run.eval_seconds_by_variant else ""
        console.print(f"run {run.id} seed {run.seed}: {run.status} on {run.host or '-'}{evals}")
        for told in run.gang.lines() if run.gang else []:  # several workers train it
            console.print("  " + told, markup=False, soft_wrap=True)
        for s in run.stages:
            progress = f"{s.progress or 0}/{s.total}" if s.total else ""
            took = f"{s.seconds:.1f} s" if s.seconds is not None else ""
            score = f"adherence {s.adherence:.3f}" if s.adherence is not None else ""
            line = f"  {s.kind:9} {s.variant:14} {s.status:10} {progress:>11} {took:>8} {score}"
            note = progress_note(s)  # "attempt 2, resumed from 20" after a retry
            if s.early_stop:  # the adherence probe ended training at a checkpoint
                note = "; ".join(filter(None, [note, f"stopped early: {s.early_stop}"]))
            console.print(
                line.rstrip() + (f" · {note}" if note else ""), markup=False, soft_wrap=True
            )
            if s.status == "failed" and s.error:
                console.print("    " + s.error.strip().splitlines()[-1], markup=False)
            for told in s.history:  # retried, resumed, lost or re-planned: say so
                console.print("      " + told, markup=False, soft_wrap=True)
        for d in run.diagnostics:
            print_diagnostic(d)


def print_diagnostic(diagnostic: dict) -> None:
    """One finding on one line, however long: a wrapped message would start a
    line of its own that reads like a stage line. Its text comes from data, so
    it is printed as text (no markup, no control characters)."""
    line = Text("  ")
    line.append(diagnostic["severity"], style="yellow")
    line.append(f" {diagnostic['pattern']}: {printable(str(diagnostic['message']))}")
    console.print(line, soft_wrap=True)


@app.command()
def cancel(experiment_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Stop an experiment: running stages are killed, the rest marked cancelled."""
    from jobs.control import cancel_experiment
    from jobs.db import Experiment, migrate, session_scope

    migrate()
    with session_scope() as session:
        if session.get(Experiment, experiment_id) is None:
            err.print(f"no experiment {experiment_id}")
            raise typer.Exit(1)
        count = cancel_experiment(session, experiment_id, _redis())
    console.print(f"cancelled {count} stages of experiment {experiment_id}")


app.command()(decide.compare)
app.add_typer(decide.seeds_app, name="seeds")
app.command()(ship.export)
app.command()(ship.publish)
app.command()(lan.tls)
app.command()(lan.web)


@app.command()
def reconcile() -> None:
    """Repair the queue from the database: re-queue lost work, give queued stages
    their jobs back (after Redis lost its data), re-plan stranded runs."""
    from jobs.db import migrate
    from jobs.reconcile import reconcile as reconcile_farm

    migrate()
    repairs = reconcile_farm(_redis(), wait_for_lock=30.0, notify=True)
    if repairs is None:
        err.print("another reconciler is running; try again in a minute")
        raise typer.Exit(1)
    for line in repairs.lines():
        console.print(line)


@app.command()
def leaderboard(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(help="Rows to show")] = 50,
    base_model: Annotated[str | None, typer.Option()] = None,
    sweep: Annotated[
        int | None,
        typer.Option("--sweep", metavar="ID", help="One sweep: adherence per grid point and knob"),
    ] = None,
    variant: Annotated[
        str | None, typer.Option(help="With --sweep: the variant to read (default adapter)")
    ] = None,
) -> None:
    """Configurations ranked by mean format adherence across seeds, then worst seed."""
    from jobs.db import migrate, session_scope
    from jobs.diagnostics import badges
    from read.leaderboard import leaderboard as query
    from read.tables import print_leaderboard

    migrate()
    if sweep is not None:
        show_sweep(sweep, variant, as_json)
        return
    with session_scope() as session:
        rows = query(session, limit=limit, base_model=base_model)
        flags = badges(session, [r.fingerprint for r in rows])
    if as_json:
        out = [
            r.as_dict()
            | {"badges": [b.__dict__ for b in flags.get((r.fingerprint, r.variant), [])]}
            for r in rows
        ]
        print(json.dumps(out, indent=2))
        return
    print_leaderboard(rows, flags, console)
    from read.verdicts import top_two

    comparison = top_two(rows)
    for line in comparison.lines() if comparison else []:
        console.print(printable(line), markup=False, highlight=False, soft_wrap=True)


def show_sweep(sweep_id: int, variant: str | None, as_json: bool) -> None:
    from jobs.db import session_scope
    from read.sweep import knob_table, load_sweep_view, point_table
    from read.tables import print_sweep

    with session_scope() as session:
        view = load_sweep_view(session, sweep_id, variant)
    if view is None:
        err.print(f"no sweep {sweep_id}")
        raise typer.Exit(1)
    if as_json:
        out = {"sweep": view.sweep.id, "name": view.sweep.name, "axes": view.sweep.axes,
               "variant": view.variant, "points": point_table(view), "knobs": knob_table(view),
               "strongest": view.strongest_line()}  # fmt: skip
        print(json.dumps(out, indent=2, default=str))
        return
    print_sweep(view, console)


# --- the scorer and checks on their own ----------------------------------------


# `farm score` lines: one response each. Longer lines are refused without being
# held in memory; the scorer reads at most its MAX_RESPONSE_CHARS of a response.
SCORE_LINE_BYTES = 8 * 1024 * 1024


def _response_lines(handle: BinaryIO) -> Iterator[bytes | None]:
    """The lines of a responses file, None for one longer than SCORE_LINE_BYTES."""
    while line := handle.readline(SCORE_LINE_BYTES + 1):
        if len(line) <= SCORE_LINE_BYTES or line.endswith(b"\n"):
            yield line
            continue
        while (rest := handle.readline(SCORE_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass  # skip the rest of the long line, a bounded piece at a time
        yield None


def _response_record(line: bytes | None) -> object:
    """The JSON value of one responses line (None for a blank line); ValueError says why not."""
    if line is None:
        raise ValueError(f"line longer than {SCORE_LINE_BYTES // 2**20} MB, the limit per response")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"not valid UTF-8 (byte {line[exc.start]:#04x} at offset {exc.start})"
        ) from None
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("not a response record: JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


@app.command()
def score(
    responses: Annotated[Path, typer.Argument(metavar="RESPONSES.jsonl")],
    suite: Annotated[
        Path | None, typer.Option(help="Eval suite whose tool API names the tools")
    ] = None,
) -> None:
    """Score responses: one {"id","label","score"} line per input line."""
    from jobs.scorer import DEFAULT_TOOL_NAMES, score_record
    from jobs.suite import load_suite

    tool_names, fmt = DEFAULT_TOOL_NAMES, "code_mode"
    if suite is not None:
        try:
            loaded = load_suite(suite)
        except InputError as exc:
            _report_problems(exc.problems)
            raise typer.Exit(EXIT_INVALID) from None
        tool_names, fmt = frozenset(loaded.tool_names), loaded.format
    if not responses.exists():
        err.print(f"{responses}: no such file")
        raise typer.Exit(EXIT_INVALID)
    problems = []
    out = []
    with open(responses, "rb") as handle:
        for number, line in enumerate(_response_lines(handle), start=1):
            try:
                record = _response_record(line)
                if record is not None:
                    out.append(score_record(record, tool_names, fmt=fmt))
            except (ValueError, TypeError, AttributeError) as exc:
                problems.append(f"{responses}:{number}: {exc}")
    if problems:
        for p in problems:
            err.print(p, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INVALID)
    for record in out:
        print(json.dumps(record))


@app.command()
def check(spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml")]) -> None:
    """Preflight checks only: tokenizer, chat template, eos, dataset, suite, quantization."""
    from jobs.checks import preflight
    from jobs.experiment_spec.sweep import load_sweep

    try:
        spec, _ = load_sweep(spec_path)  # a sweep's grid is checked too
    except InputError as exc:
        _report_problems(exc.problems)
        raise typer.Exit(EXIT_INVALID) from None
    findings = preflight(spec, spec_path)
    for finding in findings:
        print(finding.render())
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    print(f"{spec_path}: {errors} errors, {warnings} warnings")
    if errors:
        raise typer.Exit(EXIT_INVALID)


@app.command("make-tiny-model")
def make_tiny_model_cmd(
    out_dir: Annotated[Path, typer.Argument(metavar="DIR")],
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Build the tiny local Qwen3-architecture model used by tests and the demo."""
    from tools.local.tiny_model import make_tiny_model

    path = make_tiny_model(out_dir, seed=seed)
    console.print(f"tiny model written to {path}")


# --- running the farm -----------------------------------------------------------


app.command()(workers.worker)
app.add_typer(workers.workers_app, name="workers")


@app.command()
def up(
    demo: Annotated[
        bool, typer.Option("--demo", help="Build the tiny model and submit the demo")
    ] = False,
    workers: Annotated[int, typer.Option(help="Local workers to start")] = 1,
    port: Annotated[int, typer.Option(help="Web UI port")] = 8501,
    address: Annotated[str, typer.Option(help="Address the UI binds to")] = "127.0.0.1",
    lan_addresses: Annotated[
        list[str] | None,
        typer.Option(
            "--lan",
            metavar="ADDRESS",
            help="Serve the Macs of the LAN at ADDRESS (repeat for several), TLS only: "
            "Redis, the UI (https) and join tokens. DATABASE_URL must be PostgreSQL",
        ),
    ] = None,
    join: Annotated[
        list[str] | None,
        typer.Option("--join", metavar="NAME", help="With --lan: a join token for Mac NAME"),
    ] = None,
    redis_port: Annotated[
        int, typer.Option(help="With --lan: the port the Macs reach Redis at")
    ] = 6380,
) -> None:
    """The whole farm on this machine: Redis, SQLite, workers and the web UI. Ctrl-C stops all.
    With --lan, the coordinator of Macs that join with a token."""
    from tools.local.demo import submit_demo
    from tools.local.stack import farm_stack

    on_lan = lan.prepare_lan(lan_addresses, redis_port, join or []) if lan_addresses else None
    if on_lan is not None:
        address = on_lan.addresses[0]
    lan.warn_if_exposed(address)
    stop_on_sigterm()
    with farm_stack(workers=workers, web_port=port, web_address=address, lan=on_lan) as stack:
        os.environ["REDIS_URL"] = stack.redis_url
        console.print(
            f"lorafarm is up: [bold]{stack.web_url}[/]  (FARM_HOME {settings.farm_home()})"
        )
        if on_lan is not None:
            lan.welcome_macs(stack.redis_url, on_lan, join or [])
        if demo:
            ids = submit_demo(stack.redis_url)
            console.print(f"demo submitted: experiments {', '.join(map(str, ids))}")
        try:
            while stack.alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping…")


def stop_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C, so everything started gets stopped. Ctrl-C
    itself is restored too: a shell that starts commands in the background
    hands them SIGINT ignored, and `farm up` must still stop on it."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@app.command()
def demo(
    headless: Annotated[bool, typer.Option("--headless", help="No web UI")] = False,
    workers: Annotated[int, typer.Option()] = 2,
    port: Annotated[int, typer.Option()] = 8501,
) -> None:
    """Submit the demo experiment on the tiny local model, wait, print the leaderboard."""
    from tools.local.demo import run_demo

    stop_on_sigterm()
    ok = run_demo(workers=workers, web_port=None if headless else port, console=console)
    raise typer.Exit(0 if ok else 1)


@app.command()
def bench(
    out: Annotated[Path | None, typer.Option(help="Write the JSON here too")] = None,
    only: Annotated[
        str | None, typer.Option(help="overhead, eval, dispatch, pages, reconcile or distributed")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="A local model dir for the eval benchmark (default: tiny)")
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Eval rounds; medians are reported")] = 3,
    prompts: Annotated[
        int | None, typer.Option(min=1, help="Eval on the suite's first N prompts only")
    ] = None,
) -> None:
    """Benchmarks: farm vs bare mlx_lm lora, batched vs one-by-one eval, dispatch latency."""
    from tools.bench import run_benchmarks

    results = run_benchmarks(
        only=only, console=console, model=model, rounds=rounds, prompts=prompts
    )
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        out.write_text(text)


if __name__ == "__main__":
    app()
