"""`train`: LoRA/DoRA/full fine-tuning with mlx-lm, progress into the DB as it happens.

Reads like `mlx_lm lora --train --seed S --adapter-path DIR -c config.yaml`:
mlx-lm's own training loop (`mlx_lm.tuner.trainer.train`) runs with the farm's
optimizer, batch iterator and callback around it, so that

- every loss report becomes a Metric row as it happens;
- every `save_every` iterations a full checkpoint (weights, optimizer state,
  iteration; `worker.checkpoint`) is written atomically;
- a retried stage resumes from its newest complete checkpoint N: it trains
  only N+1..iters, numbered as an uninterrupted run, on the same batches;
- with `train.adherence_probe`, each checkpoint is probed with the model in
  memory (`worker.probe`) and training may end early at one, the format locked
  or collapsed: the adapter is that checkpoint's and the run goes on from it;
- with `train.workers: N`, this runs on N workers at once, one rank each
  (`worker.gang`), and mlx-lm averages their gradients over MLX's ring. Rank 0
  (the train stage) writes metrics, checkpoints and the adapter; every other
  rank only its progress and its share of the tokens/s. A resumed gang takes
  rank 0's checkpoint: the others receive its weights and optimizer state.
"""

from __future__ import annotations

import time
import types
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.cli_ui import make_console, print_lora_run_header
from mlx_lm.lora import CONFIG_DEFAULTS
from mlx_lm.tuner import trainer
from mlx_lm.tuner.callbacks import SUPPORT_CALLBACK, TrainingCallback
from mlx_lm.tuner.datasets import CacheDataset, load_dataset
from mlx_lm.tuner.trainer import TrainingArgs, evaluate, iterate_batches
from mlx_lm.tuner.utils import build_schedule, linear_to_lora_layers, print_trainable_parameters
from mlx_lm.utils import load, save_config
from sqlmodel import and_, col, delete, or_, select

from jobs import lifecycle
from jobs.dag import checkpoint_variant
from jobs.db import Artifact, Metric, Stage, session_scope
from jobs.experiment_spec import TrainSpec, lora_run_config
from jobs.probe import StopDecision, decide
from worker.checkpoint import (
    adapters_file,
    load_checkpoint,
    newest_complete_checkpoint,
    random_states,
    random_words,
    remove_stray_temporaries,
    restore_random_states,
    save_checkpoint,
    saved_checkpoints,
    states_from_words,
)
from worker.context import (
    StageContext,
    record_artifact,
    record_metric,
    stage_write,
    update_stage,
)
from worker.preflight import check_before_training
from worker.probe import Probe, make_probe

OPTIMIZERS: dict[str, type[optim.Optimizer]] = {
    "adam": optim.Adam,
    "adamw": optim.AdamW,
    "muon": optim.Muon,
    "sgd": optim.SGD,
    "adafactor": optim.Adafactor,
}


def training_args(
    train: TrainSpec, model: str, data: str | Path, adapter_dir: Path, seed: int
) -> types.SimpleNamespace:
    """mlx-lm's argument namespace: its defaults, overridden by the spec's knobs
    (mapped by `jobs.experiment_spec.mlx_args`, as for `farm bench`'s bare mlx-lm run)."""
    args = {**CONFIG_DEFAULTS, **lora_run_config(train, model, data, adapter_dir, seed)}
    args.update(test=False, report_to=None)
    return types.SimpleNamespace(**args)


def tracker_callbacks(
    trackers: list[str], ctx: StageContext, args: types.SimpleNamespace, progress: TrainingCallback
) -> TrainingCallback:
    """`train.report_to`: mlx-lm's own tracker callbacks (as `--report-to` builds
    them), each passing every report on to the next and the last to the DB."""
    callback = progress
    for name in trackers:
        callback = SUPPORT_CALLBACK[name](
            project_name=ctx.spec.name,
            log_dir=str(ctx.adapter_dir),
            config={**vars(args), "lorafarm_run": ctx.run_id, "seed": ctx.seed},
            wrapped_callback=callback,
        )
    return callback


def prepare_model(args: types.SimpleNamespace, model: nn.Module) -> optim.Optimizer:
    """The setup of `mlx_lm.lora.train_model`, step for step: trainable layers,
    adapter_config.json, and the optimizer with its schedule."""
    mx.random.seed(args.seed)
    model.freeze()
    if args.num_layers > len(model.layers):
        raise ValueError(
            f"Requested to train {args.num_layers} layers "
            f"but the model only has {len(model.layers)} layers."
        )
    if args.fine_tune_type == "full":
        for layer in model.layers[-max(args.num_layers, 0) :]:
            layer.unfreeze()
        args.lora_parameters = None
    elif args.fine_tune_type in ("lora", "dora"):
        use_dora = args.fine_tune_type == "dora"
        linear_to_lora_layers(model, args.num_layers, args.lora_parameters, use_dora=use_dora)
    else:
        raise ValueError(f"Received unknown fine-tune-type {args.fine_tune_type}")
    if mx.distributed.init().rank() == 0:
        print_lora_run_header(make_console(), args)
    print_trainable_parameters(model)

    adapter_path = Path(args.adapter_path)
    adapter_path.mkdir(parents=True, exist_ok=True)
    save_config(vars(args), adapter_path / "adapter_config.json")

    lr = build_schedule(args.lr_schedule) if args.lr_schedule else args.learning_rate
    name = args.optimizer.lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"Unsupported optimizer: {name}")
    return OPTIMIZERS[name](learning_rate=lr, **args.optimizer_config.get(name, {}))


class RankProgress(TrainingCallback):
    """What a rank other than 0 writes: its progress and its share of the gang's
    tokens/s (mlx-lm reports the tokens of all ranks together)."""

    def __init__(self, ctx: StageContext, total: int, start: int, world: int) -> None:
        self.ctx, self.total, self.start, self.world = ctx, total, start, world
        self.trained_tokens = 0  # counted by rank 0

    def on_train_loss_report(self, info: dict[str, Any]) -> None:
        iteration = self.start + int(info["iteration"])
        share = float(info["tokens_per_second"]) / self.world
        update_stage(self.ctx, progress=iteration, total=self.total, tokens_per_sec=share)


def from_rank0(model: nn.Module, optimizer: optim.Optimizer, group: mx.distributed.Group) -> None:
    """Give every rank rank 0's weights, optimizer state and random states (it
    alone resumed from its checkpoint): a sum in which the other ranks add zeros."""
    rank = group.rank()
    if rank != 0:
        optimizer.init(model.trainable_parameters())
    for name, tree in (("weights", model.trainable_parameters()), ("optimizer", optimizer.state)):
        flat = dict(tree_flatten(tree))
        # The same entries on every rank, or the sums below would pair wrong ones.
        keys = zlib.crc32("\n".join(sorted(flat)).encode()) & 0x7FFFFF
        total = mx.distributed.all_sum(mx.array(keys, dtype=mx.int32), group=group, stream=mx.cpu)
        if int(total.item()) != keys * group.size():
            raise RuntimeError(f"the ranks' {name} have different entries; cannot resume together")
        shared = {
            key: mx.distributed.all_sum(
                value if rank == 0 else mx.zeros_like(value), group=group, stream=mx.cpu
            )
            for key, value in sorted(flat.items())
        }
        if name == "weights":
            model.load_weights(list(shared.items()), strict=False)
        else:
            optimizer.state = tree_unflatten(list(shared.items()))
    mx.eval(model.trainable_parameters(), optimizer.state)
    # And its random states: dropout, and the order of the validation batches.
    words = random_words(random_states())
    sent = mx.array(words if rank == 0 else np.zeros_like(words))
    words = np.array(mx.distributed.all_sum(sent, group=group, stream=mx.cpu))
    if rank != 0:
        restore_random_states(states_from_words(words))


class ProgressToDatabase(TrainingCallback):
    """Writes each of mlx-lm's train reports and each validation as a Metric row.

    mlx-lm counts this attempt's iterations from 1: `start` (the checkpoint it
    resumed from) turns them back into the run's iteration numbers."""

    def __init__(self, ctx: StageContext, total: int, start: int = 0, tokens: int = 0) -> None:
        self.ctx = ctx
        self.total = total
        self.start = start
        self.base_tokens = tokens  # trained before `start`, by earlier attempts
        self.trained_tokens = tokens
        self.tokens_per_sec: list[float] = []
        self.peak_memory_gb = 0.0

    def on_train_loss_report(self, info: dict[str, Any]) -> None:
        iteration = self.start + int(info["iteration"])
        self.trained_tokens = self.base_tokens + int(info["trained_tokens"])
        self.tokens_per_sec.append(float(info["tokens_per_second"]))
        self.peak_memory_gb = max(self.peak_memory_gb, float(info["peak_memory"]))
        record_metric(
            self.ctx,
            iteration,
            stage={"progress": iteration, "total": self.total,
                   "tokens_per_sec": float(np.mean(self.tokens_per_sec)),
                   "peak_memory_gb": self.peak_memory_gb},
            train_loss=float(info["train_loss"]),
            learning_rate=float(info["learning_rate"]),
            tokens_per_sec=float(info["tokens_per_second"]),
            iterations_per_sec=float(info["iterations_per_second"]),
            peak_memory_gb=float(info["peak_memory"]),
            trained_tokens=self.trained_tokens,
        )  # fmt: skip

    def on_val_loss_report(self, info: dict[str, Any]) -> None:
        # Validation runs in `Between` with the run's own numbering already.
        val_loss = float(info["val_loss"])
        record_metric(self.ctx, int(info["iteration"]), stage={"val_loss": val_loss},
                      val_loss=val_loss)  # fmt: skip


def record_checkpoints(ctx: StageContext, iters: int) -> None:
    """Each saved checkpoint as an Artifact, once per run: a resumed attempt
    finds the ones its killed predecessor already recorded."""
    with session_scope() as session:
        known = set(
            session.exec(
                select(Artifact.iteration).where(
                    Artifact.run_id == ctx.run_id, Artifact.kind == "checkpoint"
                )
            )
        )
    for iteration in saved_checkpoints(ctx.adapter_dir, iters):
        if iteration not in known:
            path = adapters_file(ctx.adapter_dir, iteration)
            record_artifact(ctx, "checkpoint", path, checkpoint_variant(iteration), iteration)


def forget_after(ctx: StageContext, start: int) -> None:
    """Delete the Metric rows an earlier attempt wrote after iteration `start`:
    this attempt trains them again. The validation reported at `start` ran
    after that iteration (before the next), so it goes too."""
    redone = or_(
        col(Metric.iteration) > start,
        and_(col(Metric.iteration) == start, col(Metric.val_loss).is_not(None)),
    )
    with stage_write(ctx) as session:
        session.exec(delete(Metric).where(col(Metric.stage_id) == ctx.stage_id, redone))  # type: ignore[call-overload]


class Between:
    """What the farm does between two of mlx-lm's iterations, numbered as the run:
    after iteration k the checkpoint of k (every `save_every`), before iteration
    k the validation mlx-lm would run (k == 1, every `steps_per_eval`, the last).

    Validation is here rather than inside mlx-lm because mlx-lm schedules it
    by its own count, which restarts at 1 on a resumed attempt."""

    def __init__(
        self,
        ctx: StageContext,
        args: types.SimpleNamespace,
        model: nn.Module,
        optimizer: optim.Optimizer,
        valid_set: CacheDataset,
        progress: ProgressToDatabase | RankProgress,
        probe: Probe | None = None,
        reporter: TrainingCallback | None = None,
        saves: bool = True,
    ) -> None:
        self.ctx, self.args, self.model, self.optimizer = ctx, args, model, optimizer
        self.valid_set, self.progress, self.probe = valid_set, progress, probe
        self.reporter = reporter or progress  # the trackers' callbacks, then the DB
        self.saves = saves  # rank 0 of a gang (or the only rank) keeps checkpoints
        self.stopped: StopDecision | None = None  # the probe ended training here

    def after(self, iteration: int) -> None:
        if iteration % self.args.save_every != 0:
            return
        tic = time.perf_counter()
        with stage_write(self.ctx):
            pass  # a superseded attempt stops here, before touching its successor's files
        if not self.saves:
            return
        # Amid gradient accumulation the pending gradient is not saved: such a
        # checkpoint can be evaluated but not resumed from.
        whole = iteration % self.args.grad_accumulation_steps == 0
        save_checkpoint(
            self.ctx.adapter_dir,
            iteration,
            self.args.iters,
            self.model,
            self.optimizer if whole else None,
            trained_tokens=self.progress.trained_tokens,
        )
        record_checkpoints(self.ctx, self.args.iters)
        print(f"checkpoint {iteration} saved in {time.perf_counter() - tic:.2f} s", flush=True)
        self.probe_checkpoint(iteration)

    def probe_checkpoint(self, iteration: int) -> None:
        if self.probe is not None and self.probe.rule.due(iteration, self.args.save_every):
            last = iteration >= self.args.iters
            self.stopped = self.probe.after_checkpoint(self.model, iteration, last)

    def resume(self, start: int) -> None:
        """A resumed attempt's probe of the checkpoint it starts from: stored by its
        predecessor (which may have decided to stop there), or probed now."""
        probe = self.probe
        if probe is None or not start or start % self.args.save_every != 0:
            return
        if probe.history and probe.history[-1].iteration == start:
            # The stop, if any, was recorded with that probe; only re-decide.
            if start < self.args.iters:
                self.stopped = decide(probe.history, probe.rule)
        else:
            self.probe_checkpoint(start)

    def before(self, iteration: int) -> None:
        args = self.args
        due = iteration == 1 or iteration % args.steps_per_eval == 0 or iteration == args.iters
        if not due or len(self.valid_set) == 0:
            return
        tic = time.perf_counter()
        val_loss = evaluate(
            model=self.model,
            dataset=self.valid_set,
            batch_size=args.batch_size,
            num_batches=args.val_batches,
            max_seq_length=args.max_seq_length,
        )
        self.model.train()
        val_time = time.perf_counter() - tic
        print(f"Iter {iteration}: Val loss {val_loss:.3f}, Val took {val_time:.3f}s", flush=True)
        # mlx-lm numbers a validation by the iterations done before it.
        report = {"iteration": iteration - 1, "val_loss": val_loss, "val_time": val_time}
        self.reporter.on_val_loss_report(report)


class ResumableBatches:
    """mlx-lm's `iterate_batches`, started at batch `start + 1` and calling
    `Between` at each iteration boundary.

    mlx-lm asks for batch k+1 only once iteration k is over (step evaluated,
    reports sent): the safe point for the checkpoint of k. The training order
    draws from its own numpy state seeded with the run's seed, so it depends on
    nothing but the batch count (validation also draws from numpy's global
    state): skipping `start` batches gives the uninterrupted run's order."""

    def __init__(self, start: int, seed: int, between: Between) -> None:
        self.start = start
        self.order_state = np.random.RandomState(seed).get_state()
        self.between = between

    def __call__(
        self,
        dataset: Any,
        batch_size: int,
        max_seq_length: int,
        loop: bool = False,
        seed: int | None = None,
        comm_group: Any = None,
    ) -> Iterator[tuple[Any, Any]]:
        if not loop:  # a validation pass: mlx-lm's own
            return iterate_batches(dataset, batch_size, max_seq_length, loop, seed, comm_group)
        batches = iterate_batches(dataset, batch_size, max_seq_length, True, None, comm_group)
        return self.training(batches)

    def next_batch(self, batches: Iterator[tuple[Any, Any]]) -> tuple[Any, Any]:
        outer = np.random.get_state()
        np.random.set_state(self.order_state)
        try:
            return next(batches)
        finally:
            self.order_state = np.random.get_state()
            np.random.set_state(outer)

    def training(self, batches: Iterator[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
        if self.start:
            tic = time.perf_counter()
            for _ in range(self.start):
                self.next_batch(batches)
            elapsed = time.perf_counter() - tic
            print(f"skipped the {self.start} batches trained before in {elapsed:.2f} s", flush=True)
        iteration = self.start
        while True:
            batch = self.next_batch(batches)
            self.between.before(iteration + 1)
            yield batch
            iteration += 1
            self.between.after(iteration)
            if self.between.stopped is not None:
                return  # mlx-lm's loop ends and saves the weights of this checkpoint


def run_train(ctx: StageContext) -> None:
    group = mx.distributed.init()  # one rank alone, or the gang MLX_HOSTFILE describes
    lead = group.rank() == 0  # rank 0 writes the run's results
    # A Hugging Face model not on the submitting machine is checked here,
    # before any training time is spent (tokenizer, chat template, eos).
    if lead:
        check_before_training(ctx)
    spec = ctx.spec
    args = training_args(spec.train, spec.base_model, spec.dataset, ctx.adapter_dir, ctx.seed)
    np.random.seed(args.seed)  # mlx-lm's run() seeds numpy (validation batches) the same way
    start = newest_complete_checkpoint(ctx.adapter_dir, args.iters) or 0 if lead else 0
    if group.size() > 1:  # the gang resumes where rank 0's checkpoints are
        start = int(mx.distributed.all_sum(mx.array(start), group=group, stream=mx.cpu).item())
    if lead:
        forget_after(ctx, start)
    update_stage(ctx, progress=start, total=args.iters)
    if start and lead:
        with stage_write(ctx) as session:  # "resumed from iteration N (attempt k)"
            lifecycle.record_resume(session, ctx.stage_id, ctx.attempt, start)

    print(
        f"loading {args.model}" + (f" (rank {group.rank()} of {group.size()})" * (group.size() > 1))
    )
    model, tokenizer = load(args.model)
    train_set, valid_set, _ = load_dataset(args, tokenizer)
    optimizer = prepare_model(args, model)

    remove_stray_temporaries(ctx.adapter_dir)
    tokens = 0
    if start:
        tic = time.perf_counter()
        if lead:
            marker = load_checkpoint(ctx.adapter_dir, start, model, optimizer)
            tokens = int(marker.get("trained_tokens") or 0)
        if group.size() > 1:
            from_rank0(model, optimizer, group)
        loaded = time.perf_counter() - tic
        print(f"resumed from iteration {start} (loaded in {loaded:.2f} s)")
        # mlx-lm's console below counts this attempt's iterations from 1.
        print(f"mlx-lm's iterations 1..{args.iters - start} are {start + 1}..{args.iters}")
    if lead:
        progress: ProgressToDatabase | RankProgress = ProgressToDatabase(ctx, args.iters, start,
                                                                         tokens)  # fmt: skip
        reporter = tracker_callbacks(ctx.spec.train.report_to, ctx, args, progress)
        probe = make_probe(ctx, tokenizer, start)
        record_checkpoints(ctx, args.iters)  # any a killed attempt saved but did not record
    else:
        progress = reporter = RankProgress(ctx, args.iters, start, group.size())
        probe = None  # refused at submit for a gang (`train.workers`)
    between = Between(ctx, args, model, optimizer, CacheDataset(valid_set), progress, probe,
                      reporter, saves=lead)  # fmt: skip
    between.resume(start)

    tic = time.perf_counter()
    if between.stopped is None:
        fit(ctx, args, model, optimizer, train_set, start, between)
    else:  # the attempt before stopped at `start` and died before finishing
        weights = dict(tree_flatten(model.trainable_parameters()))
        mx.save_safetensors(str(ctx.adapter_dir / "adapters.safetensors"), weights)
    elapsed = time.perf_counter() - tic
    end = between.stopped.iteration if between.stopped else args.iters
    if not lead:
        update_stage(ctx, progress=end)
        print(f"rank {group.rank()} of {group.size()} done; rank 0 saved the adapter")
        return

    adapter_file = ctx.adapter_dir / "adapters.safetensors"
    artifact: Artifact = record_artifact(ctx, "adapter", ctx.adapter_dir, "adapter")
    update_stage(
        ctx,
        progress=end,
        size_bytes=adapter_file.stat().st_size,
        peak_memory_gb=progress.peak_memory_gb or None,
    )
    if probe is not None:
        record_probe_cost(ctx, probe, elapsed)
    print(f"adapter saved to {artifact.path} ({artifact.bytes} bytes)")


def record_probe_cost(ctx: StageContext, probe: Probe, elapsed: float) -> None:
    """What the probes cost this attempt, next to the rest of its training time:
    in the log, and in the stage's params (`probe_s`, `probe_share`)."""
    rest = max(elapsed - probe.seconds, 1e-9)
    share = probe.seconds / rest
    print(
        f"probes: {len(probe.history)} in {probe.seconds:.2f} s, {share:.1%} of the "
        f"{rest:.1f} s of training around them",
        flush=True,
    )
    with stage_write(ctx) as session:
        stage = session.get(Stage, ctx.stage_id)
        assert stage is not None
        stage.params = {**stage.params, "probe_s": round(probe.seconds, 3),
                        "probe_share": round(share, 4)}  # fmt: skip
        session.add(stage)


def fit(
    ctx: StageContext,
    args: types.SimpleNamespace,
    model: nn.Module,
    optimizer: optim.Optimizer,
    train_set: Any,
    start: int,
    between: Between,
) -> None:
    """mlx-lm's training loop over iterations start+1..iters, or until the probe stops it."""
    trainer.train(
        model=model,
        optimizer=optimizer,
        train_dataset=CacheDataset(train_set),
        val_dataset=None,  # validated by `Between`, numbered as the run
        args=TrainingArgs(
            batch_size=args.batch_size,
            iters=args.iters - start,
            steps_per_report=args.steps_per_report,
            # mlx-lm saves only the final adapters.safetensors; `Between` saves
            # the full checkpoints.
            steps_per_save=args.iters + 1,
            adapter_file=str(ctx.adapter_dir / "adapters.safetensors"),
            max_seq_length=args.max_seq_length,
            grad_checkpoint=args.grad_checkpoint,
            grad_accumulation_steps=args.grad_accumulation_steps,
        ),
        iterate_batches=ResumableBatches(start, args.seed, between),
        training_callback=between.reporter,  # the trackers, then the DB
    )
    if start < args.iters and between.stopped is None:
        between.after(args.iters)  # mlx-lm never asks for a batch after the last
