"""Preflight checks (`farm check`): each one triggered on purpose, and quiet on the demo.

Broken inputs are built for the purpose: tiny models from `make_tiny_model`'s
knobs (a tokenizer without `<tool_response>`, no chat template, eos
`<|endoftext|>`), and copies of the demo dataset with rows rewritten (mixed
tool-call formats, attributes the API does not have, duplicates, leaked eval
prompts). Only tokenizers are loaded, never model weights.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from jobs import checks
from jobs.checks import (
    Example,
    Finding,
    check_lengths,
    check_suite,
    dataset_findings,
    ensure_quant_twin,
    measure_examples,
    preflight,
    read_examples,
)
from jobs.experiment_spec import ExperimentSpec, load_spec, parse_spec
from jobs.suite import EvalSuite, load_suite

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "datasets" / "code_mode"
SUITE = ROOT / "data" / "evals" / "code_mode.yaml"
DEMO_SPEC = ROOT / "data" / "specs" / "demo.yaml"


# --------------------------------------------------------------------------- helpers


def demo_like_spec(path: Path, model: Path | str, **overrides: Any) -> Path:
    """A spec like the demo's: demo data and suite, 3 seeds, checkpoints, safe quantization."""
    spec: dict[str, Any] = {
        "name": "check-demo",
        "base_model": str(model),
        "dataset": str(DATA),
        "seeds": [1, 2, 3],
        "train": {
            "iters": 200,
            "batch_size": 4,
            "learning_rate": 1.0e-3,
            "num_layers": -1,
            "save_every": 50,
            "steps_per_eval": 50,
            "max_seq_length": 512,
            "lora": {"rank": 8, "scale": 20.0},
        },
        "fuse": {"dequantize": True},
        "quantize": [{"bits": 8}, {"bits": 5}],
        "eval": {
            "suite": str(SUITE),
            "variants": ["adapter", "fused", "quantized"],
            "checkpoints": True,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_preflight(spec_path: Path) -> list[Finding]:
    return preflight(load_spec(spec_path), spec_path)


def of(findings: list[Finding], pattern: str, severity: str | None = None) -> list[Finding]:
    return [
        f for f in findings if f.pattern == pattern and (severity is None or f.severity == severity)
    ]


def copy_dataset(
    dst: Path,
    edit: Callable[[int, dict[str, Any]], dict[str, Any] | None] | None = None,
    splits: tuple[str, ...] = ("train",),
) -> Path:
    """The demo dataset, each row of `splits` passed through edit(index, row) (None keeps it)."""
    dst.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid"):
        rows = [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text().splitlines()]
        if edit is not None and split in splits:
            rows = [edit(i, row) or row for i, row in enumerate(rows)]
        (dst / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst


def count_rows(split: str) -> tuple[int, int]:
    """(rows, rows whose answer is an execute_code call) of a demo split, counted here
    independently of the checks (the demo data is generated and may change)."""
    rows = [json.loads(x) for x in (DATA / f"{split}.jsonl").read_text().splitlines()]
    return len(rows), sum(bool(WRAPPER_RE.fullmatch(answer(r))) for r in rows)


def answer(row: dict[str, Any]) -> str:
    return row["messages"][-1]["content"]


def with_answer(row: dict[str, Any], content: str) -> dict[str, Any]:
    messages = [dict(m) for m in row["messages"]]
    messages[-1]["content"] = content
    return {**row, "messages": messages}


WRAPPER_RE = re.compile(
    r"<tool_call>\n<function=execute_code>\n<parameter=code>\n(.*)\n</parameter>\n"
    r"</function>\n</tool_call>",
    re.DOTALL,
)


@pytest.fixture(scope="module")
def suite() -> EvalSuite:
    return load_suite(SUITE)


@pytest.fixture(scope="module")
def demo_examples() -> list[Example]:
    return read_examples(DATA)


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Deliberately broken tiny models, built once for this module."""
    from tools.local.tiny_model import make_tiny_model

    root = tmp_path_factory.mktemp("broken-models")
    return {
        "no_tool_response": make_tiny_model(
            root / "no-tool-response", omit_special_tokens=("<tool_response>", "</tool_response>")
        ),
        "eos_endoftext": make_tiny_model(root / "eos-endoftext", eos_token="<|endoftext|>"),
        "no_template": make_tiny_model(root / "no-template", chat_template=False),
    }


# --------------------------------------------------------------------------- healthy


def test_demo_spec_passes_with_only_infos(tmp_path: Path, tiny_model: Path) -> None:
    findings = run_preflight(demo_like_spec(tmp_path / "demo.yaml", tiny_model))
    assert [f for f in findings if f.severity != "info"] == [], [f.render() for f in findings]
    # The tool-call share is reported even when it is fine.
    n_train, n_tool = count_rows("train")
    share = of(findings, checks.DISTRIBUTION_GAPS, "info")
    assert len(share) == 1
    assert f"{n_tool / n_train:.0%} of the {n_train} training examples" in share[0].message
    assert share[0].evidence["tool_examples"] == n_tool


def test_farm_check_cli_passes_on_the_demo(tmp_path: Path, tiny_model: Path) -> None:
    from tools.cli import app

    spec = demo_like_spec(tmp_path / "demo.yaml", tiny_model)
    result = CliRunner().invoke(app, ["check", str(spec)])
    assert result.exit_code == 0, result.output
    assert f"{spec}: 0 errors, 0 warnings" in result.output


def test_the_committed_demo_spec_passes(tiny_model: Path) -> None:
    data = yaml.safe_load(DEMO_SPEC.read_text())
    data["base_model"] = str(tiny_model)  # `farm demo` points it at FARM_HOME's model
    spec = parse_spec(yaml.safe_dump(data), source=str(DEMO_SPEC), base_dir=ROOT)
    findings = preflight(spec, None)
    assert not [f for f in findings if f.severity == "error"], [f.render() for f in findings]
    others = [f for f in findings if f.severity == "warning"]
    assert all(f.pattern == checks.QUANTIZATION_SIGNAL_LOSS for f in others), others


def test_demo_data_is_quiet_for_every_dataset_check(
    demo_examples: list[Example], suite: EvalSuite
) -> None:
    findings = dataset_findings(demo_examples, suite, str(SUITE))
    assert [f.severity for f in findings] == ["info"]


def test_demo_suite_is_consistent(suite: EvalSuite) -> None:
    assert check_suite(suite, str(SUITE), checkpoint_prompts=["quality-01", "direct-01"]) == []


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_lacking_a_special_token_is_an_error(
    tmp_path: Path, broken_models: dict[str, Path]
) -> None:
    model = broken_models["no_tool_response"]
    findings = run_preflight(demo_like_spec(tmp_path / "s.yaml", model))
    errors = of(findings, checks.TOKENIZER_MISMATCH, "error")
    tokens = {f.evidence["token"] for f in errors}
    assert tokens == {"<tool_response>", "</tool_response>"}
    first = next(f for f in errors if f.evidence["token"] == "<tool_response>")
    assert first.file == str(model / "tokenizer.json")
    assert len(first.evidence["pieces"]) > 1  # split into sub-word pieces
    text = first.render()
    assert "'<tool_response>' is not one token" in text and "pieces" in text
    assert "use a base model whose tokenizer has it as one token" in text


def test_farm_check_cli_refuses_a_broken_tokenizer(
    tmp_path: Path, broken_models: dict[str, Path]
) -> None:
    from tools.cli import app

    spec = demo_like_spec(tmp_path / "s.yaml", broken_models["no_tool_response"])
    result = CliRunner().invoke(app, ["check", str(spec)])
    assert result.exit_code == 2
    line = next(x for x in result.output.splitlines() if "'<tool_response>'" in x)
    assert line.startswith("error: ") and "tokenizer.json: [tokenizer / format mismatch]" in line


def test_missing_chat_template_is_an_error(tmp_path: Path, broken_models: dict[str, Path]) -> None:
    model = broken_models["no_template"]
    findings = run_preflight(demo_like_spec(tmp_path / "s.yaml", model))
    errors = of(findings, checks.TOKENIZER_MISMATCH, "error")
    assert len(errors) == 1
    assert "has no chat template" in errors[0].message and "60 points" in errors[0].message
    assert errors[0].file == str(model / "tokenizer_config.json")


def test_eos_mismatch_is_an_error_with_file_line_and_ids(
    tmp_path: Path, broken_models: dict[str, Path]
) -> None:
    model = broken_models["eos_endoftext"]
    findings = run_preflight(demo_like_spec(tmp_path / "s.yaml", model))
    [error] = of(findings, checks.EOS_MISMATCH, "error")
    config = model / "config.json"
    assert error.file == str(config)
    assert "eos_token_id" in config.read_text().splitlines()[(error.line or 0) - 1]
    assert error.evidence["turn_end"] == "<|im_end|>"
    endoftext = json.loads(config.read_text())["eos_token_id"]
    assert error.evidence["eos_ids"] == [endoftext]
    assert error.evidence["turn_end_id"] != endoftext
    assert "would run to max_tokens" in error.message
    assert f"include {error.evidence['turn_end_id']}" in error.fix


def test_eos_mismatch_is_covered_by_a_stop_string(
    tmp_path: Path, broken_models: dict[str, Path]
) -> None:
    suite = yaml.safe_load(SUITE.read_text())
    suite["generation"]["stop"] = ["<tool_response>", "<|im_end|>"]
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(suite, sort_keys=False))
    spec = demo_like_spec(
        tmp_path / "s.yaml", broken_models["eos_endoftext"], eval={"suite": str(suite_file)}
    )
    assert of(run_preflight(spec), checks.EOS_MISMATCH) == []


def test_eos_check_is_quiet_on_the_healthy_model(tiny_model: Path, suite: EvalSuite) -> None:
    tokenizer = checks.load_tokenizer(tiny_model)
    facts = checks.tokenizer_facts(tokenizer, tiny_model, suite, "tiny")
    assert facts.turn_end == "<|im_end|>" and facts.turn_end_id in facts.eos_ids
    assert checks.check_eos(facts) == [] and checks.check_chat_template(facts) == []
    assert checks.check_special_tokens(facts, "code_mode") == []


def test_hf_model_not_on_this_machine_is_checked_on_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    spec = demo_like_spec(tmp_path / "s.yaml", "mlx-community/Qwen3-0.6B-4bit")
    findings = run_preflight(spec)
    [info] = [f for f in of(findings, checks.TOKENIZER_MISMATCH) if f.severity == "info"]
    assert "not on this machine" in info.message and "on the worker before training" in info.message
    assert info.line == 2  # base_model in the spec file
    assert not [f for f in findings if f.severity == "error"]


def test_hf_model_already_in_the_hf_cache_is_checked_at_submit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken_models: dict[str, Path]
) -> None:
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    repo = cache / "models--someorg--cached-model"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(broken_models["eos_endoftext"] / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    findings = run_preflight(demo_like_spec(tmp_path / "s.yaml", "someorg/cached-model"))
    [error] = of(findings, checks.EOS_MISMATCH, "error")
    assert error.file == str(snapshot / "config.json")


# --------------------------------------------------------------------------- dataset


def test_mixed_tool_call_formats_are_an_error(tmp_path: Path, suite: EvalSuite) -> None:
    converted: list[int] = []

    def to_bare_code(i: int, row: dict[str, Any]) -> dict[str, Any] | None:
        match = WRAPPER_RE.fullmatch(answer(row))
        if match and len(converted) < 62:  # earlier runs' Format B: bare code in <tool_call>
            converted.append(i + 1)
            return with_answer(row, f"<tool_call>\n{match.group(1)}\n</tool_call>")
        return None

    data = copy_dataset(tmp_path / "mixed", to_bare_code)
    findings = dataset_findings(read_examples(data), suite, str(SUITE))
    [error] = of(findings, checks.CONFLICTING_FORMATS, "error")
    assert error.file == str(data / "train.jsonl") and error.line == converted[0]
    assert error.evidence["tool_call_code"]["examples"] == 62
    total_tool = count_rows("train")[1] + count_rows("valid")[1]
    assert error.evidence["xml_wrapper"]["examples"] == total_tool - 62  # train + valid
    assert "mixes 2 tool-call formats" in error.message
    assert "rewrite the 62 other examples to the Qwen3 XML execute_code wrapper" in error.fix


def test_data_in_another_format_than_the_suite_scores_is_an_error(
    tmp_path: Path, suite: EvalSuite
) -> None:
    def to_native_json(i: int, row: dict[str, Any]) -> dict[str, Any] | None:
        if WRAPPER_RE.fullmatch(answer(row)):
            call = {"name": "typecheck", "arguments": {"path": "src/"}}
            return with_answer(row, f"<tool_call>\n{json.dumps(call)}\n</tool_call>")
        return None

    data = copy_dataset(tmp_path / "json", to_native_json, splits=("train", "valid"))
    findings = dataset_findings(read_examples(data), suite, str(SUITE))
    [error] = of(findings, checks.CONFLICTING_FORMATS, "error")
    assert "the suite scores the code_mode format, but no training example uses it" in error.message
    total_tool = count_rows("train")[1] + count_rows("valid")[1]
    assert f"{total_tool} examples use a native JSON tool call" in error.message


def test_attributes_and_tools_missing_from_the_api_are_errors(
    tmp_path: Path, suite: EvalSuite
) -> None:
    lines: dict[str, list[int]] = {"attr": [], "tool": [], "param": []}

    def fabricate(i: int, row: dict[str, Any]) -> dict[str, Any] | None:
        text = answer(row)
        if "validate_component(" in text and "result.valid" in text and len(lines["attr"]) < 3:
            lines["attr"].append(i + 1)
            return with_answer(row, text.replace("result.valid", "result.valid_component"))
        if "typecheck(" in text and not lines["tool"]:
            lines["tool"].append(i + 1)
            return with_answer(row, text.replace("typecheck(", "typecheck_direct("))
        if "git_log(" in text and not lines["param"]:
            lines["param"].append(i + 1)
            return with_answer(row, text.replace("git_log(", "git_log(limit=3, path="))
        return None

    data = copy_dataset(tmp_path / "gaps", fabricate)
    assert all(lines.values()), lines
    findings = of(
        dataset_findings(read_examples(data), suite, str(SUITE)), checks.DISTRIBUTION_GAPS, "error"
    )
    by_kind = {f.evidence["kind"]: f for f in findings}
    assert set(by_kind) == {"unknown_attribute", "unknown_tool", "unknown_parameter"}

    attr = by_kind["unknown_attribute"]
    assert attr.line == lines["attr"][0] and attr.evidence["examples"] == 3
    assert "`result.valid_component`" in attr.message
    assert "validate_component results have no attribute 'valid_component'" in attr.message
    assert "(API: valid, domain, issues; did you mean 'valid'?)" in attr.message
    assert attr.evidence["tools"] == ["validate_component"]
    assert checks.suggest_attribute("count", ["match_count", "matches"]) == "match_count"

    tool = by_kind["unknown_tool"]
    assert tool.line == lines["tool"][0] and "'typecheck_direct'" in tool.message
    assert "did you mean 'typecheck'" in tool.message

    param = by_kind["unknown_parameter"]
    assert param.line == lines["param"][0] and "git_log has no parameter 'limit'" in param.message


def test_tool_call_share_outside_10_to_90_percent_is_a_warning(
    tmp_path: Path, suite: EvalSuite
) -> None:
    data = copy_dataset(
        tmp_path / "all-tools",
        lambda i, row: None if WRAPPER_RE.fullmatch(answer(row)) else {"drop": True},
    )
    rows = [json.loads(x) for x in (data / "train.jsonl").read_text().splitlines()]
    (data / "train.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows if "drop" not in r)
    )
    findings = dataset_findings(read_examples(data), suite, str(SUITE))
    [warning] = of(findings, checks.DISTRIBUTION_GAPS, "warning")
    n_tool = count_rows("train")[1]
    assert warning.evidence == {"tool_examples": n_tool, "direct_examples": 0, "share": 1.0}
    assert f"100% of the {n_tool} training examples are tool calls" in warning.message
    assert "call tools for conceptual questions" in warning.message


def test_suite_tools_never_trained_are_a_warning(tmp_path: Path, suite: EvalSuite) -> None:
    data = copy_dataset(
        tmp_path / "no-route",
        lambda i, row: (
            with_answer(row, "Routes are fine.")
            if "validate_route_pattern(" in answer(row)
            else None
        ),
    )
    findings = dataset_findings(read_examples(data), suite, str(SUITE))
    [warning] = of(findings, checks.DISTRIBUTION_GAPS, "warning")
    assert warning.evidence == {"tools_never_trained": ["validate_route_pattern"]}


def test_duplicates_and_train_valid_overlap_are_warnings(
    tmp_path: Path, demo_examples: list[Example]
) -> None:
    data = copy_dataset(tmp_path / "dupes")
    train_rows = (data / "train.jsonl").read_text().splitlines()
    # rows 3 and 4 again at the end of train; train row 10 also in valid
    (data / "train.jsonl").write_text("\n".join([*train_rows, train_rows[2], train_rows[3]]) + "\n")
    with (data / "valid.jsonl").open("a") as fh:
        fh.write(train_rows[9] + "\n")
    findings = checks.check_duplicates(read_examples(data))
    [dupes] = of(findings, checks.DUPLICATE_EXAMPLES)
    assert dupes.severity == "warning" and dupes.evidence["duplicate_rows"] == 2
    assert dupes.line == len(train_rows) + 1 and "repeats train.jsonl:3" in dupes.message
    [overlap] = of(findings, checks.MISLEADING_VAL_LOSS)
    assert overlap.file == str(data / "valid.jsonl") and overlap.line == count_rows("valid")[0] + 1
    assert "= train.jsonl:10" in overlap.message and overlap.evidence["shared"] == 1
    assert checks.check_duplicates(demo_examples) == []


def test_eval_prompts_in_the_training_data_are_a_warning(tmp_path: Path, suite: EvalSuite) -> None:
    leaked = suite.prompts[0]

    def leak(i: int, row: dict[str, Any]) -> dict[str, Any] | None:
        if i == 4:
            messages = [dict(m) for m in row["messages"]]
            messages[1]["content"] = leaked.prompt
            return {**row, "messages": messages}
        return None

    data = copy_dataset(tmp_path / "leak", leak)
    [warning] = checks.check_eval_leakage(read_examples(data), suite, str(SUITE))
    assert warning.line == 5 and warning.evidence == {"prompts": [leaked.id]}


def test_a_different_system_prompt_in_the_data_is_a_warning(
    tmp_path: Path, suite: EvalSuite
) -> None:
    def plain(i: int, row: dict[str, Any]) -> dict[str, Any]:
        messages = [dict(m) for m in row["messages"]]
        messages[0]["content"] = "You are a helpful assistant."
        return {**row, "messages": messages}

    data = copy_dataset(tmp_path / "sys", plain)
    [warning] = checks.check_system_prompt(read_examples(data), suite, str(SUITE))
    assert warning.pattern == checks.TOKENIZER_MISMATCH
    n = count_rows("train")[0]
    assert f"{n} of {n} training examples use a different system prompt" in warning.message


def test_examples_longer_than_max_seq_length_and_answers_longer_than_max_tokens(
    tiny_model: Path, demo_examples: list[Example], suite: EvalSuite
) -> None:
    tokenizer = checks.load_tokenizer(tiny_model)
    lengths, errors = measure_examples(tokenizer, demo_examples, suite.tool_names)
    assert errors == [] and len(lengths) == count_rows("train")[0] + count_rows("valid")[0]
    longest = max(n.tokens for n in lengths)
    assert check_lengths(lengths, longest, 160) == []  # demo: fits, answers fit

    [cut] = check_lengths(lengths, longest - 1, 160)
    assert cut.pattern == checks.TRUNCATION and cut.evidence["longest_tokens"] == longest
    at = next(n for n in lengths if n.tokens == longest)
    assert (cut.file, cut.line) == (at.file, at.line)

    [short] = check_lengths(lengths, longest, 24)
    assert short.pattern == checks.SHORT_MAX_TOKENS and short.severity == "warning"
    n_tool = count_rows("train")[1]
    assert short.evidence["answers"] == n_tool and short.evidence["answers_longer"] >= n_tool / 2


# --------------------------------------------------------------------------- suite


def test_suite_inconsistencies(tmp_path: Path, suite: EvalSuite) -> None:
    broken = suite.model_copy(
        update={
            "system_prompt": "You are a helpful assistant.",
            "generation": suite.generation.model_copy(update={"stop": ["<tool_call>"]}),
            "prompts": [
                suite.prompts[0].model_copy(update={"tool": "typecheck_direct"}),
                *suite.prompts[1:],
            ],
        }
    )
    findings = check_suite(broken, "suite.yaml", checkpoint_prompts=["direct-01"])
    messages = {f.pattern: [] for f in findings}
    for f in findings:
        messages[f.pattern].append(f.message)
    suite_errors = [f for f in findings if f.pattern == checks.SUITE_CONSISTENCY]
    assert {f.severity for f in suite_errors} == {"error"}
    assert any("expects tool 'typecheck_direct'" in m for m in messages[checks.SUITE_CONSISTENCY])
    assert any("stop string '<tool_call>'" in m for m in messages[checks.SUITE_CONSISTENCY])
    assert of(findings, checks.PROSE_DRIFT, "warning")  # no execute_code instructions
    assert of(findings, checks.MISLEADING_VAL_LOSS, "warning")  # no tool prompt per checkpoint


def test_a_suite_file_that_does_not_load_is_reported_with_its_line(
    tmp_path: Path, tiny_model: Path
) -> None:
    text = SUITE.read_text().replace(
        "expect: tool, tool: typecheck,", "expect: tool, tool: nope,", 1
    )
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(text)
    spec = demo_like_spec(tmp_path / "s.yaml", tiny_model, eval={"suite": str(suite_file)})
    [error] = run_preflight(spec)
    assert error.severity == "error" and error.file == str(suite_file)
    assert "'nope' is not in the suite's tool API" in error.message
    line = text.splitlines()[(error.line or 0) - 1]
    assert "nope" in line


# --------------------------------------------------------------------------- quantization, seeds


def test_quantizing_a_fused_adapter_below_5_bits_warns_and_adds_a_twin(
    tmp_path: Path, tiny_model: Path
) -> None:
    path = demo_like_spec(
        tmp_path / "s.yaml",
        tiny_model,
        quantize=[{"bits": 2}],
        eval={"variants": ["adapter", "quantized"]},
    )
    spec = load_spec(path)
    [warning] = of(run_preflight(path), checks.QUANTIZATION_SIGNAL_LOSS)
    assert warning.severity == "warning" and warning.file == str(path)
    assert "bits: 2" in path.read_text().splitlines()[(warning.line or 0) - 1]
    assert "q2 quantizes the fused adapter to 2 bits (4 levels)" in warning.message
    assert "the farm adds a q5 twin" in warning.message

    twinned, info = ensure_quant_twin(spec)
    assert [q.variant for q in twinned.quantize] == ["q2", "q5"]
    assert info is not None and info.severity == "info" and info.evidence["added"] == "q5"
    assert ensure_quant_twin(twinned) == (twinned, None)  # idempotent
    assert ExperimentSpec.model_validate(twinned.model_dump(mode="json", by_alias=True))


def test_no_twin_is_added_when_one_exists(tmp_path: Path, tiny_model: Path) -> None:
    with_fused = load_spec(demo_like_spec(tmp_path / "a.yaml", tiny_model, quantize=[{"bits": 4}]))
    assert ensure_quant_twin(with_fused) == (with_fused, None)
    with_q8 = load_spec(
        demo_like_spec(
            tmp_path / "b.yaml",
            tiny_model,
            quantize=[{"bits": 4}, {"bits": 8}],
            eval={"variants": ["adapter", "quantized"]},
        )
    )
    assert ensure_quant_twin(with_q8) == (with_q8, None)
    assert (
        "compared with the run's f16 / ≥ 5-bit twin"
        in checks.check_quantization(with_q8)[0].message
    )
    safe = load_spec(demo_like_spec(tmp_path / "c.yaml", tiny_model))
    assert checks.check_quantization(safe) == [] and ensure_quant_twin(safe) == (safe, None)


def test_fusing_into_a_4_bit_base_without_dequantize_warns(tmp_path: Path) -> None:
    spec = parse_spec(
        demo_like_spec(
            tmp_path / "s.yaml", "mlx-community/Qwen3-0.6B-4bit", fuse={"dequantize": False}
        ).read_text(),
        check_files=False,
    )
    bits = checks.quantized_bits(spec.base_model, None)
    assert bits == 4
    [warning] = checks.check_quantization(spec, bits)
    assert "fused back into 4-bit weights" in warning.message
    assert checks.quantized_bits("x", {"quantization": {"bits": 8, "group_size": 64}}) == 8


def test_one_seed_and_checkpoints_without_val_loss_are_infos(
    tmp_path: Path, tiny_model: Path
) -> None:
    path = demo_like_spec(tmp_path / "s.yaml", tiny_model, seeds=[7], train={"steps_per_eval": 200})
    findings = checks.check_seeds_and_checkpoints(load_spec(path), str(path))
    [seeds] = of(findings, checks.STOCHASTIC_FORMAT_LOCK, "info")
    assert "82.4%, 38.9% and 22.2%" in seeds.message
    [val] = of(findings, checks.MISLEADING_VAL_LOSS, "info")
    # val reports (it - 1) at 0, 199; checkpoints 50, 100, 150 are > 1 step away
    assert val.evidence["checkpoints_without_val_loss"] == [50, 100, 150]
    assert "steps_per_eval to 50" in val.fix
    assert (
        checks.check_seeds_and_checkpoints(
            load_spec(demo_like_spec(tmp_path / "ok.yaml", tiny_model))
        )
        == []
    )


# --------------------------------------------------------------------------- on the worker


def test_worker_preflight_stops_a_broken_hf_model_before_training(
    farm_home: Path, tmp_path: Path, broken_models: dict[str, Path], tiny_model: Path
) -> None:
    from sqlmodel import select

    from jobs.db import Diagnostic, Stage, session_scope
    from jobs.submit import create_rows
    from worker.context import load_context
    from worker.preflight import PreflightFailed, check_before_training

    spec = load_spec(demo_like_spec(tmp_path / "s.yaml", "someorg/qwen-like-model", seeds=[1]))
    with session_scope() as session:
        experiment = create_rows(session, spec)
        train = session.exec(select(Stage).where(Stage.kind == "train")).one()
        train_id, experiment_id = train.id or 0, experiment.id
    ctx = load_context(train_id)
    fetched: list[str] = []

    def fetch(hf_id: str) -> Path:  # stands in for the Hub download of the tokenizer files
        fetched.append(hf_id)
        return broken_models["eos_endoftext"]

    with pytest.raises(PreflightFailed) as failed:
        check_before_training(ctx, fetch=fetch)
    assert fetched == ["someorg/qwen-like-model"]
    assert "[eos / stop mismatch]" in str(failed.value) and "no training done" in str(failed.value)
    with session_scope() as session:
        rows = session.exec(select(Diagnostic).where(Diagnostic.run_id == ctx.run_id)).all()
    assert {(d.scope, d.pattern, d.severity) for d in rows} >= {
        ("preflight", checks.EOS_MISMATCH, "error")
    }
    assert all(d.experiment_id == experiment_id for d in rows)

    # A retried stage checks again and replaces the rows; a healthy model passes.
    findings = check_before_training(ctx, fetch=lambda _id: tiny_model)
    assert not [f for f in findings if f.severity == "error"]
    with session_scope() as session:
        rows = session.exec(select(Diagnostic).where(Diagnostic.run_id == ctx.run_id)).all()
    assert rows == []  # the broken run's rows were replaced; the healthy model has none


def test_local_models_are_not_checked_again_on_the_worker(
    farm_home: Path, tmp_path: Path, tiny_model: Path
) -> None:
    from sqlmodel import select

    from jobs.db import Stage, session_scope
    from jobs.submit import create_rows
    from worker.context import load_context
    from worker.preflight import check_before_training

    spec = load_spec(demo_like_spec(tmp_path / "s.yaml", tiny_model, seeds=[1]))
    with session_scope() as session:
        create_rows(session, spec)
        train_id = session.exec(select(Stage).where(Stage.kind == "train")).one().id or 0
    ctx = load_context(train_id)

    def no_fetch(hf_id: str) -> Path:
        raise AssertionError("a local model is never fetched")

    assert check_before_training(ctx, fetch=no_fetch) == []
    findings = check_before_training(ctx, fetch=no_fetch, always=True)
    assert not [f for f in findings if f.severity in ("error", "warning")]


def test_max_tokens_shorter_than_the_answers_points_at_the_spec_line(
    tmp_path: Path, tiny_model: Path
) -> None:
    path = demo_like_spec(tmp_path / "s.yaml", tiny_model, eval={"max_tokens": 24})
    [warning] = of(run_preflight(path), checks.SHORT_MAX_TOKENS)
    assert warning.severity == "warning" and warning.file == str(path)
    assert "max_tokens: 24" in path.read_text().splitlines()[(warning.line or 0) - 1]
    assert "eval max_tokens 24 is shorter than" in warning.message
