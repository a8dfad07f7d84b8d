"""web.forms on its own: seeds, form ⇄ spec ⇄ YAML, problems filed under their fields."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jobs.experiment_spec import config_fingerprint, parse_spec
from jobs.problems import Problem
from tests.support.spec_files import make_dataset, make_suite
from tests.support.web import workspace
from web import form_bounds, forms, pickers
from web.spec_yaml import spec_dict_to_yaml


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("1-5", [1, 2, 3, 4, 5]),
        ("1-3, 8", [1, 2, 3, 8]),
        ("[1, 2, 3]", [1, 2, 3]),
        ("4 5  6", [4, 5, 6]),
        ("0", [0]),
        ("7-7,9", [7, 9]),
    ],
)
def test_parse_seeds(text: str, seeds: list[int]) -> None:
    assert forms.parse_seeds(text) == seeds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "at least one seed"),
        ("1, x", "'x' is not a seed"),
        ("5-1", "runs backwards — write 1-5"),
        ("-1", "whole numbers ≥ 0"),
        ("1-5000", "5000 seeds, at most 1000 allowed"),
        ("1.5", "'1.5' is not a seed"),
    ],
)
def test_parse_seeds_explains_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        forms.parse_seeds(text)


@pytest.mark.parametrize("seeds", [[1], [1, 2], [1, 2, 3], [1, 2, 3, 5, 7, 8, 9, 20], [0, 2, 4]])
def test_format_seeds_round_trips(seeds: list[int]) -> None:
    text = forms.format_seeds(seeds)
    assert forms.parse_seeds(text) == seeds
    assert len(text) <= len(", ".join(map(str, seeds)))


def test_default_form_is_a_valid_spec_whose_yaml_round_trips(tmp_path: Path) -> None:
    values = workspace(tmp_path)
    result = form_bounds.validate_form(values, run_preflight=False)
    assert result.ok, result.problems
    assert result.spec is not None
    again = parse_spec(result.yaml, base_dir=forms.PROJECT_ROOT)
    assert config_fingerprint(again) == result.fingerprint
    # Back into the form and out again: the same configuration.
    back, notes = forms.spec_dict_to_form(yaml.safe_load(result.yaml))
    assert notes == []
    assert form_bounds.validate_form(back, run_preflight=False).fingerprint == result.fingerprint


def test_every_form_field_reaches_the_spec(tmp_path: Path) -> None:
    values = workspace(tmp_path)
    values.update({
        "train.iters": 77, "train.learning_rate": 3e-4, "train.fine_tune_type": "dora",
        "train.optimizer": "adamw", "train.optimizer_config": "{weight_decay: 0.05}",
        "train.mask_prompt": True, "train.grad_accumulation_steps": 2,
        "train.grad_checkpoint": True, "train.max_seq_length": 512, "train.save_every": 11,
        "train.steps_per_report": 3, "train.steps_per_eval": 9, "train.val_batches": -1,
        "train.lora.rank": 16, "train.lora.scale": 8.0, "train.lora.dropout": 0.1,
        "train.lora.keys": "self_attn.q_proj, self_attn.v_proj",
        "train.lr_schedule.name": "cosine_decay", "train.lr_schedule.arguments": "3e-4, 77",
        "train.lr_schedule.warmup": 5, "train.lr_schedule.warmup_init": 1e-6,
        "fuse.dequantize": False, "quantize": ["q6", "q4g32"], "eval.checkpoints": True,
        "eval.checkpoint_prompts": "p1", "eval.max_tokens": 64, "eval.variants": ["adapter"],
        "resources.min_memory_gb": 24.0, "resources.timeout_hours": 2.0,
    })  # fmt: skip
    result = form_bounds.validate_form(values, run_preflight=False)
    assert result.ok, result.problems
    spec = result.spec
    assert spec is not None
    train = spec.train
    assert (train.iters, train.fine_tune_type, train.optimizer) == (77, "dora", "adamw")
    assert train.optimizer_config == {"weight_decay": 0.05}
    assert train.mask_prompt and train.grad_checkpoint and train.val_batches == -1
    assert (train.grad_accumulation_steps, train.max_seq_length, train.save_every) == (2, 512, 11)
    assert (train.steps_per_report, train.steps_per_eval) == (3, 9)
    assert (train.lora.rank, train.lora.scale, train.lora.dropout) == (16, 8.0, 0.1)
    assert train.lora.keys == ["self_attn.q_proj", "self_attn.v_proj"]
    assert train.lr_schedule is not None
    assert train.lr_schedule.arguments == [3e-4, 77.0] and train.lr_schedule.warmup == 5
    assert spec.fuse is not None and spec.fuse.dequantize is False
    assert spec.quantize_variants == ["q6", "q4g32"]
    assert spec.eval.checkpoints and spec.eval.checkpoint_prompts == ["p1"]
    assert spec.eval.max_tokens == 64 and spec.eval.variants == ["adapter"]
    assert (spec.resources.min_memory_gb, spec.resources.timeout_hours) == (24.0, 2.0)
    # …and every one of them comes back into the form.
    back, _ = forms.spec_dict_to_form(yaml.safe_load(result.yaml))
    for key, value in values.items():
        if forms.FIELDS_BY_KEY[key].kind == "list":  # "3e-4, 77" comes back as "0.0003, 77.0"
            assert forms.form_to_spec_dict(back) == forms.form_to_spec_dict(values)
        else:
            assert back[key] == value, key


def test_problems_are_filed_under_their_fields(tmp_path: Path) -> None:
    values = workspace(tmp_path)
    values.update({"fuse.enabled": False, "quantize": ["q4"], "eval.variants": ["adapter",
                   "fused"], "train.lr_schedule.name": "linear_schedule",
                   "train.lr_schedule.arguments": "1e-4"})  # fmt: skip
    result = form_bounds.validate_form(values, run_preflight=False)
    assert "fuse is null" in " ".join(result.messages("quantize"))
    assert "needs a fused model" in " ".join(result.messages("eval.variants"))
    assert "takes 3 arguments" in " ".join(result.messages("train.lr_schedule.arguments"))
    assert result.messages(forms.GENERAL) == []
    assert result.spec is None and not result.ok


@pytest.mark.parametrize(
    ("field", "key"),
    [
        ("seeds[2]", "seeds"),
        ("quantize[0].bits", "quantize"),
        ("eval.variants[1]", "eval.variants"),
        ("fuse", "fuse.enabled"),
        ("fuse.from", "fuse.from"),
        ("train.lr_schedule", "train.lr_schedule.name"),
        ("train.optimizer_config.foo", "train.optimizer_config"),
        ("train.lora.keys[0]", "train.lora.keys"),
        ("mystery", ""),
    ],
)
def test_form_key_for_spec_fields(field: str, key: str) -> None:
    assert forms.form_key_for(Problem(forms.FORM_SOURCE, "m", 1, field), {}) == key


def test_find_datasets_and_suites(tmp_path: Path) -> None:
    make_dataset(tmp_path / "datasets", "mine")
    make_suite(tmp_path)
    (tmp_path / "other.yaml").write_text("name: not a suite\n")
    (tmp_path / "artifacts" / "run-1").mkdir(parents=True)  # never walked
    make_dataset(tmp_path / "artifacts" / "run-1", "hidden")
    assert pickers.find_datasets([tmp_path]) == [str(tmp_path / "datasets" / "mine")]
    assert pickers.find_suites([tmp_path]) == [str(tmp_path / "suite.yaml")]
    assert "data/datasets/code_mode" in pickers.find_datasets()
    assert "data/evals/code_mode.yaml" in pickers.find_suites()


def test_form_defaults_are_the_spec_models(tmp_path: Path) -> None:
    """The form states no default of its own for a spec knob: a fresh form's
    train, LoRA, fuse and resources settings are the spec models' defaults."""
    from jobs.experiment_spec import FuseSpec, Resources, TrainSpec

    values = forms.default_form("org/model")
    data, problems = forms.form_to_spec_dict(values)
    assert problems == []
    spec = parse_spec(spec_dict_to_yaml(data), check_files=False)
    assert spec.train == TrainSpec()
    assert spec.fuse == FuseSpec()
    assert spec.resources == Resources()
    for key in ("train.iters", "train.lora.rank", "fuse.from", "resources.timeout_hours"):
        assert forms.FIELDS_BY_KEY[key].default == forms.spec_default(key)
    assert forms.FIELDS_BY_KEY["eval.variants"].options == ("base", "adapter", "fused", "quantized")


def test_stage_count_includes_the_quantization_twin(tmp_path: Path) -> None:
    """The form counts stages like `farm submit --dry-run`: on the spec that runs,
    with the ≥ 5-bit twin the farm adds next to a 4-bit variant."""
    from jobs.checks import ensure_quant_twin
    from jobs.dag import plan_run

    values = workspace(tmp_path)
    values.update({"quantize": ["q4"], "eval.variants": ["adapter", "quantized"]})
    result = form_bounds.validate_form(values, run_preflight=False)
    assert result.ok, result.problems
    assert result.spec is not None
    twinned, twin = ensure_quant_twin(result.spec)
    assert twin is not None and twinned.quantize_variants == ["q4", "q5"]
    assert result.stages_per_run == len(plan_run(twinned)) > len(plan_run(result.spec))


def test_the_adherence_probe_fields_reach_the_spec_and_come_back(tmp_path: Path) -> None:
    values = workspace(tmp_path)
    assert forms.form_to_spec_dict(values)[0]["train"].get("adherence_probe") is None  # off
    values.update({
        "train.save_every": 10, "train.adherence_probe.enabled": True,
        "train.adherence_probe.prompts": "4", "train.adherence_probe.every": 20,
        "train.adherence_probe.max_tokens": 64, "train.adherence_probe.stop_when_locked": 0.9,
        "train.adherence_probe.stop_when_collapsed": True, "train.adherence_probe.patience": 3,
    })  # fmt: skip
    result = form_bounds.validate_form(values, run_preflight=False)
    assert result.ok, result.problems
    assert result.spec is not None
    probe = result.spec.train.adherence_probe
    assert probe is not None
    assert (probe.prompts, probe.every, probe.max_tokens) == (4, 20, 64)
    assert (probe.stop_when_locked, probe.stop_when_collapsed, probe.patience) == (0.9, True, 3)
    back, notes = forms.spec_dict_to_form(yaml.safe_load(result.yaml))
    assert notes == []
    assert {k: v for k, v in back.items() if k.startswith("train.adherence_probe.")} == {
        k: v for k, v in values.items() if k.startswith("train.adherence_probe.")
    }
    # prompt ids instead of a count
    values["train.adherence_probe.prompts"] = "p1, p2"
    data, _ = forms.form_to_spec_dict(values)
    assert data["train"]["adherence_probe"]["prompts"] == ["p1", "p2"]


def test_the_adherence_probe_fields_are_checked_like_yaml(tmp_path: Path) -> None:
    values = workspace(tmp_path)
    values.update({"train.save_every": 10, "train.adherence_probe.enabled": True,
                   "train.adherence_probe.stop_when_locked": 1.5,
                   "train.adherence_probe.every": 15})  # fmt: skip
    result = form_bounds.validate_form(values, run_preflight=False)
    assert not result.ok and result.spec is None
    locked = " ".join(result.messages("train.adherence_probe.stop_when_locked"))
    assert "1" in locked  # the same bound as the spec's (≤ 1)
    assert "save_every" in " ".join(result.messages("train.adherence_probe.every"))
