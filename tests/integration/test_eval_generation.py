"""The eval stage's generation on real mlx-lm: eos and stop strings end a sequence
inside the batch (no token past them), each response records why it ended, and a
prefix shared by every prompt is prefilled once without changing any answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobs.suite import EvalSuite, Generation, load_suite
from tests.support.models import SUITE, chain_model
from worker.stages.eval import MIN_SHARED_PREFIX, Generated, generate_suite

# What the chained model writes for every prompt, then <|im_end|> (its eos).
# Every token is distinct, so the chain is well defined.
TEXT = "ok = 1;STOP now"


@pytest.fixture(scope="module")
def suite() -> EvalSuite:
    return load_suite(SUITE)


@pytest.fixture(scope="module")
def chained(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, suite: EvalSuite) -> Any:
    from mlx_lm.utils import load

    path = chain_model(tiny_model, tmp_path_factory.mktemp("stops") / "chain", suite, TEXT)
    return load(str(path))


def generate(loaded: Any, suite: EvalSuite, stop: list[str], max_tokens: int) -> list[Generated]:
    model, tokenizer = loaded
    own = suite.model_copy(update={"generation": Generation(max_tokens=max_tokens, stop=stop)})
    generated, _ = generate_suite(model, tokenizer, own, list(suite.prompts)[:4], max_tokens)
    return generated


def n_tokens(loaded: Any, text: str) -> int:
    return len(loaded[1].encode(text, add_special_tokens=False))


def outcomes(generated: list[Generated]) -> set[tuple[str, int, str, bool]]:
    return {(g.text, g.tokens, g.stop_reason, g.hit_max_tokens) for g in generated}


def test_eos_ends_a_sequence(chained: Any, suite: EvalSuite) -> None:
    # The text, then the eos token: counted as generated, not part of the text.
    expected = (TEXT, n_tokens(chained, TEXT) + 1, "eos", False)
    assert outcomes(generate(chained, suite, [], 40)) == {expected}


def test_a_stop_string_ends_generation_at_its_last_token(chained: Any, suite: EvalSuite) -> None:
    # "STOP" is four tokens here: the sequence ends on its fourth, nothing after it.
    assert n_tokens(chained, "STOP") > 1
    expected = ("ok = 1;", n_tokens(chained, "ok = 1;STOP"), "stop", False)
    assert outcomes(generate(chained, suite, ["STOP"], 40)) == {expected}


def test_a_stop_string_written_with_other_tokens_stops_too(chained: Any, suite: EvalSuite) -> None:
    # Alone, "= 1" encodes differently from the model's " =", " ", "1": only the
    # decoded text shows it, and it still ends the sequence on the "1".
    tokenizer = chained[1]
    alone = tokenizer.encode("= 1", add_special_tokens=False)
    in_text = tokenizer.encode("ok = 1", add_special_tokens=False)
    assert in_text[-len(alone) :] != alone
    expected = ("ok ", len(in_text), "stop", False)
    assert outcomes(generate(chained, suite, ["= 1"], 40)) == {expected}


def test_max_tokens_is_recorded(chained: Any, suite: EvalSuite) -> None:
    expected = ("ok =", 3, "max_tokens", True)
    assert n_tokens(chained, "ok =") == 3
    assert outcomes(generate(chained, suite, ["STOP"], 3)) == {expected}


def test_the_shared_prefix_is_prefilled_once_with_the_same_answers(
    tiny_model: Path, suite: EvalSuite
) -> None:
    from mlx_lm.utils import load

    model, tokenizer = load(str(tiny_model))
    prompts = list(suite.prompts)[:8]
    shared, with_prefix = generate_suite(model, tokenizer, suite, prompts, 24)
    alone, without = generate_suite(model, tokenizer, suite, prompts, 24, share_prefix=False)
    assert [g.text for g in shared] == [g.text for g in alone]
    assert with_prefix.prefix_tokens >= MIN_SHARED_PREFIX and without.prefix_tokens == 0
    # The batch left the prefix out of every prompt; it was prefilled once, before.
    saved = without.prompt_tokens - with_prefix.prompt_tokens
    assert saved == with_prefix.prefix_tokens * len(prompts)


def test_the_eval_bench_runs_on_a_model_dir(tiny_model: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from tools.cli import app

    out = tmp_path / "bench.json"
    args = ["bench", "--only", "eval", "--model", str(tiny_model), "--rounds", "1"]
    result = CliRunner().invoke(app, [*args, "--prompts", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    e = json.loads(out.read_text())["eval"]
    assert e["model"] == str(tiny_model) and e["prompts"] == 3 and e["rounds"] == 1
    assert e["load_s"] > 0 and e["batched_s"] > 0
    paths = e["paths"]
    assert set(paths) == {"batched", "batched_no_prefix", "loop", "http"}
    for name in ("batched", "batched_no_prefix", "loop"):
        assert paths[name]["prefill_tokens_per_sec"] > 0 < paths[name]["decode_tokens_per_sec"]
    assert paths["batched"]["shared_prefix_tokens"] >= MIN_SHARED_PREFIX
    assert paths["batched"]["prefill_tokens"] < paths["batched_no_prefix"]["prefill_tokens"]
    assert sum(paths["batched"]["stop_reasons"].values()) == 3
    # Greedy on the same weights: the tiny model answers the same on every path.
    assert e["same_outputs"] == e["same_as_loop"] == e["same_without_prefix"] == 3
