"""Experiment spec parsing, validation, JSONL dataset checks and the config fingerprint.

Every test works on real files in tmp_path. Line numbers below refer to VALID_SPEC:

     1 name            8   learning_rate    15 quantize:
     2 base_model      9   num_layers       16   - {bits: 4}
     3 dataset        10   mask_prompt      17   - {bits: 5, group_size: 32}
     4 seeds          11   lora:            18 eval:
     5 train:         12     rank           19   suite
     6   iters        13     scale          20   variants
     7   batch_size   14 fuse               21   checkpoints
                                            22 resources
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.datasets import check_dataset, dataset_digest, validate_jsonl
from jobs.experiment_spec import (
    EvalSpec,
    ExperimentSpec,
    TrainSpec,
    config_fingerprint,
    load_spec,
    lora_config,
    parse_spec,
    resolve_path,
    spec_to_yaml,
)
from jobs.problems import InputError, Problem
from tests.support.spec_files import (
    CHAT_ROW,
    VALID_SPEC,
    make_dataset,
    make_model_dir,
    make_suite,
    make_workspace,
    write_jsonl,
    write_safetensors,
)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A workspace folder holding model/, data/, suite.yaml and spec.yaml."""
    make_workspace(tmp_path)
    return tmp_path


def problems_of(fn: Callable[[], object]) -> list[Problem]:
    with pytest.raises(InputError) as info:
        fn()
    assert info.value.problems, "InputError without problems"
    return info.value.problems


def spec_problems(ws: Path, text: str) -> list[Problem]:
    path = ws / "spec.yaml"
    path.write_text(text)
    return problems_of(lambda: load_spec(path))


def only(problems: list[Problem], field: str) -> Problem:
    hits = [p for p in problems if p.field == field]
    assert len(hits) == 1, f"expected one problem for {field!r}, got: {problems}"
    return hits[0]


def edit(old: str, new: str, text: str = VALID_SPEC) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# --------------------------------------------------------------------------- valid specs


def test_valid_spec_parses_and_resolves_paths(ws: Path) -> None:
    spec = load_spec(ws / "spec.yaml")
    assert spec.name == "code-mode-r8"
    assert spec.base_model == str(ws / "model") and spec.base_model_is_local
    assert spec.dataset == ws / "data" and spec.dataset.is_absolute()
    assert spec.eval.suite == ws / "suite.yaml"
    assert spec.seeds == [1, 2, 3]
    assert spec.train.learning_rate == 1e-4 and spec.train.mask_prompt is True
    assert spec.quantize_variants == ["q4", "q5g32"]
    assert spec.eval.variants == ["adapter", "fused", "quantized"]
    assert spec.resources.min_memory_gb == 8.0
    # Unset knobs take mlx-lm's defaults.
    assert spec.train.save_every == 100 and spec.train.steps_per_eval == 200
    assert spec.train.max_seq_length == 2048 and spec.train.val_batches == 25
    assert spec.train.optimizer == "adam" and spec.train.fine_tune_type == "lora"
    assert spec.train.lora.dropout == 0.0 and spec.train.lora.keys is None
    assert spec.fuse is not None and spec.fuse.from_ == "final" and spec.fuse.dequantize
    assert spec.resources.timeout_hours == 24.0


def test_spec_loaded_from_another_directory_resolves_next_to_the_spec(
    ws: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    spec = load_spec(ws / "spec.yaml")
    assert spec.dataset == ws / "data"


def test_relative_paths_fall_back_to_the_current_directory(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = ws / "specs"
    specs.mkdir()
    (specs / "exp.yaml").write_text(VALID_SPEC)
    monkeypatch.chdir(ws)
    spec = load_spec(specs / "exp.yaml")
    assert spec.dataset == ws / "data"
    assert spec.eval.suite == ws / "suite.yaml"
    assert spec.base_model == str(ws / "model")


def test_resolve_path_prefers_base_dir_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, cwd = tmp_path / "base", tmp_path / "cwd"
    (base / "both").mkdir(parents=True)
    (cwd / "both").mkdir(parents=True)
    (cwd / "only_cwd").mkdir()
    monkeypatch.chdir(cwd)
    assert resolve_path("both", base) == base / "both"
    assert resolve_path("only_cwd", base) == cwd / "only_cwd"
    assert resolve_path("nowhere", base) == base / "nowhere"
    assert resolve_path(str(cwd / "both"), base) == cwd / "both"


def test_hugging_face_id_is_kept_as_is(ws: Path) -> None:
    text = edit("base_model: model", "base_model: mlx-community/Qwen3-0.6B-4bit")
    text = edit("  num_layers: 4\n", "  num_layers: 8\n", text)
    spec = parse_spec(text, "spec.yaml", ws)
    assert spec.base_model == "mlx-community/Qwen3-0.6B-4bit"
    assert not spec.base_model_is_local


def test_default_variants_keep_only_what_the_spec_produces(ws: Path) -> None:
    text = edit("  variants: [adapter, fused, quantized]\n", "")
    no_quant = edit("quantize:\n  - {bits: 4}\n  - {bits: 5, group_size: 32}\n", "", text)
    assert parse_spec(no_quant, "s", ws).eval.variants == ["adapter", "fused"]
    no_fuse = edit("fuse: {dequantize: true}", "fuse: null", no_quant)
    assert parse_spec(no_fuse, "s", ws).eval.variants == ["adapter"]
    assert parse_spec(text, "s", ws).eval.variants == ["adapter", "fused", "quantized"]


def test_from_alias_and_lr_schedule(ws: Path) -> None:
    text = edit("fuse: {dequantize: true}", "fuse: {dequantize: false, from: best}")
    text = edit(
        "  learning_rate: 1.0e-4\n",
        "  lr_schedule: {name: cosine_decay, arguments: [1e-4, 50, 1e-6], warmup: 5}\n",
        text,
    )
    spec = parse_spec(text, "s", ws)
    assert spec.fuse is not None and spec.fuse.from_ == "best" and not spec.fuse.dequantize
    assert spec.train.lr_schedule is not None
    assert spec.train.lr_schedule.arguments == [1e-4, 50.0, 1e-6]
    config = lora_config(spec.train)
    assert config["lr_schedule"]["name"] == "cosine_decay"
    assert config["lora_parameters"] == {"rank": 8, "scale": 20.0, "dropout": 0.0}
    assert config["optimizer_config"] == {"adam": {}}


def test_check_files_false_skips_filesystem_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = parse_spec(VALID_SPEC, "s", tmp_path, check_files=False)
    assert spec.dataset == tmp_path / "data"
    assert spec.eval.suite == tmp_path / "suite.yaml"
    assert spec.base_model == str(tmp_path / "model")


# --------------------------------------------------------------------------- bad input


def test_unknown_key_suggests_the_closest_valid_key(ws: Path) -> None:
    problems = spec_problems(ws, edit("  learning_rate:", "  learning_rat:"))
    p = only(problems, "train.learning_rat")
    assert (p.file, p.line) == (str(ws / "spec.yaml"), 8)
    assert "unknown key 'learning_rat' — did you mean 'learning_rate'?" in p.message
    assert str(p) == f"{ws / 'spec.yaml'}:8: train.learning_rat: {p.message}"


def test_unknown_key_in_the_wrong_section_names_its_home(ws: Path) -> None:
    problems = spec_problems(ws, edit("seeds: [1, 2, 3]", "iters: 10"))
    p = only(problems, "iters")
    assert p.line == 4 and "belongs under 'train:'" in p.message


def test_lora_alpha_points_to_scale(ws: Path) -> None:
    p = only(spec_problems(ws, edit("    scale: 20.0", "    alpha: 16")), "train.lora.alpha")
    assert p.line == 13 and "'scale'" in p.message


def test_wrong_type(ws: Path) -> None:
    p = only(spec_problems(ws, edit("  batch_size: 2", "  batch_size: two")), "train.batch_size")
    assert (p.file, p.line) == (str(ws / "spec.yaml"), 7)
    assert "whole number" in p.message and "'two'" in p.message


def test_out_of_range_number(ws: Path) -> None:
    p = only(spec_problems(ws, edit("    rank: 8", "    rank: 0")), "train.lora.rank")
    assert p.line == 12 and "≥ 1" in p.message and "got 0" in p.message


def test_bad_literal_suggests_a_valid_value(ws: Path) -> None:
    text = edit("  mask_prompt: true", "  fine_tune_type: dorra")
    p = only(spec_problems(ws, text), "train.fine_tune_type")
    assert p.line == 10 and "did you mean 'dora'?" in p.message


def test_num_layers_zero_is_rejected(ws: Path) -> None:
    p = only(spec_problems(ws, edit("  num_layers: 4", "  num_layers: 0")), "train.num_layers")
    assert p.line == 9 and "-1" in p.message


def test_bad_yaml_reports_the_line(ws: Path) -> None:
    problems = spec_problems(ws, edit("  batch_size: 2", " batch_size: 2"))
    assert len(problems) == 1
    p = problems[0]
    assert (p.file, p.line, p.field) == (str(ws / "spec.yaml"), 7, "")
    assert p.message.startswith("invalid YAML")


def test_duplicate_yaml_key(ws: Path) -> None:
    p = only(spec_problems(ws, edit("  batch_size: 2", "  iters: 60")), "train.iters")
    assert p.line == 7 and "first on line 6" in p.message


def test_missing_required_key_points_at_the_parent_mapping(ws: Path) -> None:
    p = only(spec_problems(ws, edit("  suite: suite.yaml\n", "")), "eval.suite")
    assert p.line == 18 and "required key 'suite' is missing" in p.message


def test_missing_dataset_folder(ws: Path) -> None:
    p = only(spec_problems(ws, edit("dataset: data", "dataset: datasets/nope")), "dataset")
    assert (p.file, p.line) == (str(ws / "spec.yaml"), 3)
    assert "folder not found" in p.message and str(ws / "datasets" / "nope") in p.message


def test_missing_valid_jsonl_is_accepted_with_a_warning(ws: Path) -> None:
    # mlx-lm trains without validation when valid.jsonl is missing.
    (ws / "data" / "valid.jsonl").unlink()
    load_spec(ws / "spec.yaml")
    [warning] = check_dataset(ws / "data", 2, mask_prompt=True).warnings
    assert warning.file == str(ws / "data")
    assert "no validation loss will be reported" in warning.message


def test_missing_train_jsonl(ws: Path) -> None:
    (ws / "data" / "train.jsonl").unlink()
    p = only(spec_problems(ws, VALID_SPEC), "dataset")
    assert p.line == 3 and f"missing {ws / 'data' / 'train.jsonl'}" in p.message


def test_empty_train_jsonl(ws: Path) -> None:
    (ws / "data" / "train.jsonl").write_text("")
    problems = spec_problems(ws, VALID_SPEC)
    train = str(ws / "data" / "train.jsonl")
    assert [p for p in problems if p.file == train] == [
        Problem(train, "file is empty — mlx-lm needs at least one JSON row per line")
    ]


def test_invalid_json_on_line_3(ws: Path) -> None:
    train = ws / "data" / "train.jsonl"
    lines = train.read_text().splitlines(keepends=True)
    lines[2] = '{"messages": [}\n'
    train.write_text("".join(lines))
    problems = spec_problems(ws, VALID_SPEC)
    p = next(p for p in problems if p.file == str(train))
    assert (p.line, p.field) == (3, "")
    assert p.message.startswith("invalid JSON")
    assert len([p for p in problems if p.file == str(train)]) == 1


def test_row_mlx_lm_would_reject(ws: Path) -> None:
    bad = {"messages": [{"role": "user", "content": "hi"}, "bye"], "tools": "ls"}
    write_jsonl(ws / "data" / "valid.jsonl", [CHAT_ROW, bad, CHAT_ROW])
    problems = spec_problems(ws, VALID_SPEC)
    valid = str(ws / "data" / "valid.jsonl")
    message = only(problems, "messages[1]")
    assert (message.file, message.line) == (valid, 2) and "must be an object" in message.message
    tools = only(problems, "tools")
    assert (tools.file, tools.line) == (valid, 2) and "must be a list" in tools.message


def test_a_row_mlx_lm_trains_on_is_a_warning_not_a_problem(ws: Path) -> None:
    # Roles are the chat template's business (a 'bot' turn is dropped by it), and
    # with mask_prompt mlx-lm trains on the last message, whatever its role.
    odd = {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}
    write_jsonl(ws / "data" / "valid.jsonl", [CHAT_ROW, odd, CHAT_ROW])
    load_spec(ws / "spec.yaml")
    [warning] = check_dataset(ws / "data", 2, mask_prompt=True).warnings
    assert (warning.file, warning.line) == (str(ws / "data" / "valid.jsonl"), 2)
    assert warning.field == "messages[1]" and "trains only on the last message" in warning.message


def test_mixed_formats_name_the_first_deviating_line(ws: Path) -> None:
    text_row = {"text": "plain text"}
    write_jsonl(ws / "data" / "train.jsonl", [CHAT_ROW] * 3 + [text_row, CHAT_ROW, text_row])
    problems = spec_problems(ws, VALID_SPEC)
    train = str(ws / "data" / "train.jsonl")
    [p] = [p for p in problems if p.file == train]
    assert p.line == 4
    assert "'text' format but line 1 is 'chat'" in p.message and "2 rows deviate" in p.message


def test_mask_prompt_needs_chat_or_completions_data(ws: Path) -> None:
    for split in ("train", "valid"):
        write_jsonl(ws / "data" / f"{split}.jsonl", [{"text": "hello world"}] * 4)
    p = only(spec_problems(ws, VALID_SPEC), "train.mask_prompt")
    assert (p.file, p.line) == (str(ws / "spec.yaml"), 10)
    assert "'text' format" in p.message


def test_dataset_smaller_than_batch_size(ws: Path) -> None:
    write_jsonl(ws / "data" / "valid.jsonl", [CHAT_ROW])
    p = only(spec_problems(ws, VALID_SPEC), "train.batch_size")
    assert p.line == 7 and "valid.jsonl has only 1 rows but batch_size is 2" in p.message


def test_missing_suite(ws: Path) -> None:
    (ws / "suite.yaml").unlink()
    p = only(spec_problems(ws, VALID_SPEC), "eval.suite")
    assert (p.file, p.line) == (str(ws / "spec.yaml"), 19)
    assert "suite file not found" in p.message


def test_checkpoint_prompts_must_exist_in_the_suite(ws: Path) -> None:
    text = edit("  checkpoints: true", "  checkpoints: true\n  checkpoint_prompts: [p1, p3]")
    p = only(spec_problems(ws, text), "eval.checkpoint_prompts[1]")
    assert p.line == 22 and "'p3' is not in the suite" in p.message


def test_model_dir_without_weights(ws: Path) -> None:
    (ws / "model" / "model.safetensors").unlink()
    p = only(spec_problems(ws, VALID_SPEC), "base_model")
    assert (p.file, p.line) == (str(ws / "spec.yaml"), 2)
    assert "no *.safetensors weights" in p.message


def test_model_dir_without_tokenizer_or_config(ws: Path) -> None:
    (ws / "model" / "tokenizer.json").unlink()
    (ws / "model" / "config.json").unlink()
    problems = [p for p in spec_problems(ws, VALID_SPEC) if p.field == "base_model"]
    assert len(problems) == 2
    assert any("no config.json" in p.message for p in problems)
    assert any("no tokenizer" in p.message for p in problems)


def test_base_model_neither_folder_nor_hf_id(ws: Path) -> None:
    p = only(
        spec_problems(ws, edit("base_model: model", "base_model: ./models/tiny")), "base_model"
    )
    assert p.line == 2 and "not a Hugging Face id" in p.message


def test_num_layers_beyond_the_model(ws: Path) -> None:
    p = only(spec_problems(ws, edit("  num_layers: 4", "  num_layers: 8")), "train.num_layers")
    assert p.line == 9 and "model's 4 layers" in p.message


def test_quantized_variant_without_quantize_list(ws: Path) -> None:
    text = edit("quantize:\n  - {bits: 4}\n  - {bits: 5, group_size: 32}\n", "")
    p = only(spec_problems(ws, text), "eval.variants[2]")
    assert (p.file, p.line) == (str(ws / "spec.yaml"), 17)
    assert "needs at least one quantize entry" in p.message


def test_fused_variant_without_fuse(ws: Path) -> None:
    problems = spec_problems(ws, edit("fuse: {dequantize: true}", "fuse: null"))
    assert only(problems, "eval.variants[1]").line == 20
    assert only(problems, "eval.variants[2]").line == 20
    assert "fuse is null" in only(problems, "quantize").message


def test_duplicate_seeds(ws: Path) -> None:
    p = only(spec_problems(ws, edit("seeds: [1, 2, 3]", "seeds: [1, 2, 1]")), "seeds[2]")
    assert p.line == 4 and "seed 1 is listed twice" in p.message


def test_duplicate_quantize_variants(ws: Path) -> None:
    p = only(
        spec_problems(ws, edit("{bits: 5, group_size: 32}", "{bits: 4, group_size: 64}")),
        "quantize[1]",
    )
    assert p.line == 17 and "duplicate quantize variant q4" in p.message


def test_lr_schedule_argument_count_and_ignored_learning_rate(ws: Path) -> None:
    text = edit(
        "  num_layers: 4",
        "  num_layers: 4\n  lr_schedule: {name: linear_schedule, arguments: [1e-5, 0.0]}",
    )
    problems = spec_problems(ws, text)
    assert "takes 3 arguments" in only(problems, "train.lr_schedule.arguments").message
    assert "is ignored when lr_schedule is set" in only(problems, "train.learning_rate").message


def test_optimizer_config_keys_are_checked(ws: Path) -> None:
    text = edit("  mask_prompt: true", "  optimizer: adamw\n  optimizer_config: {weight_decy: 0.1}")
    p = only(spec_problems(ws, text), "train.optimizer_config.weight_decy")
    assert p.line == 11 and "did you mean 'weight_decay'?" in p.message


def test_all_problems_are_reported_at_once(ws: Path) -> None:
    (ws / "suite.yaml").unlink()
    text = edit("  learning_rate:", "  learning_rat:")
    text = edit("  batch_size: 2", "  batch_size: -3", text)
    text = edit("seeds: [1, 2, 3]", "seeds: [1, 1]", text)
    text = edit("dataset: data", "dataset: missing", text)
    problems = spec_problems(ws, text)
    got = {(p.field, p.line) for p in problems}
    assert got == {
        ("dataset", 3),
        ("seeds[1]", 4),
        ("train.batch_size", 7),
        ("train.learning_rat", 8),
        ("eval.suite", 19),
    }
    assert [p.line for p in problems] == sorted(p.line or 0 for p in problems)


def test_cross_field_checks_also_guard_direct_construction(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="seed 1 is listed twice"):
        ExperimentSpec(
            name="x",
            base_model="org/model",
            dataset=tmp_path,
            seeds=[1, 1],
            train=TrainSpec(),
            eval=EvalSpec(suite=tmp_path / "s.yaml"),
        )


# --------------------------------------------------------------------------- datasets


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        (CHAT_ROW, "chat"),
        ({**CHAT_ROW, "tools": [{"type": "function", "function": {"name": "ls"}}]}, "tools"),
        ({"prompt": "2+2?", "completion": "4"}, "completions"),
        ({"text": "hello"}, "text"),
    ],
)
def test_validate_jsonl_detects_formats(tmp_path: Path, row: dict, fmt: str) -> None:
    assert validate_jsonl(write_jsonl(tmp_path / "f.jsonl", [row, row])) == (fmt, [])


def test_validate_jsonl_row_problems(tmp_path: Path) -> None:
    rows: list[object] = [
        {"prompt": "p", "completion": 3},
        [1, 2],
        {"prompt": "only a prompt"},
        {"text": ""},
    ]
    path = write_jsonl(tmp_path / "f.jsonl", rows)
    path.write_text(path.read_text() + "\n")
    fmt, problems = validate_jsonl(path)
    assert fmt == "completions"
    # A number as completion is the chat template's business (preflight renders it).
    assert [(p.line, p.field) for p in problems] == [(2, ""), (3, ""), (5, "")]
    assert "must be a JSON object, got a list" in problems[0].message
    assert "row has no 'completion' but line 1 is 'completions'" in problems[1].message
    assert "(2 rows deviate)" in problems[1].message
    assert "blank line" in problems[-1].message


def test_assistant_tool_calls_without_content_is_accepted(tmp_path: Path) -> None:
    row = {
        "messages": [
            {"role": "user", "content": "ls"},
            {"role": "assistant", "tool_calls": [{"function": {"name": "ls", "arguments": {}}}]},
            {"role": "tool", "content": "a.py"},
            {"role": "assistant", "content": "a.py"},
        ]
    }
    assert validate_jsonl(write_jsonl(tmp_path / "f.jsonl", [row])) == ("chat", [])


def test_dataset_digest_covers_every_split(tmp_path: Path) -> None:
    data = make_dataset(tmp_path)
    before = dataset_digest(data)
    assert before == dataset_digest(data)
    write_jsonl(data / "test.jsonl", [CHAT_ROW])
    with_test = dataset_digest(data)
    assert with_test != before
    valid = data / "valid.jsonl"
    valid.write_bytes(valid.read_bytes().replace(b"files", b"filez"))
    assert dataset_digest(data) != with_test


# --------------------------------------------------------------------------- fingerprint


def fp(ws: Path, text: str = VALID_SPEC) -> str:
    return config_fingerprint(parse_spec(text, "s", ws))


def test_fingerprint_is_16_hex_and_stable(ws: Path) -> None:
    value = fp(ws)
    assert len(value) == 16 and int(value, 16) >= 0
    assert fp(ws) == value


def test_fingerprint_ignores_name_seeds_and_resources(ws: Path) -> None:
    text = edit("name: code-mode-r8", "name: other-name")
    text = edit("seeds: [1, 2, 3]", "seeds: [7, 8]", text)
    text = edit("resources: {min_memory_gb: 8}", "resources: {timeout_hours: 2}", text)
    assert fp(ws, text) == fp(ws)


def test_fingerprint_ignores_where_the_files_live(ws: Path, tmp_path_factory) -> None:
    copy = tmp_path_factory.mktemp("copy") / "ws"
    shutil.copytree(ws, copy)
    assert fp(copy) == fp(ws)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("  iters: 50", "  iters: 51"),
        ("  batch_size: 2", "  batch_size: 1"),
        ("  learning_rate: 1.0e-4", "  learning_rate: 2.0e-4"),
        ("  num_layers: 4", "  num_layers: -1"),
        ("  mask_prompt: true", "  mask_prompt: false"),
        ("    rank: 8", "    rank: 16"),
        ("    scale: 20.0", "    scale: 10.0"),
        ("    scale: 20.0", "    scale: 20.0\n    dropout: 0.05"),
        ("    scale: 20.0", "    scale: 20.0\n    keys: [self_attn.q_proj]"),
        ("  iters: 50", "  iters: 50\n  save_every: 10"),
        ("  iters: 50", "  iters: 50\n  optimizer: adamw"),
        ("  iters: 50", "  iters: 50\n  max_seq_length: 1024"),
        ("  iters: 50", "  iters: 50\n  grad_accumulation_steps: 4"),
        ("fuse: {dequantize: true}", "fuse: {dequantize: false}"),
        ("  - {bits: 4}", "  - {bits: 3}"),
        ("  - {bits: 5, group_size: 32}", "  - {bits: 5, group_size: 128}"),
        ("  checkpoints: true", "  checkpoints: false"),
        ("  checkpoints: true", "  checkpoints: true\n  max_tokens: 256"),
        (
            "  variants: [adapter, fused, quantized]",
            "  variants: [base, adapter, fused, quantized]",
        ),
    ],
)
def test_fingerprint_changes_with_every_knob(ws: Path, old: str, new: str) -> None:
    assert fp(ws, edit(old, new)) != fp(ws)


def test_fingerprint_changes_with_a_dataset_byte(ws: Path) -> None:
    before = fp(ws)
    valid = ws / "data" / "valid.jsonl"
    valid.write_bytes(valid.read_bytes().replace(b"List", b"list", 1))
    assert fp(ws) != before


def test_fingerprint_changes_with_a_suite_byte(ws: Path) -> None:
    before = fp(ws)
    suite = ws / "suite.yaml"
    suite.write_text(suite.read_text().replace("Hello", "Hello!"))
    assert fp(ws) != before


def test_fingerprint_changes_with_the_model_but_never_reads_weights(ws: Path) -> None:
    before = fp(ws)
    config = ws / "model" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "rope_theta": 1e6}))
    after_config = fp(ws)
    assert after_config != before
    # Same-size weight edit: not seen (weights are identified by name and size only).
    weights = ws / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert fp(ws) == after_config
    write_safetensors(weights, floats=8)
    assert fp(ws) != after_config


def test_fingerprint_for_hugging_face_ids(ws: Path) -> None:
    a = edit("base_model: model", "base_model: mlx-community/Qwen3-0.6B-4bit")
    b = edit("base_model: model", "base_model: mlx-community/Qwen3-1.7B-4bit")
    a = edit("  num_layers: 4", "  num_layers: 8", a)
    b = edit("  num_layers: 4", "  num_layers: 8", b)
    assert fp(ws, a) != fp(ws, b)


def test_fingerprint_with_check_files_false(ws: Path) -> None:
    spec = parse_spec(VALID_SPEC, "s", ws, check_files=False)
    assert config_fingerprint(spec) == fp(ws)


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("name: code-mode-r8", "name: code-mode-r8"),
        ("  learning_rate: 1.0e-4", "  lr_schedule: {name: cosine_decay, arguments: [1e-4, 50]}"),
        ("  mask_prompt: true", "  optimizer: adamw\n  optimizer_config: {betas: [0.9, 0.95]}"),
        ("fuse: {dequantize: true}", "fuse: {from: best}"),
        ("  checkpoints: true", "  checkpoints: true\n  checkpoint_prompts: [p2]"),
    ],
)
def test_spec_to_yaml_round_trips(ws: Path, old: str, new: str) -> None:
    spec = parse_spec(edit(old, new), "s", ws)
    text = spec_to_yaml(spec)
    again = parse_spec(text, "again", Path("/"))
    assert again == spec
    assert spec_to_yaml(again) == text
    assert config_fingerprint(again) == config_fingerprint(spec)


def test_round_trip_of_pruned_default_variants(tmp_path: Path) -> None:
    make_model_dir(tmp_path)
    make_dataset(tmp_path)
    make_suite(tmp_path)
    text = edit("quantize:\n  - {bits: 4}\n  - {bits: 5, group_size: 32}\n", "")
    text = edit("  variants: [adapter, fused, quantized]\n", "", text)
    spec = parse_spec(text, "s", tmp_path)
    assert parse_spec(spec_to_yaml(spec), "again") == spec


def test_model_dump_validates_back(ws: Path) -> None:
    """Stored specs (model_dump as JSON) load back with model_validate."""
    text = edit(
        "  learning_rate: 1.0e-4", "  lr_schedule: {name: step_decay, arguments: [1e-4, 0.5, 10]}"
    )
    spec = parse_spec(text, "s", ws)
    dumped = json.loads(json.dumps(spec.model_dump(mode="json", by_alias=True)))
    again = ExperimentSpec.model_validate(dumped)
    assert again == spec
    assert parse_spec(spec_to_yaml(again), "again") == spec


def test_exponent_floats_without_a_dot_are_numbers(ws: Path) -> None:
    """YAML 1.1 reads `1e-4` as a string; specs read it as a float, like mlx-lm does."""
    spec = parse_spec(edit("  learning_rate: 1.0e-4", "  learning_rate: 1e-4"), "s", ws)
    assert spec.train.learning_rate == 1e-4


# --------------------------------------------------------------------------- trackers


def test_report_to_a_tracker_that_is_not_installed_is_refused_at_its_line(ws: Path) -> None:
    import importlib.util

    assert importlib.util.find_spec("wandb") is None  # not a dependency of the farm
    text = edit("train:\n", "train:\n  report_to: [wandb]\n")
    problem = only(spec_problems(ws, text), "train.report_to")
    assert "wandb is not installed" in problem.message and "uv add wandb" in problem.message
    assert problem.line == text.splitlines().index("  report_to: [wandb]") + 1
    unknown = only(spec_problems(ws, edit("train:\n", "train:\n  report_to: [tensorboard]\n")),
                   "train.report_to[0]")  # fmt: skip
    assert "wandb" in unknown.message and "swanlab" in unknown.message


def test_report_to_does_not_change_the_config_fingerprint(ws: Path) -> None:
    from jobs.experiment_spec import ExperimentSpec

    spec = parse_spec(VALID_SPEC, "s", ws)
    tracked = ExperimentSpec.model_validate(
        {
            **spec.model_dump(by_alias=True),
            "train": {**spec.train.model_dump(), "report_to": ["swanlab"]},
        }
    )
    assert tracked.train.report_to == ["swanlab"]
    assert config_fingerprint(tracked) == config_fingerprint(spec)
    assert "report_to" not in spec.model_dump()["train"]  # older specs dump as before
