"""Checks that span several fields of a spec (seeds against the run limit,
quantize against fuse, eval variants against what the spec produces, the
learning-rate schedule's arguments, the optimizer's options).

They run on a plain mapping, the raw YAML one in `parse_spec` (so they are
reported next to type errors in other fields, with line numbers) or a dumped
spec in `ExperimentSpec`'s validator, and so must not trust any value's type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs import limits
from jobs.experiment_spec.options import (
    ALL_GROUP_SIZES,
    DEFAULT_ITERS,
    DEFAULT_OPTIMIZER,
    DEFAULT_SAVE_EVERY,
    OPTIMIZER_KWARGS,
    QUANT_BITS,
    QUANT_MODES,
    QUANT_RECIPES,
    SCHEDULES,
    quant_entry_problems,
    quant_variant,
)
from jobs.experiment_spec.words import Loc, is_int, is_number, suggest

_TRAIN_DEFAULTS = {"iters": DEFAULT_ITERS, "save_every": DEFAULT_SAVE_EVERY,
                   "optimizer": DEFAULT_OPTIMIZER}  # fmt: skip


def _train_default(key: str) -> Any:
    """What a key the YAML leaves out stands for: TrainSpec's default (the same constant)."""
    return _TRAIN_DEFAULTS[key]


def cross_field_problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Checks that span several fields, run on the raw YAML mapping (so they are
    reported even when other fields are invalid) or on a dumped spec."""
    out: list[tuple[Loc, str]] = []

    seeds = data.get("seeds")
    if isinstance(seeds, list):
        out.extend(_runs_problems(seeds))
        first: dict[int, int] = {}
        for i, seed in enumerate(seeds):
            if not is_int(seed):
                continue
            if seed in first:
                out.append(
                    (
                        ("seeds", i),
                        f"seed {seed} is listed twice (also seeds[{first[seed]}]) — each seed "
                        "is one run; remove the duplicate",
                    )
                )
            else:
                first[seed] = i

    has_fuse = data.get("fuse", {}) is not None
    quantize = data.get("quantize")
    quant_items = quantize if isinstance(quantize, list) else []
    seen_variants: dict[str, int] = {}
    for i, item in enumerate(quant_items):
        if not isinstance(item, Mapping):
            continue
        combination = quant_entry_problems(item)
        out.extend((("quantize", i, key), message) for key, message in combination)
        if combination or not _quant_entry_typed(item):
            continue
        name = quant_variant(
            item.get("mode", "affine"), item.get("bits"), item.get("group_size"), item.get("recipe")
        )
        if name in seen_variants:
            out.append(
                (
                    ("quantize", i),
                    f"duplicate quantize variant {name} (same as "
                    f"quantize[{seen_variants[name]}]) — remove one",
                )
            )
        else:
            seen_variants[name] = i
    if quant_items and not has_fuse:
        out.append(
            (
                ("quantize",),
                "quantize runs on the fused model, but fuse is null — add "
                "`fuse: {dequantize: true}` or remove quantize",
            )
        )

    checkpoints = False
    ev = data.get("eval")
    if isinstance(ev, Mapping):
        checkpoints = ev.get("checkpoints") is True
        variants = ev.get("variants")
        if isinstance(variants, list):
            seen: dict[str, int] = {}
            for i, variant in enumerate(variants):
                if not isinstance(variant, str):
                    continue
                if variant in seen:
                    out.append(
                        (
                            ("eval", "variants", i),
                            f"variant '{variant}' is listed twice (also "
                            f"eval.variants[{seen[variant]}]) — remove the duplicate",
                        )
                    )
                    continue
                seen[variant] = i
                if variant in ("fused", "quantized") and not has_fuse:
                    out.append(
                        (
                            ("eval", "variants", i),
                            f"the '{variant}' variant needs a fused model, but fuse is null — "
                            f"add `fuse: {{dequantize: true}}` or remove '{variant}'",
                        )
                    )
                elif variant == "quantized" and not quant_items:
                    out.append(
                        (
                            ("eval", "variants", i),
                            "the 'quantized' variant needs at least one quantize entry — add "
                            "e.g. `quantize: [{bits: 4}]` or remove 'quantized' from "
                            "eval.variants",
                        )
                    )
        prompts = ev.get("checkpoint_prompts")
        if prompts is not None and not checkpoints:
            out.append(
                (
                    ("eval", "checkpoint_prompts"),
                    "is only used for checkpoint evals — set `checkpoints: true` or remove it",
                )
            )
        if isinstance(prompts, list):
            firsts: dict[str, int] = {}
            for i, pid in enumerate(prompts):
                if isinstance(pid, str) and pid in firsts:
                    out.append(
                        (
                            ("eval", "checkpoint_prompts", i),
                            f"prompt id '{pid}' is listed twice — remove the duplicate",
                        )
                    )
                elif isinstance(pid, str):
                    firsts[pid] = i

    fuse = data.get("fuse")
    if isinstance(fuse, Mapping) and fuse.get("from", fuse.get("from_")) == "best":
        if not checkpoints:
            out.append(
                (
                    ("fuse", "from"),
                    "'best' fuses the checkpoint with the best format adherence, which needs "
                    "checkpoint evals — set `eval.checkpoints: true` or use `from: final`",
                )
            )

    train = data.get("train")
    if isinstance(train, Mapping):
        out.extend(_train_cross_problems(train))
    return out


def _quant_entry_typed(item: Mapping[str, Any]) -> bool:
    """Every value of a quantize entry is one the model accepts (else it is named by
    the field's own check, and the entry has no variant name yet)."""
    return (
        item.get("mode", "affine") in QUANT_MODES
        and item.get("recipe") in (None, *QUANT_RECIPES)
        and item.get("bits") in (None, *QUANT_BITS)
        and item.get("group_size") in (None, *ALL_GROUP_SIZES)
    )


def _runs_problems(seeds: list[Any]) -> list[tuple[Loc, str]]:
    # Too many seeds is already the seeds field's own problem; the run count only
    # adds news when a sweep multiplies seeds that are each within their limit.
    if len(seeds) > limits.MAX_SEEDS:
        return []
    # One grid point here; a sweep counts its points × seeds in jobs/experiment_spec/sweep.py.
    problem = limits.runs_problem(len(seeds), grid_points=1)
    return [(("seeds",), problem)] if problem else []


def _checkpoint_problems(train: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    # mlx-lm saves an adapter every save_every steps whether or not checkpoints are
    # evaluated, so the count matters for every run. An iters over its own limit is
    # reported on its own; the count would only repeat it.
    iters, save_every = (
        train.get("iters", _train_default("iters")),
        train.get("save_every", _train_default("save_every")),
    )
    if not (is_int(iters) and is_int(save_every)):
        return []
    if not (1 <= iters <= limits.MAX_ITERS and save_every >= 1):
        return []
    problem = limits.checkpoints_problem(iters, save_every)
    where: Loc = ("train", "save_every") if "save_every" in train else ("train", "iters")
    return [(where, problem)] if problem else []


def _probe_problems(train: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    # The probe runs at each checkpoint: a run without one never probes, and a
    # stop rule needs `patience` probes before the last iteration to stop early.
    probe = train.get("adherence_probe")
    if not isinstance(probe, Mapping):
        return []
    iters, save_every = (
        train.get("iters", _train_default("iters")),
        train.get("save_every", _train_default("save_every")),
    )
    if not (is_int(iters) and is_int(save_every) and iters >= 1 and save_every >= 1):
        return []
    where: Loc = ("train", "adherence_probe")
    if save_every > iters:
        return [
            (
                where,
                f"probes run at each checkpoint (every save_every = {save_every} iterations), "
                f"but iters = {iters} saves none — lower train.save_every",
            )
        ]
    every = probe.get("every")
    if is_int(every) and every >= 1 and every % save_every:
        return [
            (
                where + ("every",),
                f"probes run at checkpoints, every save_every = {save_every} iterations; "
                f"every = {every} is not a multiple of it — use "
                f"{save_every * max(1, every // save_every)}",
            )
        ]
    step = every if is_int(every) and every >= 1 else save_every
    patience = probe.get("patience", 2)
    stops = probe.get("stop_when_locked") is not None or probe.get("stop_when_collapsed") is True
    before_last = (iters - 1) // step  # probes that can still stop training
    if stops and is_int(patience) and patience > before_last:
        return [
            (
                where + ("patience",),
                f"{patience} probes in a row are needed to stop, but only {before_last} run "
                f"before the last iteration (iters {iters}, a probe every {step}) — lower "
                "patience or train.save_every",
            )
        ]
    return []


def _gang_problems(train: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    # Each rank takes batch_size / workers examples of every batch (mlx-lm's
    # iterate_batches refuses a batch that does not divide), and the probe's
    # early stop would end rank 0 alone, leaving the others in a collective.
    workers, batch = train.get("workers", 1), train.get("batch_size", 4)
    if not (is_int(workers) and workers > 1):
        return []
    out: list[tuple[Loc, str]] = []
    if is_int(batch) and batch >= 1 and batch % workers:
        fit = batch - batch % workers or workers
        out.append(
            (
                ("train", "workers"),
                f"batch_size {batch} does not divide among {workers} workers: each takes "
                f"batch_size / workers examples of every batch — use a batch_size that is "
                f"a multiple of {workers} (e.g. {fit}) or fewer workers",
            )
        )
    if isinstance(train.get("adherence_probe"), Mapping):
        out.append(
            (
                ("train", "workers"),
                f"the adherence probe runs on one Mac and cannot stop {workers} workers "
                "together — remove train.adherence_probe or set workers: 1",
            )
        )
    return out


def _train_cross_problems(train: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    out = _checkpoint_problems(train) + _probe_problems(train) + _gang_problems(train)
    sched = train.get("lr_schedule")
    if isinstance(sched, Mapping):
        name, args = sched.get("name"), sched.get("arguments")
        if (
            name in SCHEDULES
            and isinstance(args, list)
            and args
            and all(is_number(a) for a in args)
        ):
            lo, hi, step_positions, signature = SCHEDULES[name]
            where: Loc = ("train", "lr_schedule", "arguments")
            if not lo <= len(args) <= hi:
                count = f"{lo}" if lo == hi else f"{lo} or {hi}"
                out.append(
                    (where, f"{name} takes {count} arguments ({signature}), got {len(args)}")
                )
            else:
                names = [s.split("=")[0] for s in signature.split(", ")]
                for pos in step_positions:
                    if pos < len(args) and (args[pos] != int(args[pos]) or args[pos] < 1):
                        out.append(
                            (
                                where,
                                f"argument {pos + 1} of {name} ({names[pos]}) is a step count "
                                f"and must be a whole number ≥ 1, got {args[pos]}",
                            )
                        )
            if args[0] <= 0:
                out.append(
                    (
                        where,
                        f"arguments[0] is the initial learning rate and must be > 0, got {args[0]}",
                    )
                )
            lr = train.get("learning_rate")
            if is_number(lr) and lr != args[0]:
                out.append(
                    (
                        ("train", "learning_rate"),
                        f"{lr} is ignored when lr_schedule is set — mlx-lm starts from "
                        f"lr_schedule.arguments[0] = {args[0]}; make them equal or remove "
                        "learning_rate",
                    )
                )

    optimizer = train.get("optimizer", _train_default("optimizer"))
    config = train.get("optimizer_config")
    if optimizer in OPTIMIZER_KWARGS and isinstance(config, Mapping):
        allowed = OPTIMIZER_KWARGS[optimizer]
        for key in config:
            if key in allowed:
                continue
            where = ("train", "optimizer_config", str(key))
            if key in OPTIMIZER_KWARGS:
                msg = (
                    f"unknown key '{key}' — optimizer_config holds the keyword arguments of the "
                    f"chosen optimizer ({optimizer}) directly, not one mapping per optimizer"
                )
            elif key == "learning_rate":
                msg = "set train.learning_rate (or train.lr_schedule) instead"
            else:
                msg = (
                    f"unknown {optimizer} option '{key}'{suggest(str(key), allowed)} "
                    f"(valid: {', '.join(allowed)})"
                )
            out.append((where, msg))
    return out
