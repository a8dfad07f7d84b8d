"""`eval`: the suite through one variant, batched, every response scored and stored.

Prompts are rendered with the tokenizer's chat template (never plain text —
earlier runs lost 60 points that way), with thinking disabled where the template
supports it, and generated greedily in one mlx-lm batch (`BatchGenerator`):
eos and the suite's stop strings end a sequence inside the batch, and a
prefix every prompt shares (system prompt, tool schema) is prefilled once.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, make_stop_sequences
from mlx_lm.models.cache import make_prompt_cache

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
from worker.weights import Weights

log = logging.getLogger(__name__)

# A suite's shared prefix (system prompt, tool schema) is prefilled once and
# its KV cache reused by every prompt only when it is at least this long:
# below that, the extra prefill call costs more than it saves.
MIN_SHARED_PREFIX = 16


@dataclass(frozen=True)
class Generated:
    prompt: SuitePrompt
    text: str
    tokens: int  # every token generated, the eos or stop string's included
    hit_max_tokens: bool
    stop_reason: str = "eos"  # eos | stop (a suite stop string) | max_tokens


@dataclass(frozen=True)
class SuiteStats:
    """Where the time of one suite's generation went."""

    prefix_tokens: int  # the shared prefix, prefilled once (0: not shared)
    prefix_s: float
    prompt_tokens: int  # prefilled in the batch, after the shared prefix
    prompt_s: float
    generation_tokens: int
    generation_s: float
    wall_s: float

    @property
    def prefill_s(self) -> float:
        return self.prefix_s + self.prompt_s

    @property
    def prefill_tps(self) -> float:
        return (self.prefix_tokens + self.prompt_tokens) / max(self.prefill_s, 1e-9)

    @property
    def generation_tps(self) -> float:
        return self.generation_tokens / max(self.generation_s, 1e-9)


@dataclass
class _Sequence:
    """One prompt's generated tokens while its batch runs."""

    tokens: list[int] = field(default_factory=list)
    reason: str | None = None


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
    """The text before the first stop string."""
    cut = len(text)
    for stop in stops:
        index = text.find(stop)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


def select_prompts(suite: EvalSuite, ids: list[str] | None) -> list[SuitePrompt]:
    if not ids:
        return list(suite.prompts)
    wanted = set(ids)
    return [p for p in suite.prompts if p.id in wanted]


def shared_prefix_len(rendered: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each prompt at least one of its own
    (the batch needs a last prompt token to start generating from)."""
    if len(rendered) < 2:
        return 0
    limit = min(len(r) for r in rendered) - 1
    first = rendered[0]
    for i in range(limit):
        if any(r[i] != first[i] for r in rendered):
            return i
    return max(limit, 0)


def prefill_prefix(model: Any, tokens: list[int], step: int = 2048) -> list[Any] | None:
    """The KV cache of `tokens`, or None when the model's caches cannot join a batch."""
    cache = make_prompt_cache(model)
    if not all(hasattr(c, "merge") for c in cache):
        return None
    ids = mx.array(tokens)[None]
    for start in range(0, ids.shape[1], step):
        model(ids[:, start : start + step], cache=cache)
        mx.eval([c.state for c in cache])
    return cache


def _text_stop(tokenizer: Any, tokens: list[int], stops: list[str], window: int) -> bool:
    """A stop string that the model spelled with other tokens than the stop's own
    encoding (which mlx-lm's stop sequences catch) shows up in the decoded tail."""
    tail = tokenizer.decode(tokens[-window:])
    return any(stop in tail for stop in stops)


def _run_batch(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    caches: list[list[Any]] | None,
    max_tokens: int,
    stops: list[str],
) -> tuple[list[_Sequence], Any]:
    """Generate greedily in one mlx-lm batch; eos and every stop string end a
    sequence inside the batch, so nothing is generated past them."""
    n = len(prompts)
    stop_sequences = make_stop_sequences(tokenizer, stops)
    window = max((len(s) for s in stops), default=0) + 4
    gen = BatchGenerator(model, max_tokens=max_tokens)
    try:
        uids = gen.insert(
            prompts, [max_tokens] * n, caches=caches, stop_sequences=[stop_sequences] * n
        )
        state = {uid: _Sequence() for uid in uids}
        with gen.stats() as stats:
            while responses := gen.next_generated():
                for r in responses:
                    seq = state[r.uid]
                    seq.tokens.append(r.token)
                    if r.finish_reason == "stop":
                        eos = r.token in tokenizer.eos_token_ids
                        seq.reason = "eos" if eos else "stop"
                    elif stops and _text_stop(tokenizer, seq.tokens, stops, window):
                        seq.reason = "stop"
                        if r.finish_reason is None:
                            gen.remove([r.uid])
                    elif r.finish_reason == "length":
                        seq.reason = "max_tokens"
    finally:
        gen.close()
    return [state[uid] for uid in uids], stats


def _generated(prompt: SuitePrompt, seq: _Sequence, tokenizer: Any, stops: list[str]) -> Generated:
    reason = seq.reason or "max_tokens"
    # The eos token ends the turn and is no part of the answer; a stop string is
    # cut from the text with anything after it in its last token.
    tokens = seq.tokens[:-1] if reason == "eos" else seq.tokens
    text = cut_at_stop(tokenizer.decode(tokens), stops)
    return Generated(prompt, text, len(seq.tokens), reason == "max_tokens", reason)


def generate_suite(
    model: Any,
    tokenizer: Any,
    suite: EvalSuite,
    prompts: list[SuitePrompt],
    max_tokens: int,
    share_prefix: bool = True,
) -> tuple[list[Generated], SuiteStats]:
    stops = list(suite.generation.stop)
    rendered = [render_prompt(tokenizer, suite, p) for p in prompts]
    tic = time.perf_counter()
    prefix = shared_prefix_len(rendered) if share_prefix else 0
    cache = prefill_prefix(model, rendered[0][:prefix]) if prefix >= MIN_SHARED_PREFIX else None
    prefix = prefix if cache is not None else 0
    prefix_s = time.perf_counter() - tic
    # Every prompt starts from the one prefix cache: mlx-lm copies it into the
    # batch's cache and never writes to it.
    caches = [cache] * len(rendered) if cache is not None else None
    rest = [r[prefix:] for r in rendered]
    sequences, stats = _run_batch(model, tokenizer, rest, caches, max_tokens, stops)
    wall_s = time.perf_counter() - tic
    results = [
        _generated(prompt, seq, tokenizer, stops)
        for prompt, seq in zip(prompts, sequences, strict=True)
    ]
    timing = SuiteStats(
        prefix_tokens=prefix,
        prefix_s=prefix_s,
        prompt_tokens=stats.prompt_tokens,
        prompt_s=stats.prompt_time,
        generation_tokens=stats.generation_tokens,
        generation_s=stats.decode_time,
        wall_s=wall_s,
    )
    return results, timing


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
        log.warning("prompt %s: scoring failed (%s); scored as degenerate", item.prompt.id, reason)
        return Score("degenerate", LABEL_SCORES["degenerate"])


def variant_model(ctx: StageContext, workdir: Path) -> tuple[str, str | None]:
    """(model path, adapter path) for the variant this stage evaluates."""
    base = ctx.spec.base_model
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


def run_eval(ctx: StageContext, weights: Weights | None = None) -> None:
    """Evaluate the stage's variant; `weights` is the session's model, kept
    between the eval stages one child runs (a fresh one loads for this stage only)."""
    weights = weights if weights is not None else Weights()
    spec_eval = ctx.spec.eval
    suite = load_suite(spec_eval.suite)
    ids = spec_eval.checkpoint_prompts if ctx.variant.startswith("ckpt-") else None
    prompts = select_prompts(suite, ids)
    max_tokens = spec_eval.max_tokens or suite.generation.max_tokens
    update_stage(ctx, progress=0, total=len(prompts))

    with tempfile.TemporaryDirectory() as workdir:
        model_path, adapter_path = variant_model(ctx, Path(workdir))
        print(f"evaluating {ctx.variant}: {model_path} adapter={adapter_path}")
        model, tokenizer = weights.get(model_path, adapter_path)
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
                stop_reason=item.stop_reason,
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
        passed_prompts=sorted({r.prompt_id for r in rows if r.score >= 1.0}),
        hit_max_share=sum(r.hit_max_tokens for r in rows) / n,
        latency_s=elapsed / n,
        tokens_per_sec=float(stats.generation_tps),
        peak_memory_gb=float(mx.get_peak_memory()) / 1e9,
        size_bytes=size,
    )
    print(
        f"adherence {sum(r.score for r in rows) / n:.3f} over {len(rows)} prompts: {dict(labels)}"
    )
    print(
        f"prefill {stats.prefix_tokens + stats.prompt_tokens} tokens"
        f" ({stats.prefix_tokens} shared, once) at {stats.prefill_tps:.0f} tok/s,"
        f" decode {stats.generation_tokens} tokens at {stats.generation_tps:.0f} tok/s;"
        f" ended by {dict(Counter(g.stop_reason for g in generated))}"
    )
