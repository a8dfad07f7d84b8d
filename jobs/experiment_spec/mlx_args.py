"""The one mapping from a `TrainSpec` to mlx-lm's `lora` arguments.

The train stage (`worker.stages.train.training_args`) and `farm bench`'s bare
`mlx_lm lora -c config.yaml` both build their arguments here, so the farm's
run and the baseline it is measured against cannot drift apart, and a new
train field needs one line here rather than one per caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.experiment_spec.model import TrainSpec

# TrainSpec fields whose mlx-lm argument has another name or shape.
_RESHAPED = frozenset({"lora", "optimizer_config", "lr_schedule", "report_to"})
# TrainSpec fields the farm acts on itself, which mlx-lm has no argument for
# (the probe runs in the train stage's own checkpoint hook; the workers are
# the ranks the farm starts).
FARM_ONLY = frozenset({"adherence_probe", "workers"})


def lora_config(train: TrainSpec) -> dict[str, Any]:
    """The spec's train knobs under mlx-lm's CONFIG_DEFAULTS names (a `lora --config` YAML)."""
    config = train.model_dump(mode="json", exclude=set(_RESHAPED | FARM_ONLY))
    # mlx-lm keys optimizer options by optimizer name and builds the optimizer
    # with `optimizer_config[optimizer]`.
    config["optimizer_config"] = {train.optimizer: dict(train.optimizer_config)}
    # Unset LoRA knobs (keys: None) are left to mlx-lm's per-model default.
    config["lora_parameters"] = train.lora.model_dump(mode="json", exclude_none=True)
    config["report_to"] = ",".join(train.report_to) or None  # mlx-lm's `--report-to a,b`
    config["lr_schedule"] = (
        train.lr_schedule.model_dump(mode="json") if train.lr_schedule is not None else None
    )
    return config


def lora_run_config(
    train: TrainSpec, model: str, data: str | Path, adapter_path: str | Path, seed: int
) -> dict[str, Any]:
    """Everything `mlx_lm lora --train` needs for one run: the knobs plus what to
    train (model, data), where the adapter goes and the run's seed."""
    return {
        **lora_config(train),
        "model": str(model),
        "data": str(data),
        "adapter_path": str(adapter_path),
        "seed": seed,
        "train": True,
    }
