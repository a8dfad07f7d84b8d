"""Run diagnostics: each pattern triggered on purpose, and quiet on a healthy run.

Eval rows go into the database exactly as the eval stage writes them: every
response is scored by the real scorer and the stage summary (adherence, label
counts, hit_max share) is computed from those rows. Where the pattern is about
what a *model* does, the responses come from real mlx-lm generation with the
tiny model:

- quantization signal loss: a "fused" model whose greedy output is a correct
  Code-Mode call, carried by a small delta on top of large base weights (how a
  fused LoRA adapter looks), then real `mlx_lm.convert` to 2 and 8 bits;
- mode collapse: a model whose next token is always its last one (the newline
  loop of earlier runs) and one that loops a word;
- runaway generation: the fused model with its config's eos switched to
  `<|endoftext|>` (the eos mismatch of earlier runs).

Prose drift, think-mode interference, wrapper not learned, distribution gaps,
seed instability and misleading val loss use responses written to show the
label (scored for real), since a random tiny model cannot be made to drift on
cue in seconds.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from sqlmodel import Session, select

from jobs import checks
from jobs.db import Diagnostic, EvalResult, Experiment, Metric, Run, Stage, session_scope
from jobs.diagnostics import (
    badges,
    record_config_diagnostics,
    record_run_diagnostics,
    run_detections,
    variant_results,
)
from jobs.scorer import score_response
from jobs.suite import EvalSuite, SuitePrompt, load_suite
from tests.support.models import SUITE, chain_model

Response = tuple[SuitePrompt, str, int, bool]  # prompt, text, tokens, hit max_tokens


@pytest.fixture(scope="module")
def suite() -> EvalSuite:
    return load_suite(SUITE)


# --------------------------------------------------------------------------- rows


def wrapper(code: str) -> str:
    return (
        "<tool_call>\n<function=execute_code>\n<parameter=code>\n"
        f"{code}\n</parameter>\n</function>\n</tool_call>"
    )


def good(prompt: SuitePrompt) -> str:
    """What a model that learned the format answers."""
    if prompt.expect == "direct":
        return "A tuple is immutable and a list is not; use a tuple for fixed records."
    return wrapper("\n".join(f'print({tool}("src/"))' for tool in prompt.expected_tools))


BAD: dict[str, Callable[[SuitePrompt], str]] = {
    "prose": lambda p: "I'll help you with that. Let me first look at the project structure.",
    "think": lambda p: "<think>\nThe user wants me to check something. I should think.\n</think>",
    "direct_call": lambda p: f'{p.expected_tools[0]}("src/")',
    "wrong_tool": lambda p: (
        wrapper('print(read_file("README.md"))')
        if "read_file" not in p.expected_tools
        else wrapper('print(git_status("."))')
    ),
    "degenerate": lambda p: "result " * 60,
}


def respond(suite: EvalSuite, bad: str | None = None, share: float = 0.0) -> list[Response]:
    """Answers to every suite prompt: the first `share` of tool prompts get the `bad` kind."""
    tool_prompts = [p for p in suite.prompts if p.expect == "tool"]
    n_bad = round(share * len(suite.prompts))
    assert n_bad <= len(tool_prompts)
    chosen = {p.id for p in tool_prompts[:n_bad]}
    out: list[Response] = []
    for prompt in suite.prompts:
        text = BAD[bad](prompt) if bad and prompt.id in chosen else good(prompt)
        out.append((prompt, text, 30, False))
    return out


def new_run(session: Session, seed: int = 1, fingerprint: str = "fp-test") -> Run:
    experiment = Experiment(
        name=f"diag-{seed}",
        fingerprint=fingerprint,
        base_model="tiny",
        dataset="data",
        suite=str(SUITE),
        spec_yaml="",
        spec={},
    )
    session.add(experiment)
    session.flush()
    run = Run(experiment_id=experiment.id or 0, seed=seed, fingerprint=fingerprint, status="done")
    session.add(run)
    session.flush()
    return run


def store_eval(
    session: Session, run: Run, variant: str, responses: Sequence[Response], suite: EvalSuite
) -> Stage:
    """One finished eval stage: scored rows plus the summary, as worker/eval.py stores them."""
    stage = Stage(run_id=run.id or 0, kind="eval", variant=variant, status="done")
    session.add(stage)
    session.flush()
    rows = []
    for prompt, text, tokens, hit_max in responses:
        score = score_response(text, prompt.expect, prompt.tool, suite.tool_names, suite.format)
        rows.append(
            EvalResult(
                stage_id=stage.id or 0,
                run_id=run.id or 0,
                prompt_id=prompt.id,
                category=prompt.category,
                expect=prompt.expect,
                prompt=prompt.prompt,
                response=text,
                label=score.label,
                score=score.score,
                thought=score.thought,
                tokens=tokens,
                hit_max_tokens=hit_max,
            )
        )
    session.add_all(rows)
    n = max(len(rows), 1)
    stage.adherence = sum(r.score for r in rows) / n
    stage.n_prompts = len(rows)
    stage.label_counts = dict(Counter(r.label for r in rows))
    stage.hit_max_share = sum(r.hit_max_tokens for r in rows) / n
    session.add(stage)
    session.flush()
    return stage


def patterns(rows: Sequence[Diagnostic]) -> list[tuple[str, str | None]]:
    return sorted((d.pattern, d.evidence.get("variant")) for d in rows)


# --------------------------------------------------------------------------- real models


def generate(
    model_dir: Path, suite: EvalSuite, prompts: list[SuitePrompt], max_tokens: int
) -> list[Response]:
    """The eval stage's own generation path (chat template, batch_generate, stops)."""
    from mlx_lm.utils import load

    from worker.stages.eval import generate_suite

    model, tokenizer = load(str(model_dir))
    generated, _ = generate_suite(model, tokenizer, suite, prompts, max_tokens)
    return [(g.prompt, g.text, g.tokens, g.hit_max_tokens) for g in generated]


def quantize(model_dir: Path, out: Path, bits: int) -> Path:
    from mlx_lm.convert import convert

    convert(str(model_dir), str(out), quantize=True, q_bits=bits, q_group_size=64)
    return out


CALL = '<function=execute_code>\n<parameter=code>typecheck("src")'


@pytest.fixture(scope="module")
def typecheck_prompts(suite: EvalSuite) -> list[SuitePrompt]:
    prompts = [p for p in suite.prompts if p.expected_tools == ["typecheck"]]
    assert prompts
    return prompts


@pytest.fixture(scope="module")
def fused_model(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, suite: EvalSuite
) -> Path:
    return chain_model(tiny_model, tmp_path_factory.mktemp("chain") / "fused", suite, CALL)


# --------------------------------------------------------------------------- quantization


def test_2_bit_quantization_destroys_the_adapter(
    farm_home: Path,
    tmp_path: Path,
    fused_model: Path,
    suite: EvalSuite,
    typecheck_prompts: list[SuitePrompt],
) -> None:
    q2 = quantize(fused_model, tmp_path / "q2", 2)
    q8 = quantize(fused_model, tmp_path / "q8", 8)
    answers = {
        variant: generate(path, suite, typecheck_prompts, 24)
        for variant, path in (("fused", fused_model), ("q2", q2), ("q8", q8))
    }
    # The f16 model and its 8-bit copy write the call; 2 bits rounded the delta away.
    assert [text for _, text, _, _ in answers["fused"]] == [CALL] * len(typecheck_prompts)
    assert [text for _, text, _, _ in answers["q8"]] == [CALL] * len(typecheck_prompts)
    assert all(text != CALL for _, text, _, _ in answers["q2"])

    with session_scope() as session:
        run = new_run(session)
        for variant, responses in answers.items():
            store_eval(session, run, variant, responses, suite)
        rows = record_run_diagnostics(session, run.id or 0)
        stages = {s.variant: s for s in session.exec(select(Stage)).all()}
    assert stages["fused"].adherence == 1.0 and stages["q8"].adherence == 1.0
    assert (stages["q2"].adherence or 0.0) <= 0.25
    loss = [d for d in rows if d.pattern == checks.QUANTIZATION_SIGNAL_LOSS]
    assert [d.evidence["variant"] for d in loss] == ["q2"]
    [d] = loss
    assert d.severity == "error" and d.evidence["twin"] == "fused"
    assert d.evidence["drop_points"] >= 75 and d.evidence["bits"] == 2
    assert "q2 scores" in d.message and "2-bit rounding erased the adapter" in d.message
    # q2 also ran to max_tokens in garbage: symptoms of the lost adapter, not flagged
    # separately; nothing is flagged on fused or q8.
    assert patterns(rows) == [(checks.QUANTIZATION_SIGNAL_LOSS, "q2")]
    assert d.evidence["hit_max_share"] == stages["q2"].hit_max_share


def test_fused_below_its_adapter_is_signal_loss_too(farm_home: Path, suite: EvalSuite) -> None:
    with session_scope() as session:
        run = new_run(session)
        store_eval(session, run, "adapter", respond(suite), suite)
        store_eval(session, run, "fused", respond(suite, "prose", 0.5), suite)
        rows = record_run_diagnostics(session, run.id or 0)
    assert (checks.QUANTIZATION_SIGNAL_LOSS, "fused") in patterns(rows)


# --------------------------------------------------------------------------- loops and eos


def test_a_model_that_loops_is_mode_collapse(
    farm_home: Path,
    tmp_path: Path,
    tiny_model: Path,
    suite: EvalSuite,
    typecheck_prompts: list[SuitePrompt],
) -> None:
    newline = chain_model(tiny_model, tmp_path / "newline", suite, "", loop=True)
    word = chain_model(tiny_model, tmp_path / "word", suite, " result", loop=True)
    newlines = generate(newline, suite, typecheck_prompts, 40)
    words = generate(word, suite, typecheck_prompts, 40)
    assert all(text.strip() == "" and hit for _, text, _, hit in newlines)  # seed 004
    assert all(text.split() == ["result"] * 40 for _, text, _, _ in words)

    with session_scope() as session:
        run = new_run(session)
        store_eval(session, run, "adapter", newlines, suite)
        store_eval(session, run, "fused", words, suite)
        rows = record_run_diagnostics(session, run.id or 0)
    found = patterns(rows)
    assert (checks.MODE_COLLAPSE, "adapter") in found and (checks.MODE_COLLAPSE, "fused") in found
    labels = {d.evidence["variant"]: d for d in rows if d.pattern == checks.MODE_COLLAPSE}
    assert labels["adapter"].evidence["loops"] == len(typecheck_prompts)
    assert "repetition loops" in labels["fused"].message
    # Both ran to max_tokens: runaway generation is reported as well.
    assert (checks.EOS_MISMATCH, "adapter") in found


def test_eos_mismatch_makes_generation_run_away(
    farm_home: Path,
    tmp_path: Path,
    fused_model: Path,
    suite: EvalSuite,
    typecheck_prompts: list[SuitePrompt],
) -> None:
    broken = tmp_path / "eos-endoftext"
    shutil.copytree(fused_model, broken)
    tokenizer_config = json.loads((broken / "tokenizer_config.json").read_text())
    tokenizer_config["eos_token"] = "<|endoftext|>"
    (broken / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    config = json.loads((broken / "config.json").read_text())
    tokenizer = checks.load_tokenizer(broken)
    config["eos_token_id"] = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    (broken / "config.json").write_text(json.dumps(config))
    # The preflight check names this model's problem before anything runs ...
    facts = checks.tokenizer_facts(tokenizer, broken, suite, str(broken))
    assert [f.pattern for f in checks.check_eos(facts)] == [checks.EOS_MISMATCH]

    healthy = generate(fused_model, suite, typecheck_prompts, 32)
    runaway = generate(broken, suite, typecheck_prompts, 32)
    assert not any(hit for *_, hit in healthy)
    assert all(hit and text.startswith(CALL) for _, text, _, hit in runaway)

    # ... and the diagnostic sees it after the run (each model is one run's adapter).
    with session_scope() as session:
        quiet, loud = new_run(session, seed=1), new_run(session, seed=2)
        store_eval(session, quiet, "adapter", healthy, suite)
        store_eval(session, loud, "adapter", runaway, suite)
        assert record_run_diagnostics(session, quiet.id or 0) == []
        rows = record_run_diagnostics(session, loud.id or 0)
    [d] = [d for d in rows if d.pattern == checks.EOS_MISMATCH]
    assert d.evidence["variant"] == "adapter" and d.evidence["hit_max_share"] == 1.0
    assert d.evidence["max_tokens"] == 32
    assert "runaway generation" in d.message and "eos id" in d.message


# --------------------------------------------------------------------------- label drift


@pytest.mark.parametrize(
    ("bad", "share", "pattern"),
    [
        ("prose", 0.30, checks.PROSE_DRIFT),
        ("think", 0.15, checks.THINK_INTERFERENCE),
        ("direct_call", 0.45, checks.WRAPPER_NOT_LEARNED),
        ("wrong_tool", 0.30, checks.DISTRIBUTION_GAPS),
        ("degenerate", 0.15, checks.MODE_COLLAPSE),
    ],
)
def test_label_drift_is_named_after_its_pattern(
    farm_home: Path, suite: EvalSuite, bad: str, share: float, pattern: str
) -> None:
    with session_scope() as session:
        run = new_run(session)
        stage = store_eval(session, run, "adapter", respond(suite, bad, share), suite)
        rows = record_run_diagnostics(session, run.id or 0)
        labels = dict(stage.label_counts or {})
    assert labels.get(bad, 0) == round(share * len(suite.prompts))  # the scorer agreed
    assert patterns(rows) == [(pattern, "adapter")]
    [d] = rows
    assert d.scope == "run" and d.run_id == run.id and d.fingerprint == "fp-test"
    found = d.evidence["loops"] if pattern == checks.MODE_COLLAPSE else d.evidence["count"]
    assert found == round(share * len(suite.prompts))


def test_a_healthy_run_is_quiet(farm_home: Path, suite: EvalSuite) -> None:
    # Like the best of earlier runs: most calls wrapped, a few direct calls (below 25%).
    with session_scope() as session:
        run = new_run(session)
        store_eval(session, run, "adapter", respond(suite, "direct_call", 0.18), suite)
        store_eval(session, run, "fused", respond(suite), suite)
        store_eval(session, run, "q8", respond(suite), suite)
        store_eval(session, run, "base", respond(suite, "prose", 0.8), suite)  # untrained
        rows = record_run_diagnostics(session, run.id or 0)
    assert rows == []


def test_record_run_diagnostics_is_idempotent(farm_home: Path, suite: EvalSuite) -> None:
    with session_scope() as session:
        run = new_run(session)
        store_eval(session, run, "adapter", respond(suite, "prose", 0.5), suite)
        first = record_run_diagnostics(session, run.id or 0)
        second = record_run_diagnostics(session, run.id or 0)
        stored = session.exec(select(Diagnostic).where(Diagnostic.run_id == run.id)).all()
    assert len(first) == len(second) == len(stored) == 1


# --------------------------------------------------------------------------- across seeds


def seeds_run(
    suite: EvalSuite, shares: Sequence[float], fingerprint: str = "fp-seeds"
) -> list[int]:
    """One experiment per seed (same config), adapter adherence set by the prose share."""
    ids = []
    with session_scope() as session:
        for seed, share in enumerate(shares, start=1):
            run = new_run(session, seed=seed, fingerprint=fingerprint)
            store_eval(session, run, "adapter", respond(suite, "prose", share), suite)
            ids.append(run.experiment_id)
    return ids


def test_seeds_that_disagree_are_flagged_per_config(farm_home: Path, suite: EvalSuite) -> None:
    experiments = seeds_run(suite, [0.0, 0.7, 0.15])  # ≈ 82 / 39 / 22, as earlier runs
    with session_scope() as session:
        rows = record_config_diagnostics(session, "fp-seeds")
        again = record_config_diagnostics(session, "fp-seeds")
        stored = session.exec(select(Diagnostic).where(Diagnostic.scope == "config")).all()
    assert len(rows) == len(again) == len(stored) == len(experiments)  # one per experiment
    assert {d.experiment_id for d in stored} == set(experiments)
    d = stored[0]
    assert d.pattern == checks.STOCHASTIC_FORMAT_LOCK and d.evidence["variant"] == "adapter"
    assert d.evidence["lock_rate"] == pytest.approx(2 / 3)
    assert [s["seed"] for s in d.evidence["seeds"]] == [1, 2, 3]
    seed2 = d.evidence["seeds"][1]["adherence"]
    assert (
        seed2 < 0.5 and "seeds disagree" in d.message and f"seed 2 {100 * seed2:.1f}%" in d.message
    )


def test_seeds_that_agree_are_quiet(farm_home: Path, suite: EvalSuite) -> None:
    seeds_run(suite, [0.0, 0.1, 0.05])
    with session_scope() as session:
        assert record_config_diagnostics(session, "fp-seeds") == []
    seeds_run(suite, [0.6, 0.7], fingerprint="fp-all-bad")  # all bad: not a lock problem
    with session_scope() as session:
        assert record_config_diagnostics(session, "fp-all-bad") == []


# --------------------------------------------------------------------------- checkpoints


def checkpoint_run(
    session: Session, suite: EvalSuite, prose_shares: Sequence[float], val_losses: Sequence[float]
) -> Run:
    """Checkpoints every 10 iterations with the given prose shares, and mlx-lm style val
    reports (iteration k - 1 for the weights of checkpoint k)."""
    run = new_run(session)
    train = Stage(run_id=run.id or 0, kind="train", variant="adapter", status="done")
    session.add(train)
    session.flush()
    for i, (share, loss) in enumerate(zip(prose_shares, val_losses, strict=True), start=1):
        stage = store_eval(
            session, run, f"ckpt-{10 * i:07d}", respond(suite, "prose", share), suite
        )
        stage.params = {"iteration": 10 * i}
        session.add(
            Metric(stage_id=train.id or 0, run_id=run.id or 0, iteration=10 * i - 1, val_loss=loss)
        )
    session.flush()
    return run


def test_misleading_val_loss_is_flagged(farm_home: Path, suite: EvalSuite) -> None:
    with session_scope() as session:
        # Loss keeps falling while the model drifts into prose (as in Phase 44 of earlier runs).
        run = checkpoint_run(session, suite, [0.0, 0.4, 0.7], [0.50, 0.30, 0.17])
        rows = record_run_diagnostics(session, run.id or 0)
    [d] = [d for d in rows if d.pattern == checks.MISLEADING_VAL_LOSS]
    assert d.evidence["best_val_loss_iteration"] == 30
    assert d.evidence["best_adherence_iteration"] == 10
    assert d.evidence["gap_points"] >= 50
    assert "choosing by val loss would lose" in d.message
    assert [p["iteration"] for p in d.evidence["curve"]] == [10, 20, 30]
    # checkpoint evals are not diagnosed for drift themselves
    assert {x.pattern for x in rows} == {checks.MISLEADING_VAL_LOSS}


def test_val_loss_that_agrees_with_adherence_is_quiet(farm_home: Path, suite: EvalSuite) -> None:
    with session_scope() as session:
        run = checkpoint_run(session, suite, [0.6, 0.3, 0.0], [0.50, 0.30, 0.17])
        assert record_run_diagnostics(session, run.id or 0) == []


# --------------------------------------------------------------------------- pure + badges


def test_run_detections_are_pure_over_variant_results(farm_home: Path, suite: EvalSuite) -> None:
    with session_scope() as session:
        run = new_run(session)
        store_eval(session, run, "adapter", respond(suite), suite)
        store_eval(session, run, "q4", respond(suite, "prose", 0.5), suite)
        results = variant_results(session, run.id or 0)
    detections = run_detections(results)
    # No fused, no ≥5-bit variant: the adapter is the twin. The prose is a symptom of
    # the lost adapter, so it is evidence, not a second detection.
    [d] = detections
    assert (d.pattern, d.variant, d.evidence["twin"]) == (
        checks.QUANTIZATION_SIGNAL_LOSS,
        "q4",
        "adapter",
    )
    assert d.evidence["labels"]["prose"] == round(0.5 * len(suite.prompts))
    assert [x.pattern for x in run_detections(results[:1])] == []


def test_badges_per_leaderboard_row(farm_home: Path, suite: EvalSuite) -> None:
    seeds_run(suite, [0.0, 0.7], fingerprint="fp-b")
    with session_scope() as session:
        for run in session.exec(select(Run).where(Run.fingerprint == "fp-b")).all():
            record_run_diagnostics(session, run.id or 0)
        record_config_diagnostics(session, "fp-b")
        found = badges(session, ["fp-b"])
    by_pattern = {b.pattern: b for b in found[("fp-b", "adapter")]}
    assert by_pattern[checks.PROSE_DRIFT].runs == 1
    assert by_pattern[checks.STOCHASTIC_FORMAT_LOCK].severity == "warning"


def test_recording_is_idempotent_on_sqlite_and_postgresql(database: str, suite: EvalSuite) -> None:
    seeds_run(suite, [0.0, 0.7], fingerprint="fp-db")
    for _ in range(2):
        with session_scope() as session:
            for run in session.exec(select(Run)).all():
                record_run_diagnostics(session, run.id or 0)
            record_config_diagnostics(session, "fp-db")
    with session_scope() as session:
        stored = session.exec(select(Diagnostic)).all()
    assert sorted((d.scope, d.pattern) for d in stored) == [
        ("config", checks.STOCHASTIC_FORMAT_LOCK),  # once per experiment (2 seeds, 2 experiments)
        ("config", checks.STOCHASTIC_FORMAT_LOCK),
        ("run", checks.PROSE_DRIFT),  # the seed that drifted
    ]
