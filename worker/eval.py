"""`eval`: the suite through one variant, batched, every response scored and stored.

Prompts are rendered with the tokenizer's chat template (never plain text —
the seeds lost 60 points that way), with thinking disabled where the template
supports it, and generated greedily in one `batch_generate` call.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm.generate import batch_generate
from mlx_lm.utils import load

from jobs.db import EvalResult
from jobs.scorer import LABEL_SCORES, Score, score_response
from jobs.suite import EvalSuite, SuitePrompt, load_suite
from worker.context import (
    StageContext,
    checkpoint_adapter,
    path_bytes,
    stage_write,
    update_stage,
)


@dataclass(frozen=True)
class Generated:
    prompt: SuitePrompt
    text: str
    tokens: int
    hit_max_tokens: bool


def render_prompt(tokenizer: Any, suite: EvalSuite, prompt: SuitePrompt) -> list[int]:
    messages = []
    if suite.system_prompt:
        messages.append({"role": "system", "content": suite.system_prompt})
    messages.append({"role": "user", "content": prompt.prompt})
    # Templates that know `enable_thinking` honour it; the others ignore it.
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, enable_thinking=False
    )
    return tokenizer.encode(text, add_special_tokens=False)


def cut_at_stop(text: str, stops: list[str]) -> str:
    """Cut at the first multi-token stop string (single-token ones stop generation)."""
    cut = len(text)
    for stop in stops:
        index = text.find(stop)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


def single_token_stops(tokenizer: Any, stops: list[str]) -> list[str]:
    return [s for s in stops if len(tokenizer.encode(s, add_special_tokens=False)) == 1]


def select_prompts(suite: EvalSuite, ids: list[str] | None) -> list[SuitePrompt]:
    if not ids:
        return list(suite.prompts)
    wanted = set(ids)
    return [p for p in suite.prompts if p.id in wanted]


def generate_suite(
    model: Any, tokenizer: Any, suite: EvalSuite, prompts: list[SuitePrompt], max_tokens: int
) -> tuple[list[Generated], Any]:
    stops = list(suite.generation.stop)
    for stop in single_token_stops(tokenizer, stops):
        tokenizer.add_eos_token(stop)
    rendered = [render_prompt(tokenizer, suite, p) for p in prompts]
    response = batch_generate(
        model, tokenizer, rendered, max_tokens=max_tokens, return_token_ids=True
    )
    results = []
    for prompt, text, ids in zip(prompts, response.texts, response.token_ids, strict=True):
        results.append(
            Generated(prompt, cut_at_stop(text, stops), len(ids), len(ids) >= max_tokens)
        )
    return results, response.stats


def score_generated(item: Generated, suite: EvalSuite) -> Score:
    """The score of one generated response; never raises, so what a model wrote
    cannot fail the eval stage."""
    try:
        return score_response(
            item.text, item.prompt.expect, item.prompt.tool, suite.tool_names, fmt=suite.format
        )
    except Exception as exc:
        # The scorer is bounded and total on any text; should it still fail on a
        # response, that response scores as `degenerate` (0) and the stage goes on.
        reason = f"{type(exc).__name__}: {exc}"[:200]
        print(
            f"prompt {item.prompt.id}: scoring failed ({reason}); scored as degenerate",
            file=sys.stderr,
            flush=True,
        )
        return Score("degenerate", LABEL_SCORES["degenerate"])


def variant_model(ctx: StageContext, workdir: Path) -> tuple[str, str | None]:
    """(model path, adapter path) for the variant this stage evaluates."""
    base = ctx.spec["base_model"]
    variant = ctx.variant
    if variant == "base":
        return base, None
    if variant == "adapter":
        return base, str(ctx.adapter_dir)
    if variant.startswith("ckpt-") or variant == "best":
        # `best` carries the iteration chosen by adherence once checkpoints are scored.
        return base, str(checkpoint_adapter(ctx, int(ctx.params["iteration"]), workdir))
    if variant == "fused":
        return str(ctx.fused_dir), None
    return str(ctx.quantized_dir(variant)), None


def run_eval(ctx: StageContext) -> None:
    spec_eval = ctx.spec["eval"]
    suite = load_suite(Path(spec_eval["suite"]))
    ids = spec_eval.get("checkpoint_prompts") if ctx.variant.startswith("ckpt-") else None
    prompts = select_prompts(suite, ids)
    max_tokens = int(spec_eval.get("max_tokens") or suite.generation.max_tokens)
    update_stage(ctx, progress=0, total=len(prompts))

    with tempfile.TemporaryDirectory() as workdir:
        model_path, adapter_path = variant_model(ctx, Path(workdir))
        print(f"evaluating {ctx.variant}: {model_path} adapter={adapter_path}")
        model, tokenizer = load(model_path, adapter_path=adapter_path)
        mx.reset_peak_memory()
        tic = time.perf_counter()
        generated, stats = generate_suite(model, tokenizer, suite, prompts, max_tokens)
        elapsed = time.perf_counter() - tic
        # What this variant costs on disk: the adapter (a checkpoint's weights
        # through its link), or the whole model folder for fused and quantized.
        if adapter_path:
            size: int | None = path_bytes(Path(adapter_path) / "adapters.safetensors")
        else:
            size = path_bytes(Path(model_path)) if Path(model_path).exists() else None

    rows = []
    for item in generated:
        score = score_generated(item, suite)
        rows.append(
            EvalResult(
                stage_id=ctx.stage_id,
                attempt=ctx.attempt,
                run_id=ctx.run_id,
                prompt_id=item.prompt.id,
                category=item.prompt.category,
                expect=item.prompt.expect,
                prompt=item.prompt.prompt,
                response=item.text,
                label=score.label,
                score=score.score,
                thought=score.thought,
                tokens=item.tokens,
                latency_s=elapsed / max(len(generated), 1),
                hit_max_tokens=item.hit_max_tokens,
            )
        )
    with stage_write(ctx) as session:
        session.add_all(rows)

    labels = Counter(r.label for r in rows)
    n = max(len(rows), 1)
    update_stage(
        ctx,
        progress=len(rows),
        adherence=sum(r.score for r in rows) / n,
        n_prompts=len(rows),
        label_counts=dict(labels),
        hit_max_share=sum(r.hit_max_tokens for r in rows) / n,
        latency_s=elapsed / n,
        tokens_per_sec=float(stats.generation_tps),
        peak_memory_gb=float(mx.get_peak_memory()) / 1e9,
        size_bytes=size,
    )
    print(
        f"adherence {sum(r.score for r in rows) / n:.3f} over {len(rows)} prompts: {dict(labels)}"
    )
