"""`train`: LoRA/DoRA/full fine-tuning with mlx-lm, progress into the DB as it happens.

Reads like `mlx_lm lora --train --seed S --adapter-path DIR -c config.yaml`, with
mlx-lm's own training callback writing every loss report to the database.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
from mlx_lm.lora import CONFIG_DEFAULTS, train_model
from mlx_lm.tuner.callbacks import TrainingCallback
from mlx_lm.tuner.datasets import load_dataset
from mlx_lm.utils import load

from jobs.db import Artifact, Metric, Stage, session_scope
from worker.context import StageContext, record_artifact, update_stage
from worker.preflight import check_before_training


def training_args(train: dict[str, Any], model: str, data: str, adapter_dir: Path, seed: int):
    """mlx-lm's argument namespace: its defaults, overridden by the spec's knobs."""
    args = dict(CONFIG_DEFAULTS)
    knobs = {k: v for k, v in train.items() if k not in ("lora", "optimizer_config")}
    args.update(knobs)
    lora = dict(train.get("lora") or {})
    args["lora_parameters"] = {k: v for k, v in lora.items() if v is not None}
    args["optimizer_config"] = {args["optimizer"]: dict(train.get("optimizer_config") or {})}
    args.update(model=model, data=data, adapter_path=str(adapter_dir), seed=seed, train=True)
    args.update(test=False, report_to=None)
    return types.SimpleNamespace(**args)


class ProgressToDatabase(TrainingCallback):
    """Writes each of mlx-lm's train and val reports as a Metric row, and
    records every checkpoint file as it appears."""

    def __init__(self, ctx: StageContext, total: int) -> None:
        self.ctx = ctx
        self.total = total
        self.recorded: set[Path] = set()
        self.tokens_per_sec: list[float] = []
        self.peak_memory_gb = 0.0

    def on_train_loss_report(self, info: dict[str, Any]) -> None:
        self.tokens_per_sec.append(float(info["tokens_per_second"]))
        self.peak_memory_gb = max(self.peak_memory_gb, float(info["peak_memory"]))
        with session_scope() as session:
            session.add(
                Metric(
                    stage_id=self.ctx.stage_id,
                    run_id=self.ctx.run_id,
                    iteration=int(info["iteration"]),
                    train_loss=float(info["train_loss"]),
                    learning_rate=float(info["learning_rate"]),
                    tokens_per_sec=float(info["tokens_per_second"]),
                    iterations_per_sec=float(info["iterations_per_second"]),
                    peak_memory_gb=float(info["peak_memory"]),
                    trained_tokens=int(info["trained_tokens"]),
                )
            )
            stage = session.get(Stage, self.ctx.stage_id)
            assert stage is not None
            stage.progress, stage.total = int(info["iteration"]), self.total
            stage.tokens_per_sec = float(np.mean(self.tokens_per_sec))
            stage.peak_memory_gb = self.peak_memory_gb
            session.add(stage)
        self.record_checkpoints()

    def on_val_loss_report(self, info: dict[str, Any]) -> None:
        with session_scope() as session:
            session.add(
                Metric(
                    stage_id=self.ctx.stage_id,
                    run_id=self.ctx.run_id,
                    iteration=int(info["iteration"]),
                    val_loss=float(info["val_loss"]),
                )
            )
            stage = session.get(Stage, self.ctx.stage_id)
            assert stage is not None
            stage.val_loss = float(info["val_loss"])
            session.add(stage)

    def record_checkpoints(self) -> None:
        # mlx-lm writes `{it:07d}_adapters.safetensors` every save_every steps.
        for path in sorted(self.ctx.adapter_dir.glob("*_adapters.safetensors")):
            if path not in self.recorded:
                iteration = int(path.name.split("_", 1)[0])
                record_artifact(self.ctx, "checkpoint", path, f"ckpt-{iteration:07d}", iteration)
                self.recorded.add(path)


def run_train(ctx: StageContext) -> None:
    # A Hugging Face model not on the submitting machine is checked here,
    # before any training time is spent (tokenizer, chat template, eos).
    check_before_training(ctx)
    spec = ctx.spec
    train = spec["train"]
    args = training_args(train, spec["base_model"], spec["dataset"], ctx.adapter_dir, ctx.seed)
    np.random.seed(args.seed)  # mlx-lm's run() seeds numpy (batch order) the same way
    update_stage(ctx.stage_id, progress=0, total=args.iters)

    print(f"loading {args.model}")
    model, tokenizer = load(args.model)
    train_set, valid_set, _ = load_dataset(args, tokenizer)

    progress = ProgressToDatabase(ctx, args.iters)
    train_model(args, model, train_set, valid_set, training_callback=progress)
    progress.record_checkpoints()

    adapter_file = ctx.adapter_dir / "adapters.safetensors"
    artifact: Artifact = record_artifact(ctx, "adapter", ctx.adapter_dir, "adapter")
    update_stage(
        ctx.stage_id,
        progress=args.iters,
        size_bytes=adapter_file.stat().st_size,
        peak_memory_gb=progress.peak_memory_gb or None,
    )
    print(f"adapter saved to {artifact.path} ({artifact.bytes} bytes)")
