"""Models built from the tiny model's weights to make mlx-lm generate on cue."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from jobs.suite import EvalSuite
from tests.support import PROJECT_ROOT

SUITE = PROJECT_ROOT / "data" / "evals" / "code_mode.yaml"


def _prompt_end(tokenizer: Any, suite: EvalSuite) -> int:
    """The last token of every rendered eval prompt (they all end the same way)."""
    from worker.stages.eval import render_prompt

    ends = {render_prompt(tokenizer, suite, p)[-1] for p in suite.prompts}
    assert len(ends) == 1, ends
    return ends.pop()


def chain_model(
    src: Path,
    out: Path,
    suite: EvalSuite,
    text: str,
    *,
    then: str = "<|im_end|>",
    loop: bool = False,
    margin: float = 8.0,
) -> Path:
    """A model built from the tiny model's weights whose greedy output is `text` (then
    `then`, or `text`'s last token forever when `loop`), whatever the prompt.

    Attention and MLP outputs are zeroed, so the next token depends only on the
    current one through an untied head W = B + Δ: B random (the "base"), Δ a small
    low-rank delta that makes each token of the chain win by `margin` base-logit
    standard deviations — a fused adapter in miniature, whose signal is much
    smaller than the base weights it sits on."""
    import mlx.core as mx
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(src)
    chain = [_prompt_end(tokenizer, suite)]
    chain += tokenizer.encode(text, add_special_tokens=False) if text else []
    if not loop:
        chain.append(tokenizer.convert_tokens_to_ids(then))
    links = list(zip(chain, chain[1:], strict=False))
    if loop:
        links.append((chain[-1], chain[-1]))
    assert len({a for a, _ in links}) == len(links), "a token with two successors"

    out.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, out / name)
    config = json.loads((src / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (out / "config.json").write_text(json.dumps(config, indent=2))
    weights = {k: np.array(v) for k, v in mx.load(str(src / "model.safetensors")).items()}
    for name in weights:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            weights[name] = np.zeros_like(weights[name])
    embed = weights["model.embed_tokens.weight"].astype(np.float64)
    hidden = embed / np.sqrt((embed**2).mean(axis=1, keepdims=True) + 1e-6)  # final RMSNorm
    sigma = 0.02
    head = sigma * np.random.default_rng(0).standard_normal(embed.shape)
    for _ in range(10):
        done = True
        for current, following in links:
            logits = head @ hidden[current]
            rival = np.max(np.delete(logits, following))
            need = rival + margin * sigma - logits[following]
            if need > 1e-9:
                done = False
                head[following] += need * hidden[current] / (hidden[current] @ hidden[current])
        if done:
            break
    assert done
    weights["lm_head.weight"] = head.astype(np.float32)
    mx.save_safetensors(
        str(out / "model.safetensors"),
        {k: mx.array(v) for k, v in weights.items()},
        metadata={"format": "mlx"},
    )
    return out
