"""`farm bench`: the farm's speed targets, measured.

- overhead: one training config through the farm and as a bare `mlx_lm lora`
  command, tokens/s of each as mlx-lm itself reports them (target ≥ 0.97×).
- eval: the demo suite on one model (the tiny one, or `--model DIR`) through
  the farm's batched eval (with and without the shared prefix prefilled once),
  an in-process one-prompt-at-a-time `stream_generate` loop, and one prompt at
  a time over HTTP to `mlx_lm server`, the way eval harnesses commonly do it;
  same prompts, greedy, every path warmed up, rounds alternated, medians
  (target ≥ 4× faster than HTTP).
- dispatch: submit → stage started on an idle worker, p50 and p95, before any
  model is loaded.
- pages: leaderboard and runs page queries at 100,000 runs (see bench_pages).
- reconcile: a reconciler pass over 10,000 queued stages, all carried and all
  lost (tools/bench/reconcile.py; `--stages 100000` there for 100,000).
- distributed: one LoRA training on 1, 2 and 3 ranks of MLX's ring backend on
  loopback: tokens/s and whether the loss curves agree (tools/bench/distributed.py).
Everything runs in a temporary FARM_HOME on the tiny local model unless `--model` says otherwise.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from sqlmodel import select

from jobs.processes import stop_process
from jobs.states import StageStatus
from tools.bench.distributed import distributed_rows
from tools.bench.environment import private_farm_environment
from tools.bench.reconcile import reconcile_rows
from tools.local.services import free_port
from tools.local.stack import DATA_DIR

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# mlx-lm's training report row: iter, train loss (and trend arrow), tok/s, tokens.
# Figures of 1,000 and more come with a thousands separator.
REPORT_ROW = re.compile(r"^\s*(\d+)\s+([\d.]+)\s*[▼▲=]?\s+([\d.,]+)\s+([\d.,]+k?)\s*$")

BENCH_TRAIN = {
    "iters": 60,
    "batch_size": 4,
    "learning_rate": 1.0e-3,
    "num_layers": -1,
    "steps_per_report": 10,
    "steps_per_eval": 1000,
    "val_batches": 1,
    "save_every": 1000,
    "max_seq_length": 512,
    "lora": {"rank": 8, "scale": 20.0, "dropout": 0.0},
}


def bench_spec(model: Path, seeds: list[int]) -> dict[str, Any]:
    return {
        "name": "bench",
        "base_model": str(model),
        "dataset": str(DATA_DIR / "datasets" / "code_mode"),
        "seeds": seeds,
        "train": BENCH_TRAIN,
        "fuse": None,
        "eval": {"suite": str(DATA_DIR / "evals" / "code_mode.yaml"), "variants": ["adapter"]},
    }


def tokens_per_sec_from_log(text: str) -> list[float]:
    """mlx-lm's own tok/s figures from its training report."""
    values = []
    for line in ANSI.sub("", text).splitlines():
        match = REPORT_ROW.match(line)
        if match:
            values.append(float(match.group(3).replace(",", "")))
    return values


def steady(values: list[float]) -> float:
    # The first report includes graph compilation and warm-up; leave it out.
    return statistics.mean(values[1:] if len(values) > 1 else values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# --- overhead -------------------------------------------------------------------


def bare_mlx_lm_lora(model: Path, workdir: Path) -> list[float]:
    from jobs.experiment_spec import TrainSpec, lora_run_config

    # The same mapping the farm's train stage uses, so both train the same config.
    config = lora_run_config(
        TrainSpec.model_validate(BENCH_TRAIN),
        str(model),
        DATA_DIR / "datasets" / "code_mode",
        workdir / "bare-adapter",
        seed=1,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "bare.yaml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [sys.executable, "-m", "mlx_lm", "lora", "-c", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return tokens_per_sec_from_log(out.stdout + out.stderr)


def farm_train(model: Path, redis_url: str, seed: int) -> list[float]:
    from redis import Redis

    from jobs.db import Metric, Stage, session_scope
    from jobs.experiment_spec import parse_spec
    from jobs.submit import submit_experiment

    text = yaml.safe_dump(bench_spec(model, [seed]))
    experiment_id = submit_experiment(
        parse_spec(text, source="bench"), Redis.from_url(redis_url), text
    )
    stage_id = _train_stage(experiment_id)
    while True:
        with session_scope() as session:
            stage = session.get(Stage, stage_id)
            assert stage is not None
            if stage.status in (StageStatus.DONE, StageStatus.FAILED):
                if stage.status == StageStatus.FAILED:
                    raise RuntimeError(f"bench training failed: {stage.error}")
                rows = session.exec(
                    select(Metric)
                    .where(Metric.stage_id == stage_id, Metric.tokens_per_sec.is_not(None))  # type: ignore[union-attr]
                    .order_by(Metric.iteration)
                ).all()
                return [float(r.tokens_per_sec or 0) for r in rows]
        time.sleep(0.5)


def _train_stage(experiment_id: int) -> int:
    from jobs.db import Run, Stage, session_scope

    with session_scope() as session:
        run = session.exec(select(Run).where(Run.experiment_id == experiment_id)).first()
        assert run is not None
        stage = session.exec(
            select(Stage).where(Stage.run_id == run.id, Stage.kind == "train")
        ).one()
        return stage.id or 0


def bench_overhead(model: Path, redis_url: str, workdir: Path, rounds: int = 2) -> dict[str, Any]:
    bare, farm = [], []
    for round_ in range(rounds):  # interleaved, so drift on a busy machine hits both
        bare.append(steady(bare_mlx_lm_lora(model, workdir / f"bare-{round_}")))
        farm.append(steady(farm_train(model, redis_url, seed=1)))
    bare_tps, farm_tps = statistics.mean(bare), statistics.mean(farm)
    return {
        "bare_tokens_per_sec": bare_tps,
        "farm_tokens_per_sec": farm_tps,
        "ratio": farm_tps / bare_tps,
        "target": 0.97,
        "rounds": rounds,
    }


# --- eval -----------------------------------------------------------------------


EVAL_ROUNDS = 3


@dataclass
class PathRun:
    """One pass of one eval path over the prompts: its answers and where the time went."""

    texts: list[str]
    wall_s: float
    prefill_tokens: int = 0
    prefill_s: float = 0.0
    decode_tokens: int = 0
    decode_s: float = 0.0
    prefix_tokens: int = 0
    stop_reasons: dict[str, int] = field(default_factory=dict)


def batched_path(
    model: Any, tokenizer: Any, suite: Any, prompts: list[Any], max_tokens: int, share: bool
) -> PathRun:
    """The farm's eval: one mlx-lm batch, stops inside it, the shared prefix once."""
    from worker.stages.eval import generate_suite

    tic = time.perf_counter()
    generated, stats = generate_suite(
        model, tokenizer, suite, prompts, max_tokens, share_prefix=share
    )
    return PathRun(
        texts=[g.text for g in generated],
        wall_s=time.perf_counter() - tic,
        prefill_tokens=stats.prefix_tokens + stats.prompt_tokens,
        prefill_s=stats.prefill_s,
        decode_tokens=stats.generation_tokens,
        decode_s=stats.generation_s,
        prefix_tokens=stats.prefix_tokens,
        stop_reasons=dict(Counter(g.stop_reason for g in generated)),
    )


def loop_path(
    model: Any, tokenizer: Any, suite: Any, prompts: list[Any], max_tokens: int
) -> PathRun:
    """One prompt at a time through mlx-lm's `stream_generate`, in this process: the
    batch's gain without HTTP in the comparison. A stop string ends the prompt."""
    from mlx_lm.generate import stream_generate

    from worker.stages.eval import cut_at_stop, render_prompt

    stops = list(suite.generation.stop)
    run = PathRun(texts=[], wall_s=0.0)
    tic = time.perf_counter()
    for prompt in prompts:
        text, last = "", None
        ids = render_prompt(tokenizer, suite, prompt)
        for last in stream_generate(model, tokenizer, ids, max_tokens=max_tokens):
            text += last.text
            if any(stop in text for stop in stops):
                break
        run.texts.append(cut_at_stop(text, stops))
        if last is not None:  # mlx-lm's own per-prompt figures
            run.prefill_tokens += last.prompt_tokens
            run.prefill_s += last.prompt_tokens / max(last.prompt_tps, 1e-9)
            run.decode_tokens += last.generation_tokens
            run.decode_s += last.generation_tokens / max(last.generation_tps, 1e-9)
    run.wall_s = time.perf_counter() - tic
    return run


def http_path(port: int, texts: list[str], suite: Any, max_tokens: int) -> PathRun:
    """One prompt at a time over HTTP to `mlx_lm server`, as eval harnesses do it."""
    run = PathRun(texts=[], wall_s=0.0)
    tic = time.perf_counter()
    for text in texts:
        body = {
            "prompt": text,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stop": list(suite.generation.stop),
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            answer = json.load(response)
        run.texts.append(answer["choices"][0]["text"])
        run.decode_tokens += int(answer.get("usage", {}).get("completion_tokens", 0))
    run.wall_s = time.perf_counter() - tic
    return run


def _start_server(model: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlx_lm",
            "server",
            "--model",
            str(model),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--temp",
            "0.0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return server, port


def _summary(runs: list[PathRun]) -> dict[str, Any]:
    """Medians over the rounds; prefill and decode tokens/s kept apart where the
    path can tell them apart (HTTP gives end-to-end figures only)."""
    median = statistics.median
    first = runs[0]
    out: dict[str, Any] = {
        "wall_s": median(r.wall_s for r in runs),
        "decode_tokens": first.decode_tokens,
        "tokens_per_sec": median(r.decode_tokens / max(r.wall_s, 1e-9) for r in runs),
    }
    if first.decode_s:
        out["decode_tokens_per_sec"] = median(r.decode_tokens / max(r.decode_s, 1e-9) for r in runs)
    if first.prefill_s:
        out["prefill_tokens"] = first.prefill_tokens
        out["prefill_s"] = median(r.prefill_s for r in runs)
        out["prefill_tokens_per_sec"] = median(
            r.prefill_tokens / max(r.prefill_s, 1e-9) for r in runs
        )
    if first.prefix_tokens:
        out["shared_prefix_tokens"] = first.prefix_tokens
    if first.stop_reasons:
        out["stop_reasons"] = first.stop_reasons
    return out


def _same(a: list[str], b: list[str], stops: list[str]) -> int:
    from worker.stages.eval import cut_at_stop

    return sum(
        cut_at_stop(x, stops).strip() == cut_at_stop(y, stops).strip()
        for x, y in zip(a, b, strict=True)
    )


def bench_eval(
    model: Path, workdir: Path, rounds: int = EVAL_ROUNDS, limit: int | None = None
) -> dict[str, Any]:
    """The suite through four paths on one model, warmed up, alternated over
    `rounds` (each round in another order) and reported as medians: the farm's
    batch with and without the shared prefix, an in-process one-by-one loop, and
    one-by-one over HTTP."""
    import mlx.core as mx
    from mlx_lm.utils import load

    from jobs.suite import load_suite
    from worker.stages.eval import render_prompt

    suite = load_suite(DATA_DIR / "evals" / "code_mode.yaml")
    max_tokens = suite.generation.max_tokens
    prompts = list(suite.prompts)[:limit] if limit else list(suite.prompts)
    stops = list(suite.generation.stop)

    tic = time.perf_counter()
    loaded, tokenizer = load(str(model))
    mx.eval(loaded.parameters())
    load_s = time.perf_counter() - tic
    # The server gets the very prompt text the batch renders.
    texts = {p.id: tokenizer.decode(render_prompt(tokenizer, suite, p)) for p in prompts}

    server, port = _start_server(model)
    try:
        _wait_http(f"http://127.0.0.1:{port}/v1/models", server, timeout=600)
        paths: dict[str, Any] = {
            "batched": lambda p, m: batched_path(loaded, tokenizer, suite, p, m, True),
            "batched_no_prefix": lambda p, m: batched_path(loaded, tokenizer, suite, p, m, False),
            "loop": lambda p, m: loop_path(loaded, tokenizer, suite, p, m),
            "http": lambda p, m: http_path(port, [texts[q.id] for q in p], suite, m),
        }
        # Warm-up: every path runs once untimed (kernels, allocations, the server's
        # first request), so no path pays for it inside the figures.
        for run_path in paths.values():
            run_path(prompts[:2], min(max_tokens, 16))
        results: dict[str, list[PathRun]] = {name: [] for name in paths}
        names = list(paths)
        for round_ in range(rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                results[name].append(paths[name](prompts, max_tokens))
    finally:
        stop_process(server)  # a server busy answering may not stop on SIGTERM

    summary = {name: _summary(runs) for name, runs in results.items()}
    batched, answers = summary["batched"]["wall_s"], results["batched"][0].texts
    return {
        "model": str(model),
        "prompts": len(prompts),
        "max_tokens": max_tokens,
        "rounds": rounds,
        "load_s": load_s,
        "batched_s": batched,
        "batched_no_prefix_s": summary["batched_no_prefix"]["wall_s"],
        "loop_one_by_one_s": summary["loop"]["wall_s"],
        "http_one_by_one_s": summary["http"]["wall_s"],
        "speedup": summary["http"]["wall_s"] / batched,
        "speedup_vs_loop": summary["loop"]["wall_s"] / batched,
        "target": 4.0,
        "same_outputs": _same(answers, results["http"][0].texts, stops),
        "same_as_loop": _same(answers, results["loop"][0].texts, stops),
        "same_without_prefix": _same(answers, results["batched_no_prefix"][0].texts, stops),
        "tokens_generated": summary["batched"]["decode_tokens"],
        "paths": summary,
    }


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("mlx_lm server exited")
        try:
            # Close it: the server serves one connection at a time, and an idle
            # keep-alive connection would block every request after it.
            with urllib.request.urlopen(url, timeout=2) as response:
                response.read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("mlx_lm server did not start")


# --- dispatch -------------------------------------------------------------------


def bench_dispatch(model: Path, redis_url: str, n: int = 20) -> dict[str, Any]:
    from redis import Redis

    from jobs.control import cancel_stages
    from jobs.db import Stage, session_scope
    from jobs.experiment_spec import parse_spec
    from jobs.submit import submit_experiment

    redis = Redis.from_url(redis_url)
    text = yaml.safe_dump(bench_spec(model, [1]) | {"train": {**BENCH_TRAIN, "iters": 100_000}})
    spec = parse_spec(text, source="bench")
    latencies = []
    for _ in range(n):
        time.sleep(0.5)  # let the worker go idle again
        tic = time.perf_counter()
        experiment_id = submit_experiment(spec, redis, text)
        stage_id = _train_stage(experiment_id)
        while True:
            with session_scope() as session:
                stage = session.get(Stage, stage_id)
                assert stage is not None
                if stage.started_at is not None:
                    latencies.append(
                        (stage.started_at - stage.enqueued_at).total_seconds()
                        if stage.enqueued_at
                        else time.perf_counter() - tic
                    )
                    cancel_stages(session, [stage], redis)
                    break
            time.sleep(0.01)
    return {
        "samples": n,
        "p50_s": percentile(latencies, 0.5),
        "p95_s": percentile(latencies, 0.95),
        "max_s": max(latencies),
    }


# --- all ------------------------------------------------------------------------


def run_benchmarks(
    only: str | None = None,
    console: Console | None = None,
    model: Path | None = None,
    rounds: int = EVAL_ROUNDS,
    prompts: int | None = None,
) -> dict[str, Any]:
    """`model` is the eval benchmark's model (default: the tiny one); the other
    benchmarks always run on the tiny model."""
    from tools.local.stack import farm_stack, wait_for_workers
    from tools.local.tiny_model import make_tiny_model

    console = console or Console(stderr=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="farm-bench-") as tmp:
        workdir = Path(tmp)
        with private_farm_environment(workdir / "home"):
            tiny = None
            if only in (None, "overhead", "dispatch", "distributed") or model is None:
                tiny = make_tiny_model(workdir / "tiny")
            if only in (None, "overhead", "dispatch"):
                assert tiny is not None
                with farm_stack(workers=1) as stack:
                    wait_for_workers(stack.redis_url, 1)
                    if only in (None, "overhead"):
                        with console.status("overhead: farm vs bare mlx_lm lora"):
                            results["overhead"] = bench_overhead(tiny, stack.redis_url, workdir)
                    if only in (None, "dispatch"):
                        with console.status("dispatch latency"):
                            results["dispatch"] = bench_dispatch(tiny, stack.redis_url)
            if only in (None, "eval"):
                eval_model = model or tiny
                assert eval_model is not None
                with console.status("eval: batched vs one-by-one in process and over HTTP"):
                    results["eval"] = bench_eval(eval_model, workdir, rounds, prompts)
            if only in (None, "pages"):
                from tools.bench.pages import bench_pages

                with console.status("pages at 100,000 runs"):
                    results["pages"] = bench_pages()
            if only in (None, "reconcile"):
                from tools.bench.reconcile import bench_reconcile

                with console.status("reconciler pass at 10,000 queued stages"):
                    results["reconcile"] = bench_reconcile()
            if only in (None, "distributed") and tiny is not None:
                from tools.bench.distributed import bench_distributed

                with console.status("one training on 1, 2 and 3 ranks of the ring backend"):
                    results["distributed"] = bench_distributed(tiny)
    print_results(results, console)
    return results


def eval_rows(e: dict[str, Any]) -> list[tuple[str, str, str]]:
    paths = e["paths"]
    rows = [
        (
            f"eval of {e['prompts']} prompts, batched vs HTTP one-by-one",
            f"{e['batched_s']:.2f} s vs {e['http_one_by_one_s']:.2f} s = {e['speedup']:.1f}×"
            f" ({e['same_outputs']}/{e['prompts']} identical)",
            "≥ 4×",
        ),
        (
            "  batched vs in-process one-by-one loop",
            f"{e['batched_s']:.2f} s vs {e['loop_one_by_one_s']:.2f} s"
            f" = {e['speedup_vs_loop']:.1f}× ({e['same_as_loop']}/{e['prompts']} identical)",
            "",
        ),
        (
            "  batched without the shared prefix",
            f"{e['batched_no_prefix_s']:.2f} s, prefill"
            f" {paths['batched_no_prefix']['prefill_s']:.3f} s vs"
            f" {paths['batched']['prefill_s']:.3f} s with"
            f" {paths['batched'].get('shared_prefix_tokens', 0)} prefix tokens once"
            f" ({e['same_without_prefix']}/{e['prompts']} identical)",
            "",
        ),
        (f"  model load ({Path(e['model']).name})", f"{e['load_s']:.2f} s", ""),
    ]
    for name in ("batched", "batched_no_prefix", "loop"):
        p = paths[name]
        tok_s = f"{p['prefill_tokens_per_sec']:.0f} / {p['decode_tokens_per_sec']:.0f}"
        rows.append((f"  {name}: prefill / decode tok/s", tok_s, ""))
    rows.append(("  http: end-to-end tok/s", f"{paths['http']['tokens_per_sec']:.0f}", ""))
    rows.append(("  batched: stop reasons", str(paths["batched"].get("stop_reasons", {})), ""))
    return rows


def print_results(results: dict[str, Any], console: Console) -> None:
    table = Table("benchmark", "measured", "target")
    if "overhead" in results:
        o = results["overhead"]
        table.add_row(
            "training tok/s, farm / bare mlx_lm lora",
            f"{o['farm_tokens_per_sec']:.0f} / {o['bare_tokens_per_sec']:.0f} = {o['ratio']:.3f}×",
            "≥ 0.97×",
        )
    if "eval" in results:
        for row in eval_rows(results["eval"]):
            table.add_row(*row)
    if "dispatch" in results:
        d = results["dispatch"]
        latency = f"p50 {d['p50_s'] * 1000:.0f} ms, p95 {d['p95_s'] * 1000:.0f} ms"
        table.add_row("dispatch submit → started", latency, "")
    rows = reconcile_rows(results.get("reconcile", {}))
    for row in rows + distributed_rows(results.get("distributed", {})):
        table.add_row(*row)
    for name, value in results.get("pages", {}).items():
        if isinstance(value, int | float):
            table.add_row(f"pages: {name}", f"{value:.3f}", "< 1 s" if name.endswith("_s") else "")
    console.print(table)


if __name__ == "__main__":
    run_benchmarks(sys.argv[1] if len(sys.argv) > 1 else None)
