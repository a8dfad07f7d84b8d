"""`farm bench --only pages`: the leaderboard and runs pages at 100,000 runs.

Seeds a fresh SQLite database and a fresh PostgreSQL database (through the real
Alembic schema) with N runs of synthetic but realistic farm data — 8 stages per
run, 27 eval rows per run (2.7 million at 100,000 runs), training metrics,
artifacts — inserted in bulk (executemany on SQLite, COPY on PostgreSQL). Then
it times, on each backend, the queries behind each page and a full render of
the page script (Streamlit's AppTest running web/app.py's page in-process,
the way the server runs it for a browser), warm, best of a few.

    uv run python -m tools.bench.pages --runs 100000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jobs import db

PROMPTS = 27
SEEDS_PER_EXPERIMENT = 5
RUNS_PER_CONFIG = 50  # each configuration pooled over 10 experiments × 5 seeds
VARIANTS = ("adapter", "fused", "q8", "q4")
BASE_MODELS = (
    "mlx-community/Qwen3-Coder-30B-A3B-Instruct-4bit",
    "mlx-community/Qwen3-8B-4bit",
    "mlx-community/Qwen2.5-Coder-7B-Instruct-4bit",
    "mlx-community/Qwen3-0.6B-4bit",
)
DATASETS = ("/farm/data/code_mode", "/farm/data/code_mode_v2", "/farm/data/json_tools")
SUITES = ("/farm/evals/code_mode.yaml", "/farm/evals/code_mode_hard.yaml")
LABELS_TOOL = ("execute_code", "wrong_tool", "invalid_code", "direct_call", "prose", "think")
CATEGORIES = ("files", "quality", "git", "lsp", "cst", "domain", "concept")
POSTGRES_ADMIN_URL = os.environ.get(
    "FARM_BENCH_POSTGRES_URL",
    os.environ.get("FARM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
)

Row = tuple[Any, ...]
NOT_DEFAULT = frozenset({"leaderboard_by_val_loss"})


# --- synthetic data -------------------------------------------------------------------


def _spec(config: int, rng: random.Random) -> dict[str, Any]:
    return {
        "name": f"sweep-{config % 97}",
        "base_model": BASE_MODELS[config % len(BASE_MODELS)],
        "dataset": DATASETS[config % len(DATASETS)],
        "seeds": [1, 2, 3, 4, 5],
        "train": {
            "iters": rng.choice((400, 800, 1200)),
            "batch_size": rng.choice((1, 2, 4)),
            "learning_rate": rng.choice((5e-5, 1e-4, 2e-4)),
            "lr_schedule": None,
            "num_layers": rng.choice((8, 16, -1)),
            "fine_tune_type": "lora",
            "optimizer": "adam",
            "optimizer_config": {},
            "mask_prompt": True,
            "grad_accumulation_steps": rng.choice((1, 4)),
            "grad_checkpoint": False,
            "max_seq_length": 2048,
            "save_every": 100,
            "steps_per_report": 10,
            "steps_per_eval": 200,
            "val_batches": 25,
            "lora": {
                "rank": rng.choice((4, 8, 16, 32)),
                "scale": 20.0,
                "dropout": 0.0,
                "keys": None,
            },  # fmt: skip
        },
        "fuse": {"dequantize": True, "from": "final"},
        "quantize": [{"bits": 8, "group_size": 64}, {"bits": 4, "group_size": 64}],
        "eval": {
            "suite": SUITES[config % len(SUITES)],
            "variants": ["adapter", "fused", "quantized"],
            "checkpoints": False,
            "checkpoint_prompts": None,
            "max_tokens": None,
        },
        "resources": {"min_memory_gb": 32.0, "timeout_hours": 24.0},
    }


@contextmanager
def _timer(out: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    out[key] = round(time.perf_counter() - start, 3)


def synthetic_tables(n_runs: int, seed: int = 0) -> Iterator[tuple[str, list[str], list[Row]]]:
    """(table, columns, rows) batches of a farm that ran `n_runs` runs. Ids are explicit."""
    rng = random.Random(seed)
    n_experiments = max(n_runs // SEEDS_PER_EXPERIMENT, 1)
    n_configs = max(n_runs // RUNS_PER_CONFIG, 1)
    quality = [rng.betavariate(2, 2) for _ in range(n_configs)]
    specs = [_spec(c, random.Random(c)) for c in range(n_configs)]
    fingerprints = [f"{c:016x}" for c in range(n_configs)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    workers = [f"mac-{i}" for i in range(8)]

    yield "worker", ["id", "name", "host", "memory_gb", "chip", "mlx_version", "platform",
                     "queues", "status", "current_stage_id", "jobs_done", "started_at",
                     "last_heartbeat"], [
        (i + 1, name, f"{name}.lan", 64.0, "Apple M2 Max", "0.29.1", "Darwin arm64",
         f"farm:host:{name},farm:mem:64", "idle", None, 1000, start, start)
        for i, name in enumerate(workers)
    ]  # fmt: skip

    experiments: list[Row] = []
    for e in range(n_experiments):
        config = e % n_configs
        spec = dict(specs[config], name=f"{specs[config]['name']}-{e}")
        experiments.append(
            (e + 1, spec["name"], fingerprints[config], spec["base_model"], spec["dataset"],
             spec["eval"]["suite"], json.dumps(spec), json.dumps(spec),
             start + timedelta(minutes=e))
        )  # fmt: skip
    yield "experiment", ["id", "name", "fingerprint", "base_model", "dataset", "suite",
                         "spec_yaml", "spec", "created_at"], experiments  # fmt: skip
    del experiments

    run_cols = ["id", "experiment_id", "seed", "fingerprint", "status", "host", "created_at",
                "finished_at"]  # fmt: skip
    stage_cols = ["id", "run_id", "kind", "variant", "params", "depends_on", "status", "worker",
                  "rq_job_id", "queue", "enqueued_at", "started_at", "finished_at", "error",
                  "progress", "total", "adherence", "n_prompts", "label_counts",
                  "passed_prompts", "hit_max_share", "latency_s", "tokens_per_sec",
                  "peak_memory_gb", "size_bytes", "val_loss"]  # fmt: skip
    metric_cols = ["id", "stage_id", "run_id", "iteration", "train_loss", "val_loss",
                   "learning_rate", "tokens_per_sec", "iterations_per_sec", "peak_memory_gb",
                   "trained_tokens", "created_at"]  # fmt: skip
    eval_cols = ["id", "stage_id", "run_id", "prompt_id", "category", "expect", "prompt",
                 "response", "label", "score", "thought", "tokens", "latency_s",
                 "hit_max_tokens"]  # fmt: skip
    artifact_cols = ["id", "run_id", "stage_id", "kind", "variant", "iteration", "path", "host",
                     "bytes", "sha256", "created_at"]  # fmt: skip

    batch = 5000  # runs per yielded batch
    stage_id = metric_id = eval_id = artifact_id = 0
    for first in range(0, n_runs, batch):
        runs: list[Row] = []
        stages: list[Row] = []
        metrics: list[Row] = []
        evals: list[Row] = []
        artifacts: list[Row] = []
        for r in range(first, min(first + batch, n_runs)):
            e = r // SEEDS_PER_EXPERIMENT
            config = e % n_configs
            seed = (e // n_configs) * SEEDS_PER_EXPERIMENT + r % SEEDS_PER_EXPERIMENT + 1
            run_id = r + 1
            worker = workers[r % len(workers)]
            t0 = start + timedelta(minutes=e, seconds=r % SEEDS_PER_EXPERIMENT)
            # The newest runs are still in flight; a few failed.
            active = r >= n_runs - 40
            failed = not active and rng.random() < 0.02
            status = "running" if active else ("failed" if failed else "done")
            runs.append((run_id, e + 1, seed, fingerprints[config], status, worker, t0,
                         None if active else t0 + timedelta(hours=2)))  # fmt: skip
            val_loss = 0.4 + rng.random() * 0.8
            train_id = stage_id + 1
            train_done = not active
            stages.append(
                (train_id, run_id, "train", "adapter", json.dumps({"total": 800}), None,
                 "done" if train_done else "running", worker, f"stage-{train_id}",
                 "farm:mem:32", t0, t0, t0 + timedelta(hours=1) if train_done else None, None,
                 800 if train_done else 400, 800, None, None, None, None, None, None, 310.0, 18.5,
                 12_000_000, val_loss)
            )  # fmt: skip
            stage_id = train_id
            for i in range(5):
                metric_id += 1
                metrics.append((metric_id, train_id, run_id, (i + 1) * 160, 2.0 / (i + 1),
                                None, 1e-4, 300.0, 0.5, 18.5, (i + 1) * 50_000, t0))  # fmt: skip
            metric_id += 1
            metrics.append((metric_id, train_id, run_id, 800, None, val_loss, None, None, None,
                            None, None, t0))  # fmt: skip
            parents = {"adapter": train_id}
            for variant in ("fuse", "q8", "q4") if train_done else ():
                stage_id += 1
                kind = "fuse" if variant == "fuse" else "quantize"
                name = "fused" if variant == "fuse" else variant
                parent = train_id if variant == "fuse" else parents["fused"]
                stages.append(
                    (stage_id, run_id, kind, name, "{}", parent, "done", worker,
                     f"stage-{stage_id}", f"farm:host:{worker}", t0, t0, t0, None, None,
                     None, None, None, None, None, None, None, None, 30.0, 1_200_000_000,
                     None)
                )  # fmt: skip
                parents[name] = stage_id
            for variant in VARIANTS if train_done else ():
                stage_id += 1
                penalty = {"adapter": 0.0, "fused": 0.01, "q8": 0.02, "q4": 0.25}[variant]
                adherence = min(max(quality[config] + rng.gauss(0, 0.15) - penalty, 0.0), 1.0)
                if failed and variant == "q4":
                    stage = "failed"
                    adherence_value = None
                else:
                    stage, adherence_value = "done", adherence
                good = round(adherence * PROMPTS)
                counts = {"execute_code": good, "prose": PROMPTS - good}
                passed = sorted(rng.sample(range(PROMPTS), good))  # which ones this seed got
                stages.append(
                    (stage_id, run_id, "eval", variant, "{}", parents[variant], stage, worker,
                     f"stage-{stage_id}", f"farm:host:{worker}", t0, t0,
                     t0 + timedelta(minutes=3), "killed" if stage == "failed" else None,
                     PROMPTS, PROMPTS, adherence_value, PROMPTS,
                     json.dumps(counts) if adherence_value is not None else None,
                     json.dumps([f"p{p:02d}" for p in passed])
                     if adherence_value is not None else None,
                     0.05, 0.8, 45.0, 19.0, 1_200_000_000, None)
                )  # fmt: skip
                if variant == "adapter":
                    for p in range(PROMPTS):
                        eval_id += 1
                        label = "execute_code" if p in passed else LABELS_TOOL[p % 6]
                        evals.append(
                            (eval_id, stage_id, run_id, f"p{p:02d}", CATEGORIES[p % 7], "tool",
                             f"Prompt {p}: read pyproject.toml and run the tests of module {p}.",
                             "<tool_call>\n<function=execute_code>\n<parameter=code>\n"
                             f"print(read_file('pyproject.toml').content[:{p}])\n</parameter>"
                             "\n</function>\n</tool_call>",
                             label, 1.0 if label == "execute_code" else 0.0, False, 40, 0.8,
                             False)
                        )  # fmt: skip
            for kind, variant in (("adapter", "adapter"), ("fused", "fused"),
                                  ("quantized", "q8"), ("quantized", "q4")):  # fmt: skip
                if variant in parents:
                    artifact_id += 1
                    artifacts.append(
                        (artifact_id, run_id, parents[variant], kind, variant, None,
                         f"/farm/artifacts/run-{run_id}/{variant}", worker, 1_200_000_000,
                         "0" * 64, t0)
                    )  # fmt: skip
        yield "run", run_cols, runs
        yield "stage", stage_cols, stages
        yield "metric", metric_cols, metrics
        yield "evalresult", eval_cols, evals
        yield "artifact", artifact_cols, artifacts


# --- bulk loading -------------------------------------------------------------------------


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    return value


def load_sqlite(path: Path, n_runs: int) -> dict[str, int]:
    """Bulk insert into a migrated SQLite file: executemany in one transaction."""
    counts: dict[str, int] = {}
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        for table, columns, rows in synthetic_tables(n_runs):
            marks = ", ".join("?" * len(columns))
            conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                ([_sqlite_value(v) for v in row] for row in rows),
            )
            counts[table] = counts.get(table, 0) + len(rows)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return counts


def load_postgres(url: str, n_runs: int) -> dict[str, int]:
    """Bulk insert into a migrated PostgreSQL database with COPY, then ANALYZE."""
    import psycopg

    counts: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        with conn.cursor() as cursor:
            for table, columns, rows in synthetic_tables(n_runs):
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                counts[table] = counts.get(table, 0) + len(rows)
            for table in counts:  # explicit ids: move each id sequence past them
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
                )
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")
    return counts


def load_database(url: str, n_runs: int) -> dict[str, int]:
    """Synthetic farm data into a migrated database, whichever backend `url` names."""
    url = db.normalize_url(url)
    if url.startswith("sqlite:///"):
        return load_sqlite(Path(url.removeprefix("sqlite:///")), n_runs)
    return load_postgres(url.replace("postgresql+psycopg://", "postgresql://", 1), n_runs)


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    import psycopg

    name = f"lorafarm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        db.dispose_engines()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- timing ---------------------------------------------------------------------------


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(min(times), 4)


def page_queries(url: str) -> dict[str, Callable[[], object]]:
    """What each page asks the database on every render."""
    from read.leaderboard import filter_choices, leaderboard_page
    from read.run_detail import (
        count_eval_rows,
        eval_rows,
        run_header,
        stage_timeline,
        training_metrics,
        variant_matrix,
        variant_summaries,
    )
    from read.runs import count_experiments, runs_page

    def leaderboard_default() -> object:
        with db.session_scope(url) as session:
            filter_choices(session)
            return leaderboard_page(session, limit=25)

    def leaderboard_by_val_loss() -> object:
        with db.session_scope(url) as session:
            return leaderboard_page(session, sort="val_loss", descending=False, limit=25)

    def runs() -> object:
        with db.session_scope(url) as session:
            count_experiments(session)
            return runs_page(session, limit=10)

    def run_page() -> object:
        with db.session_scope(url) as session:
            header = run_header(session, 1)
            assert header is not None
            training_metrics(session, 1)
            stage_timeline(session, 1)
            variant_summaries(session, 1)
            variant_matrix(session, 1)
            count_eval_rows(session, 1, "adapter")
            return eval_rows(session, 1, "adapter", limit=25)

    return {
        "leaderboard": leaderboard_default,
        "leaderboard_by_val_loss": leaderboard_by_val_loss,
        "runs": runs,
        "run": run_page,
    }


def render_times(url: str, repeat: int = 3) -> dict[str, float]:
    """Seconds for the server to run each page script once (warm), via AppTest."""
    from streamlit.testing.v1 import AppTest

    from tools.local.stack import WEB_APP

    app = str(WEB_APP)
    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    out: dict[str, float] = {}
    try:
        for name, page, params in (
            ("leaderboard", "views/leaderboard.py", {}),
            ("runs", "views/runs.py", {}),
            ("run", "views/run.py", {"run": "1"}),
        ):
            times = []
            for _ in range(repeat + 1):
                at = AppTest.from_file(app, default_timeout=120)
                at.run()
                at.switch_page(page)
                at.query_params.update(params)
                start = time.perf_counter()
                at.run()
                times.append(time.perf_counter() - start)
                if at.exception:
                    raise RuntimeError(f"{page}: {at.exception[0].value}")
            out[name] = round(min(times[1:]), 4)  # the first one warms caches and imports
    finally:
        if saved is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved
    return out


def bench_backend(url: str, n_runs: int, label: str, repeat: int = 3) -> dict[str, Any]:
    out: dict[str, Any] = {}
    db.dispose_engines()
    db.migrate(url)
    with _timer(out, f"{label}_seed_seconds"):
        counts = load_database(url, n_runs)
    out[f"{label}_eval_rows"] = counts.get("evalresult", 0)
    out[f"{label}_stages"] = counts.get("stage", 0)
    for name, fn in page_queries(url).items():
        # `_s` keys are the pages' targets (< 1 s); a non-default order is reported beside.
        suffix = "_queries_seconds" if name in NOT_DEFAULT else "_queries_s"
        out[f"{label}_{name}{suffix}"] = best_of(fn)
    for name, seconds in render_times(url, repeat).items():
        out[f"{label}_{name}_page_s"] = seconds
    db.dispose_engines()
    return out


def bench_pages(
    n_runs: int = 100_000,
    backends: tuple[str, ...] = ("sqlite", "postgresql"),
    workdir: Path | None = None,
    postgres_admin_url: str = POSTGRES_ADMIN_URL,
    repeat: int = 3,
) -> dict[str, Any]:
    """Seed `n_runs` runs into fresh databases and time the pages on each backend
    (each page's best of `repeat` warm renders)."""
    results: dict[str, Any] = {"runs": n_runs}
    with tempfile.TemporaryDirectory(prefix="farm-bench-pages-", dir=workdir) as tmp:
        if "sqlite" in backends:
            url = f"sqlite:///{Path(tmp) / 'pages.db'}"
            results.update(bench_backend(url, n_runs, "sqlite", repeat))
        if "postgresql" in backends:
            with postgres_database(postgres_admin_url) as url:
                results.update(bench_backend(url, n_runs, "postgresql", repeat))
    slowest = [v for k, v in results.items() if k.endswith("_page_s")]
    results["slowest_page_s"] = max(slowest) if slowest else None
    results["median_page_s"] = statistics.median(slowest) if slowest else None
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    results = bench_pages(args.runs, tuple(args.backend or ("sqlite", "postgresql")))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
