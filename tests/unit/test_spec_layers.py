"""The spec package's single sources: the YAML line locator, the mlx-lm argument
mapping, and the spec stored at submission (the one that runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jobs.experiment_spec import (
    AdherenceProbe,
    LoraParams,
    LrSchedule,
    TrainSpec,
    lora_config,
    lora_run_config,
    parse_spec,
    yaml_locator,
)
from jobs.experiment_spec.mlx_args import FARM_ONLY

TEXT = """\
# a comment
name: x
train:
  iters: 10
  lora: {rank: 4}
quantize:
  - bits: 4
  - {bits: 8}
name: y
"""


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        (("train",), 3),
        (("train", "iters"), 4),
        (("train", "lora", "rank"), 5),
        (("quantize", 0), 7),
        (("quantize", 1, "bits"), 8),
        (("train", "missing"), 3),  # the deepest part that is there
        (("quantize", 5), 6),
        (("name",), 9),  # of two equal keys, the one YAML keeps
        (("train", "lora", "[key]"), 5),  # pydantic's key marker is no path step
        (("missing",), None),
        ((), None),
    ],
)
def test_yaml_locator_points_at_keys_and_items(
    loc: tuple[str | int, ...], line: int | None
) -> None:
    assert yaml_locator(TEXT)(loc) == line


def test_yaml_locator_never_raises() -> None:
    assert yaml_locator("a: [1\n")(("a",)) is None
    assert yaml_locator("")(("a",)) is None
    assert yaml_locator("- 1\n- 2\n")(("a",)) is None


def _set_every_field(train: TrainSpec) -> TrainSpec:
    """A TrainSpec with every field away from its default."""
    return train.model_copy(
        update={
            "iters": 7, "batch_size": 3, "learning_rate": 2e-4, "num_layers": -1,
            "fine_tune_type": "dora", "optimizer": "adamw",
            "optimizer_config": {"weight_decay": 0.1}, "mask_prompt": True,
            "grad_accumulation_steps": 2, "grad_checkpoint": True, "max_seq_length": 256,
            "save_every": 5, "steps_per_report": 2, "steps_per_eval": 3, "val_batches": -1,
            "lora": LoraParams(rank=4, scale=10.0, dropout=0.05, keys=["self_attn.q_proj"]),
            "lr_schedule": LrSchedule(name="cosine_decay", arguments=[2e-4, 7], warmup=1),
            "adherence_probe": AdherenceProbe(prompts=4, stop_when_locked=0.9),
            "report_to": ["wandb", "swanlab"], "workers": 3,
        }
    )  # fmt: skip


def test_mlx_args_maps_every_train_field() -> None:
    train = _set_every_field(TrainSpec())
    assert all(name in train.model_fields_set for name in TrainSpec.model_fields)
    config = lora_config(train)
    renamed = {"lora": "lora_parameters"}
    for name in TrainSpec.model_fields:
        if name in FARM_ONLY:  # the farm's own knobs never reach mlx-lm
            assert name not in config, name
            continue
        assert renamed.get(name, name) in config, name
    assert config["optimizer_config"] == {"adamw": {"weight_decay": 0.1}}
    assert config["lora_parameters"] == {
        "rank": 4, "scale": 10.0, "dropout": 0.05, "keys": ["self_attn.q_proj"]
    }  # fmt: skip
    assert config["lr_schedule"] == {
        "name": "cosine_decay", "arguments": [2e-4, 7.0], "warmup": 1, "warmup_init": 0.0
    }  # fmt: skip
    assert config["report_to"] == "wandb,swanlab"
    skip = {"lora", "optimizer_config", "report_to", *FARM_ONLY}
    plain = {k: v for k, v in train.model_dump().items() if k not in skip}
    plain["lr_schedule"] = config["lr_schedule"]
    assert {k: config[k] for k in plain} == plain
    # What mlx-lm reads from a `lora --config` file: plain YAML values only.
    assert yaml.safe_load(yaml.safe_dump(config)) == config


def test_mlx_args_leave_unset_lora_keys_to_mlx_lm() -> None:
    config = lora_run_config(TrainSpec(), "org/model", Path("/d"), Path("/a"), seed=3)
    assert config["lora_parameters"] == {"rank": 8, "scale": 20.0, "dropout": 0.0}
    assert config["lr_schedule"] is None
    assert (config["model"], config["data"], config["adapter_path"]) == ("org/model", "/d", "/a")
    assert config["seed"] == 3 and config["train"] is True


LOW_BITS_SPEC = """\
name: low
base_model: org/model
dataset: {dataset}
seeds: [1]
train: {{iters: 10}}
fuse: {{dequantize: true}}
quantize: [{{bits: 4}}]
eval: {{suite: {suite}, variants: [adapter, quantized]}}
"""


def test_the_stored_spec_yaml_is_the_spec_that_runs() -> None:
    """The ≥ 5-bit twin is planned before anything is stored, so the YAML kept
    with the experiment has it, and reads back as the spec that runs."""
    from jobs.submit import plan_submission

    root = Path(__file__).resolve().parents[2] / "data"
    text = LOW_BITS_SPEC.format(
        dataset=root / "datasets" / "code_mode", suite=root / "evals" / "code_mode.yaml"
    )
    spec = parse_spec(text, check_files=False)
    planned, stored, twin = plan_submission(spec, text)
    assert twin is not None and planned.quantize_variants == ["q4", "q5"]
    assert stored is not None and stored != text
    assert parse_spec(stored, check_files=False) == planned

    # Nothing added: the text as written is kept (comments and all).
    safe = spec.model_copy(update={"quantize": planned.quantize[1:]})
    assert plan_submission(safe, text) == (safe, text, None)
