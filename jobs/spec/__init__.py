"""Experiment specs: YAML in, a validated `ExperimentSpec` out, every problem reported.

A spec describes one experiment; each seed becomes one run. `parse_spec` reports
ALL problems at once, each pointing at the YAML line of the offending key, and
returns a spec whose dataset, suite and local base model are absolute paths.
`config_fingerprint` hashes everything that can change a run's result (model
identity, dataset and suite bytes, every knob) but not the name, seeds or
resources, so the leaderboard can pool seeds across experiments.

Defaults mirror mlx-lm's `lora.py` CONFIG_DEFAULTS.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from jobs import limits
from jobs.datasets import check_dataset, dataset_digest, file_digest
from jobs.problems import InputError, Problem

FINGERPRINT_VERSION = 1

Loc = tuple[str | int, ...]

# name -> (min args, max args, argument positions that are step counts, signature)
SCHEDULES: dict[str, tuple[int, int, tuple[int, ...], str]] = {
    "cosine_decay": (2, 3, (1,), "init, decay_steps, end=0.0"),
    "linear_schedule": (3, 3, (2,), "init, end, steps"),
    "exponential_decay": (2, 2, (), "init, decay_rate"),
    "step_decay": (3, 3, (2,), "init, decay_rate, step_size"),
}
ScheduleName = Literal["cosine_decay", "linear_schedule", "exponential_decay", "step_decay"]

# Keyword arguments of mlx.optimizers classes (besides learning_rate), as of mlx 0.29.
OPTIMIZER_KWARGS: dict[str, tuple[str, ...]] = {
    "adam": ("betas", "eps", "bias_correction"),
    "adamw": ("betas", "eps", "weight_decay", "bias_correction"),
    "muon": ("momentum", "weight_decay", "nesterov", "ns_steps"),
    "sgd": ("momentum", "weight_decay", "dampening", "nesterov"),
    "adafactor": (
        "eps",
        "clip_threshold",
        "decay_rate",
        "beta_1",
        "weight_decay",
        "scale_parameter",
        "relative_step",
        "warmup_init",
    ),
}

QUANT_BITS = (2, 3, 4, 5, 6, 8)
QUANT_GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 64

# Files that define a local model's behaviour besides its weights (hashed by content).
MODEL_META_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "model.safetensors.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")

_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_HF_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
_HF_ID_RE = re.compile(rf"^{_HF_PART}/{_HF_PART}$")


# --------------------------------------------------------------------------- models


def _not_zero(kind: str):
    def check(value: int) -> int:
        if value == 0:
            raise ValueError(f"must be -1 ({kind}) or at least 1, got 0")
        return value

    return AfterValidator(check)


NonEmptyStr = Annotated[str, Field(min_length=1)]
SpecPath = Annotated[Path, Field(strict=False)]

_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class LoraParams(BaseModel):
    """mlx-lm `lora_parameters`."""

    model_config = _CONFIG

    rank: int = Field(8, ge=1, le=1024)
    scale: float = Field(20.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    keys: list[NonEmptyStr] | None = Field(None, min_length=1)


class LrSchedule(BaseModel):
    """mlx-lm `lr_schedule`, built by `mlx_lm.tuner.utils.build_schedule`."""

    model_config = _CONFIG

    name: ScheduleName
    arguments: list[float] = Field(min_length=1)
    warmup: int = Field(0, ge=0)
    warmup_init: float = Field(0.0, ge=0)


class TrainSpec(BaseModel):
    """The knobs of `mlx_lm.lora --train`, defaults as in mlx-lm."""

    model_config = _CONFIG

    iters: int = Field(1000, ge=1, le=limits.MAX_ITERS)
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(1e-5, gt=0, le=1)
    lr_schedule: LrSchedule | None = None
    num_layers: Annotated[int, Field(ge=-1), _not_zero("all layers")] = 16
    fine_tune_type: Literal["lora", "dora", "full"] = "lora"
    optimizer: Literal["adam", "adamw", "muon", "sgd", "adafactor"] = "adam"
    # Keyword arguments of the chosen optimizer, e.g. {weight_decay: 0.1} for adamw.
    optimizer_config: dict[str, Any] = Field(default_factory=dict)
    mask_prompt: bool = False
    grad_accumulation_steps: int = Field(1, ge=1)
    grad_checkpoint: bool = False
    max_seq_length: int = Field(2048, ge=16)
    save_every: int = Field(100, ge=1)
    steps_per_report: int = Field(10, ge=1)
    steps_per_eval: int = Field(200, ge=1)
    val_batches: Annotated[int, Field(ge=-1), _not_zero("the whole validation set")] = 25
    lora: LoraParams = Field(default_factory=LoraParams)

    def to_mlx_lm_config(self) -> dict[str, Any]:
        """These knobs under mlx-lm's CONFIG_DEFAULTS names (for a `lora --config` YAML)."""
        config = self.model_dump(exclude={"lora", "optimizer_config"})
        config["optimizer_config"] = {self.optimizer: dict(self.optimizer_config)}
        config["lora_parameters"] = self.lora.model_dump(exclude_none=True)
        if self.lr_schedule is not None:
            config["lr_schedule"] = self.lr_schedule.model_dump()
        return config


class FuseSpec(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, validate_by_name=True, validate_by_alias=True
    )

    dequantize: bool = True
    from_: Literal["final", "best"] = Field("final", alias="from")


class QuantizeSpec(BaseModel):
    model_config = _CONFIG

    bits: Literal[2, 3, 4, 5, 6, 8]
    group_size: Literal[32, 64, 128] = DEFAULT_GROUP_SIZE

    @property
    def variant(self) -> str:
        return variant_name(self.bits, self.group_size)


def variant_name(bits: int, group_size: int = DEFAULT_GROUP_SIZE) -> str:
    """Variant name: q4 for 4 bits with the default group size 64, else e.g. q4g32."""
    return f"q{bits}" if group_size == DEFAULT_GROUP_SIZE else f"q{bits}g{group_size}"


EvalVariant = Literal["base", "adapter", "fused", "quantized"]


class EvalSpec(BaseModel):
    model_config = _CONFIG

    suite: SpecPath
    # Left out of the YAML, the default keeps only the variants the spec produces
    # (adapter, plus fused with a fuse section, plus quantized with a quantize list).
    variants: list[EvalVariant] = Field(
        default_factory=lambda: ["adapter", "fused", "quantized"], min_length=1
    )
    checkpoints: bool = False
    checkpoint_prompts: list[NonEmptyStr] | None = Field(None, min_length=1)
    max_tokens: int | None = Field(None, ge=1)


class Resources(BaseModel):
    model_config = _CONFIG

    min_memory_gb: float = Field(0.0, ge=0, le=limits.MAX_MEMORY_GB)
    timeout_hours: float = Field(24.0, ge=limits.MIN_TIMEOUT_HOURS, le=limits.MAX_TIMEOUT_HOURS)
    # Automatic retries of a stage that died (signal, lost worker, lost Redis);
    # a stage whose own code raised is not retried: it would fail the same way.
    retries: int = Field(2, ge=0, le=10)


_SKIP_CROSS_CHECKS = "lorafarm.spec.skip_cross_checks"


class ExperimentSpec(BaseModel):
    model_config = _CONFIG

    name: str = Field(max_length=limits.MAX_NAME_CHARS)
    base_model: NonEmptyStr
    dataset: SpecPath
    seeds: list[Annotated[int, Field(ge=0, le=limits.MAX_SEED)]] = Field(
        min_length=1, max_length=limits.MAX_SEEDS
    )
    train: TrainSpec
    fuse: FuseSpec | None = Field(default_factory=FuseSpec)
    quantize: list[QuantizeSpec] = Field(default_factory=list)
    eval: EvalSpec
    resources: Resources = Field(default_factory=Resources)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            hint = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-") or "my-experiment"
            raise ValueError(
                f"may only contain letters, digits, '.', '_' and '-', got {value!r} — e.g. {hint!r}"
            )
        return value

    @model_validator(mode="after")
    def _defaults_and_cross_checks(self, info: ValidationInfo) -> Self:
        if "variants" not in self.eval.model_fields_set:
            self.eval = self.eval.model_copy(
                update={"variants": default_variants(self.fuse is not None, bool(self.quantize))}
            )
        if info.context and info.context.get(_SKIP_CROSS_CHECKS):
            return self  # parse_spec runs them itself, with line numbers
        data = self.model_dump(by_alias=True)
        # A dumped spec always carries learning_rate; whether the user wrote one next
        # to lr_schedule is only known from the YAML, so parse_spec alone checks that.
        del data["train"]["learning_rate"]
        found = cross_field_problems(data)
        if found:
            raise ValueError("; ".join(f"{dotted(loc)}: {msg}" for loc, msg in found))
        return self

    @property
    def base_model_is_local(self) -> bool:
        """True when base_model is a (resolved, absolute) local folder, not an HF id."""
        return is_local_model(self.base_model)

    @property
    def quantize_variants(self) -> list[str]:
        return [q.variant for q in self.quantize]


def default_variants(has_fuse: bool, has_quantize: bool) -> list[EvalVariant]:
    variants: list[EvalVariant] = ["adapter"]
    if has_fuse:
        variants.append("fused")
        if has_quantize:
            variants.append("quantized")
    return variants


def is_local_model(base_model: str) -> bool:
    return Path(base_model).expanduser().is_absolute()


# ------------------------------------------------------------------ cross-field checks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _suggest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else ""


def cross_field_problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Checks that span several fields, run on the raw YAML mapping (so they are
    reported even when other fields are invalid) or on a dumped spec."""
    out: list[tuple[Loc, str]] = []

    seeds = data.get("seeds")
    if isinstance(seeds, list):
        out.extend(_runs_problems(seeds))
        first: dict[int, int] = {}
        for i, seed in enumerate(seeds):
            if not _is_int(seed):
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
    seen_variants: dict[tuple[int, int], int] = {}
    for i, item in enumerate(quant_items):
        if not isinstance(item, Mapping):
            continue
        bits, group = item.get("bits"), item.get("group_size", DEFAULT_GROUP_SIZE)
        if bits not in QUANT_BITS or group not in QUANT_GROUP_SIZES:
            continue
        key = (bits, group)
        if key in seen_variants:
            out.append(
                (
                    ("quantize", i),
                    f"duplicate quantize variant {variant_name(*key)} (same as "
                    f"quantize[{seen_variants[key]}]) — remove one",
                )
            )
        else:
            seen_variants[key] = i
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


def _runs_problems(seeds: list[Any]) -> list[tuple[Loc, str]]:
    # Too many seeds is already the seeds field's own problem; the run count only
    # adds news when a sweep multiplies seeds that are each within their limit.
    if len(seeds) > limits.MAX_SEEDS:
        return []
    problem = limits.runs_problem(len(seeds), grid_points=1)  # no sweeps yet: one point
    return [(("seeds",), problem)] if problem else []


def _checkpoint_problems(train: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    # mlx-lm saves an adapter every save_every steps whether or not checkpoints are
    # evaluated, so the count matters for every run. An iters over its own limit is
    # reported on its own; the count would only repeat it.
    iters, save_every = train.get("iters", 1000), train.get("save_every", 100)
    if not (_is_int(iters) and _is_int(save_every)):
        return []
    if not (1 <= iters <= limits.MAX_ITERS and save_every >= 1):
        return []
    problem = limits.checkpoints_problem(iters, save_every)
    where: Loc = ("train", "save_every") if "save_every" in train else ("train", "iters")
    return [(where, problem)] if problem else []


def _train_cross_problems(train: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    out = _checkpoint_problems(train)
    sched = train.get("lr_schedule")
    if isinstance(sched, Mapping):
        name, args = sched.get("name"), sched.get("arguments")
        if (
            name in SCHEDULES
            and isinstance(args, list)
            and args
            and all(_is_number(a) for a in args)
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
            if _is_number(lr) and lr != args[0]:
                out.append(
                    (
                        ("train", "learning_rate"),
                        f"{lr} is ignored when lr_schedule is set — mlx-lm starts from "
                        f"lr_schedule.arguments[0] = {args[0]}; make them equal or remove "
                        "learning_rate",
                    )
                )

    optimizer = train.get("optimizer", "adam")
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
                    f"unknown {optimizer} option '{key}'{_suggest(str(key), allowed)} "
                    f"(valid: {', '.join(allowed)})"
                )
            out.append((where, msg))
    return out


# ------------------------------------------------------------------ YAML and line mapping


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` as a float (YAML 1.1 needs `1.0e-5`), like mlx-lm."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


class _LimitExceeded(Exception):
    """A spec that breaks a YAML limit while it is being read; carries where."""

    def __init__(self, message: str, line: int, loc: Loc) -> None:
        super().__init__(message)
        self.message, self.line, self.loc = message, line, loc


class _BoundedLoader(_SpecLoader):
    """_SpecLoader that refuses, while composing, what would take a Mac's memory or
    the interpreter's stack: nesting deeper than MAX_YAML_DEPTH, more than
    MAX_YAML_VALUES values counting each alias as everything it stands for (the
    "billion laughs" bomb), a recursive alias, and numbers too long to convert.

    PyYAML shares an aliased node rather than copying it, but every walk over the
    result (line lookup, validation, the form) expands it again, so the expanded
    size is what has to stay small."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._values = 0
        self._path: list[str | int] = []
        self._sizes: dict[str, int] = {}  # anchor -> values its node expands to

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        part = _path_part(index)
        if part is not None:
            self._path.append(part)
        try:
            return self._compose_counted(parent, index)
        finally:
            if part is not None:
                self._path.pop()

    def _compose_counted(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            self._count_alias(event.anchor, line)
            return super().compose_node(parent, index)
        nested = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if nested and self._depth >= limits.MAX_YAML_DEPTH:
            self._refuse(
                f"nested more than {limits.MAX_YAML_DEPTH} levels deep, "
                f"at most {limits.MAX_YAML_DEPTH} allowed",
                line,
            )
        before = self._values
        self._count(1, line, "")
        self._depth += nested
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= nested
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int":
            self._check_number(node.value, line)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._sizes[anchor] = self._values - before
        return node

    def _count_alias(self, anchor: str, line: int) -> None:
        if anchor not in self.anchors:
            return  # PyYAML reports the undefined alias itself
        if anchor not in self._sizes:
            self._refuse(f"alias *{anchor} refers to a value it is part of", line)
        self._count(self._sizes[anchor], line, f" (alias *{anchor} expands them)")

    def _count(self, values: int, line: int, why: str) -> None:
        self._values += values
        if self._values > limits.MAX_YAML_VALUES:
            self._refuse(
                f"more than {limits.MAX_YAML_VALUES} YAML values{why}, "
                f"at most {limits.MAX_YAML_VALUES} allowed in a spec",
                line,
            )

    def _check_number(self, text: str, line: int) -> None:
        problem = limits.number_too_long(text)
        if problem:
            self._refuse(problem, line)

    def _refuse(self, message: str, line: int) -> None:
        raise _LimitExceeded(message, line, tuple(self._path))

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        # PyYAML resolves merge keys (<<) by rewriting the node tree in place, but
        # line numbers and duplicate keys are read from that tree afterwards: merge
        # into a copy of the node instead.
        if isinstance(node, yaml.MappingNode):
            node = yaml.MappingNode(
                node.tag, _merged_pairs(node), node.start_mark, node.end_mark, node.flow_style
            )
        return yaml.constructor.BaseConstructor.construct_mapping(self, node, deep=deep)


_Pairs = list[tuple[yaml.Node, yaml.Node]]


def _merged_pairs(node: yaml.MappingNode) -> _Pairs:
    """The key/value pairs of `node` with merge keys resolved the way PyYAML's
    `flatten_mapping` does (merged pairs first, so the node's own keys win), without
    changing any node. Its cost is bounded: aliases count in MAX_YAML_VALUES."""
    merged: _Pairs = []
    own: _Pairs = []
    for key, value in node.value:
        if key.tag == "tag:yaml.org,2002:merge":
            merged.extend(_merge_source(node, value))
        elif key.tag == "tag:yaml.org,2002:value":  # a plain `=` key is the string "="
            own.append((yaml.ScalarNode("tag:yaml.org,2002:str", key.value, key.start_mark,
                                        key.end_mark, key.style), value))  # fmt: skip
        else:
            own.append((key, value))
    return merged + own


def _merge_source(node: yaml.MappingNode, value: yaml.Node) -> _Pairs:
    if isinstance(value, yaml.MappingNode):
        return _merged_pairs(value)
    if not isinstance(value, yaml.SequenceNode):
        raise yaml.constructor.ConstructorError(
            "while constructing a mapping", node.start_mark,
            f"expected a mapping or list of mappings for merging, but found {value.id}",
            value.start_mark,
        )  # fmt: skip
    parts: list[_Pairs] = []
    for sub in value.value:
        if not isinstance(sub, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"expected a mapping for merging, but found {sub.id}", sub.start_mark,
            )  # fmt: skip
        parts.append(_merged_pairs(sub))
    # Earlier mappings in the list win: PyYAML puts them last.
    return [pair for part in reversed(parts) for pair in part]


def _short_field(loc: Loc, parts: int = 8) -> str:
    """The field a YAML limit was crossed in; a path as deep as the nesting attack
    that got refused is cut after a few steps."""
    field = dotted(loc[:parts]) + ("…" if len(loc) > parts else "")
    return limits.shorten(field, 80)


def _path_part(index: Any) -> str | int | None:
    """The spec path step PyYAML's composer passes as `index`: a mapping value's key
    node, or a list position (None while composing a key)."""
    if isinstance(index, yaml.ScalarNode):
        return str(index.value)
    if isinstance(index, int) and not isinstance(index, bool):
        return index
    return None


def read_yaml(text: str, source: str = "<spec>") -> tuple[yaml.Node | None, Any]:
    """The composed node tree and the loaded data of a spec's YAML, within the limits.

    Refuses with LimitError text over MAX_SPEC_BYTES (before parsing) and anything
    _BoundedLoader refuses, with InputError invalid YAML. Uploads and form text are
    read through here too, so every way in has the same bounds."""
    size_problem = limits.spec_size_problem(limits.text_size(text))
    if size_problem:
        raise limits.LimitError([Problem(source, size_problem)])
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        data = None if root is None else loader.construct_document(root)
    except _LimitExceeded as exc:
        problem = Problem(source, exc.message, exc.line, _short_field(exc.loc))
        raise limits.LimitError([problem]) from None
    except yaml.YAMLError as exc:
        raise InputError([_yaml_problem(exc, source)]) from None
    finally:
        loader.dispose()
    return root, data


def dotted(loc: Sequence[str | int]) -> str:
    """('train', 'lora', 'rank') -> 'train.lora.rank'; ('quantize', 0) -> 'quantize[0]'."""
    out = ""
    parts = list(loc)
    for i, part in enumerate(parts):
        is_key = i + 1 < len(parts) and parts[i + 1] == "[key]"  # a mapping key, not an index
        if part == "[key]":
            continue
        if isinstance(part, int) and not is_key:
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _Lines:
    """Maps a field location to the 1-based YAML line of its key (or list item)."""

    def __init__(self, root: yaml.Node) -> None:
        self.root = root

    def line(self, loc: Sequence[str | int]) -> int:
        node: yaml.Node = self.root
        line = node.start_mark.line + 1
        for part in loc:
            if part == "[key]":
                continue
            if isinstance(node, yaml.MappingNode):
                match = None
                for key, value in node.value:  # the last duplicate wins, as in PyYAML
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        match = (key, value)
                if match is None:
                    return line  # missing key: the line of its parent
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    return line
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def _duplicate_keys(node: yaml.Node, source: str, loc: Loc = ()) -> list[Problem]:
    out: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            line = key.start_mark.line + 1
            if key.value in first and key.value != "<<":
                out.append(
                    Problem(
                        source,
                        f"duplicate key '{key.value}' (first on line {first[key.value]}) — "
                        "YAML keeps only the last one; remove one of them",
                        line,
                        dotted((*loc, key.value)),
                    )
                )
            first.setdefault(key.value, line)
            out.extend(_duplicate_keys(value, source, (*loc, key.value)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.extend(_duplicate_keys(item, source, (*loc, i)))
    return out


def _yaml_problem(exc: yaml.YAMLError, source: str) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or "syntax error"
        if exc.context:
            what = f"{what} ({exc.context})"
        if "\\t" in what:
            what += " — indent with spaces, not tabs"
        elif "block end" in what or "block mapping" in what:
            what += " — check the indentation of this line against the keys above it"
        return Problem(source, f"invalid YAML: {what}", mark.line + 1 if mark else None)
    return Problem(source, f"invalid YAML: {exc}")


# ------------------------------------------------------------------ pydantic error messages


def _got(value: Any) -> str:
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _field_key(name: str, info: Any) -> str:
    return info.alias or name


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = ExperimentSpec
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        info = next(
            (f for n, f in model.model_fields.items() if part in (n, f.alias)),
            None,
        )
        if info is None:
            return None
        model = _inner_model(info.annotation)
    return model


_SECTIONS: dict[str, type[BaseModel]] = {
    "train": TrainSpec,
    "train.lora": LoraParams,
    "train.lr_schedule": LrSchedule,
    "fuse": FuseSpec,
    "quantize[]": QuantizeSpec,
    "eval": EvalSpec,
    "resources": Resources,
}

# mlx-lm / other-framework names people bring along.
_RENAMED = {
    "alpha": "mlx-lm's LoRA config uses 'scale', not 'alpha'",
    "lora_parameters": "LoRA settings go under 'train.lora'",
    "model": "the model is 'base_model'",
    "data": "the dataset folder is 'dataset'",
    "seed": "seeds are a list: 'seeds: [1, 2, 3]'",
    "lr": "the learning rate is 'learning_rate'",
}


def _unknown_key_message(loc: Sequence[str | int]) -> str:
    key = str(loc[-1])
    model = _model_at(loc[:-1])
    valid = [_field_key(n, f) for n, f in model.model_fields.items()] if model else []
    hint = _suggest(key, valid)
    if not hint and key in _RENAMED:
        hint = f" — {_RENAMED[key]}"
    if not hint:
        here = dotted(loc[:-1])
        homes = [
            section
            for section, section_model in _SECTIONS.items()
            if section != here
            and any(key in (n, f.alias) for n, f in section_model.model_fields.items())
        ]
        if homes:
            hint = f" — '{key}' belongs under '{homes[0].removesuffix('[]')}:'"
    if not hint and valid:
        hint = f" (valid keys: {', '.join(valid)})"
    return f"unknown key '{key}'{hint}"


_REQUIRED_HINTS = {
    "name": "a short id, e.g. `name: code-mode-r8`",
    "base_model": "a Hugging Face id like `mlx-community/Qwen3-0.6B-4bit` or a local model folder",
    "dataset": "a folder holding train.jsonl and valid.jsonl",
    "seeds": "e.g. `seeds: [1, 2, 3]` — one run per seed",
    "train": "`train: {}` trains with mlx-lm's defaults",
    "eval": "e.g. `eval: {suite: data/evals/code_mode.yaml}`",
    "eval.suite": "the eval suite YAML file",
    "quantize.bits": f"one of {', '.join(map(str, QUANT_BITS))}",
    "train.lr_schedule.name": f"one of {', '.join(SCHEDULES)}",
    "train.lr_schedule.arguments": "the schedule's arguments, initial learning rate first",
}


def _error_message(err: Mapping[str, Any]) -> str:
    kind: str = err["type"]
    loc = err["loc"]
    ctx = err.get("ctx") or {}
    got = _got(err.get("input"))
    if kind == "invalid_key" or (loc and loc[-1] == "[key]"):
        return f"keys must be strings, got {got} — quote it or fix the key"
    if kind == "missing":
        path = ".".join(str(p) for p in loc if isinstance(p, str))
        where = f" under '{dotted(loc[:-1])}:'" if len(loc) > 1 else ""
        hint = _REQUIRED_HINTS.get(path)
        return f"required key '{loc[-1]}' is missing{where} — add it" + (
            f" ({hint})" if hint else ""
        )
    if kind == "extra_forbidden":
        return _unknown_key_message(loc)
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number, got {got}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, got {got}"
    if kind == "finite_number":
        return f"must be a finite number, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {got}"
    if kind == "string_type":
        return f"must be a string, got {got}"
    if kind == "path_type":
        return f"must be a path (a string), got {got}"
    if kind == "list_type":
        return f"must be a list, e.g. [a, b], got {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        extra = " — write `{}` for all defaults" if err.get("input") is None else ""
        return f"must be a mapping of keys (key: value), got {got}{extra}"
    if kind == "greater_than":
        return f"must be > {limits.bound_text(ctx.get('gt'))}, got {got}"
    if kind == "greater_than_equal":
        return f"must be ≥ {limits.bound_text(ctx.get('ge'))}, got {got}"
    if kind == "less_than":
        return f"must be < {limits.bound_text(ctx.get('lt'))}, got {got}"
    if kind == "less_than_equal":
        return f"must be ≤ {limits.bound_text(ctx.get('le'))}, got {got}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    if kind == "too_long":  # a list: the field's name says what it holds ("seeds")
        noun = loc[-1] if loc and isinstance(loc[-1], str) else "items"
        return limits.too_many(ctx.get("actual_length") or 0, noun, ctx.get("max_length") or 0)
    if kind == "string_too_long":
        text = err.get("input")
        length = len(text) if isinstance(text, str) else 0
        return f"{limits.too_many(length, 'characters', ctx.get('max_length') or 0)} ({got})"
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        hint = ""
        if isinstance(err.get("input"), str):
            options = re.findall(r"'([^']*)'", expected)
            hint = _suggest(err["input"], options)
        return f"must be one of {expected}, got {got}{hint}"
    if kind == "value_error":
        return str(ctx.get("error", err.get("msg", "invalid value")))
    return f"{err.get('msg', 'invalid value')}, got {got}"


# ------------------------------------------------------------------ paths and files


def resolve_path(value: str, base_dir: Path) -> Path:
    """Absolute path for `value`: as is when absolute, else under `base_dir` (the spec's
    folder) if it exists there, else under the current directory if it exists there,
    else under `base_dir` (so error messages name the place we looked first)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path.resolve()
    base = Path(base_dir).expanduser().resolve()
    for candidate in (base / path, Path.cwd() / path):
        if candidate.exists():
            return candidate.resolve()
    return (base / path).resolve()


def looks_like_hf_id(value: str) -> bool:
    return bool(_HF_ID_RE.match(value)) and ".." not in value and "--" not in value


def _path_like(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~", ".\\")) or "\\" in value or value in (".", "..")


def model_dir_problems(path: Path) -> tuple[list[str], dict[str, Any]]:
    """What keeps a folder from being an mlx-lm model folder, and its config.json."""
    problems: list[str] = []
    config: dict[str, Any] = {}
    config_file = path / "config.json"
    needs = "a model folder needs config.json, *.safetensors weights and tokenizer files"
    if not config_file.is_file():
        problems.append(f"{path} has no config.json — {needs}")
    else:
        try:
            loaded = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{config_file} is not valid JSON: {exc}")
        else:
            if not isinstance(loaded, dict) or "model_type" not in loaded:
                problems.append(
                    f"{config_file} has no 'model_type' — mlx-lm cannot tell the architecture"
                )
            if isinstance(loaded, dict):
                config = loaded
    if not any(p.is_file() for p in path.glob("*.safetensors")):
        problems.append(
            f"{path} has no *.safetensors weights — {needs} (convert with `mlx_lm.convert`)"
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        problems.append(f"{path} has no tokenizer ({', '.join(TOKENIZER_FILES)}) — {needs}")
    return problems, config


def _model_layers(config: Mapping[str, Any]) -> int | None:
    for holder in (config, config.get("text_config")):
        if isinstance(holder, Mapping) and _is_int(holder.get("num_hidden_layers")):
            return int(holder["num_hidden_layers"])
    return None


def _suite_prompt_ids(path: Path) -> set[str] | None:
    """Prompt ids of a suite file, or None when it cannot be read (the suite loader
    reports those problems)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    prompts = doc.get("prompts") if isinstance(doc, dict) else None
    if not isinstance(prompts, list):
        return None
    return {str(p["id"]) for p in prompts if isinstance(p, dict) and "id" in p}


class _Checker:
    """Resolves paths in the raw YAML mapping (in place) and checks the files behind them."""

    def __init__(self, data: dict[str, Any], source: str, lines: _Lines, base: Path) -> None:
        self.data, self.source, self.lines, self.base = data, source, lines, base
        self.problems: list[Problem] = []

    def add(self, loc: Loc, message: str) -> None:
        self.problems.append(Problem(self.source, message, self.lines.line(loc), dotted(loc)))

    def _train(self, key: str, default: Any) -> Any:
        train = self.data.get("train")
        return train.get(key, default) if isinstance(train, dict) else default

    def run(self, check_files: bool) -> list[Problem]:
        self.base_model(check_files)
        self.dataset(check_files)
        self.suite(check_files)
        return self.problems

    def base_model(self, check_files: bool) -> None:
        value = self.data.get("base_model")
        if not isinstance(value, str) or not value.strip():
            return
        path = resolve_path(value, self.base)
        if path.is_dir():
            self.data["base_model"] = str(path)
            if check_files:
                problems, config = model_dir_problems(path)
                for message in problems:
                    self.add(("base_model",), message)
                self._num_layers(config)
            return
        if looks_like_hf_id(value) and not _path_like(value):
            return  # a Hugging Face id; mlx-lm downloads it on the worker
        if not check_files:
            self.data["base_model"] = str(path)
        elif path.exists():
            self.add(
                ("base_model",),
                f"{path} is a file — base_model must be a model folder "
                "or a Hugging Face id like 'org/name'",
            )
        else:
            self.add(
                ("base_model",),
                f"no model folder at {path} (also looked in the current directory), and "
                f"{value!r} is not a Hugging Face id like 'mlx-community/Qwen3-0.6B-4bit'",
            )

    def _num_layers(self, config: Mapping[str, Any]) -> None:
        layers = _model_layers(config)
        requested = self._train("num_layers", 16)
        if layers is None or not _is_int(requested) or requested <= layers:
            return
        default = "" if "num_layers" in (self.data.get("train") or {}) else " (the default)"
        self.add(
            ("train", "num_layers"),
            f"{requested}{default} is more than the model's {layers} layers "
            f"(config.json num_hidden_layers) — use at most {layers}, or -1 for all",
        )

    def _path(self, holder: dict[str, Any], key: str, loc: Loc) -> Path | None:
        value = holder.get(key)
        if not isinstance(value, str):
            return None
        if not value.strip():
            self.add(loc, "must not be empty")
            return None
        path = resolve_path(value, self.base)
        holder[key] = str(path)
        return path

    def dataset(self, check_files: bool) -> None:
        path = self._path(self.data, "dataset", ("dataset",))
        if path is None or not check_files:
            return
        needs = "dataset must be a folder with train.jsonl (valid.jsonl and test.jsonl optional)"
        if not path.exists():
            self.add(
                ("dataset",),
                f"folder not found: {path} (relative paths are looked up next to the spec, then "
                f"in the current directory) — {needs}",
            )
            return
        if not path.is_dir():
            self.add(("dataset",), f"{path} is a file — {needs}")
            return
        # The files are checked as mlx-lm loads them with these knobs; its warnings
        # (no valid.jsonl, ...) are preflight findings, not problems.
        batch = self._train("batch_size", 4)
        result = check_dataset(
            path,
            batch if _is_int(batch) and batch >= 1 else None,
            self._train("mask_prompt", False) is True,
        )
        self.problems.extend(result.problems)
        for loc, message in result.spec_problems:
            self.add(loc, message)

    def suite(self, check_files: bool) -> None:
        ev = self.data.get("eval")
        if not isinstance(ev, dict):
            return
        path = self._path(ev, "suite", ("eval", "suite"))
        if path is None or not check_files:
            return
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "not found"
            self.add(
                ("eval", "suite"),
                f"suite file {what}: {path} (relative paths are looked up next to the spec, "
                "then in the current directory)",
            )
            return
        prompts = ev.get("checkpoint_prompts")
        ids = _suite_prompt_ids(path) if isinstance(prompts, list) else None
        if ids is None:
            return
        for i, pid in enumerate(prompts):
            if isinstance(pid, str) and pid not in ids:
                self.add(
                    ("eval", "checkpoint_prompts", i),
                    f"prompt id '{pid}' is not in the suite {path.name}"
                    f"{_suggest(pid, sorted(ids))}",
                )


# ------------------------------------------------------------------ public API


def parse_spec(
    text: str,
    source: str = "<spec>",
    base_dir: Path | None = None,
    check_files: bool = True,
) -> ExperimentSpec:
    """Parse and validate a YAML experiment spec; raise InputError with every problem.

    Relative paths resolve against `base_dir` (the spec's folder), then the current
    directory. `check_files=False` skips the filesystem checks (paths are still made
    absolute)."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    root, data = read_yaml(text, source)
    if root is None or data is None:
        raise InputError(
            [Problem(source, "the spec is empty — see DESIGN.md 'Experiment spec (YAML)'", 1)]
        )
    if not isinstance(data, dict):
        raise InputError(
            [
                Problem(
                    source,
                    "the spec must be a mapping of keys (name:, base_model:, ...), "
                    f"got {_got(data)}",
                    root.start_mark.line + 1,
                )
            ]
        )
    lines = _Lines(root)
    problems = _duplicate_keys(root, source)
    problems.extend(_Checker(data, source, lines, base).run(check_files))

    spec: ExperimentSpec | None = None
    try:
        spec = ExperimentSpec.model_validate(data, context={_SKIP_CROSS_CHECKS: True})
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if err["type"] == "invalid_key" and loc:
                loc = (*loc[:-1], str(loc[-1]))  # a mapping key, not a list index
            problems.append(Problem(source, _error_message(err), lines.line(loc), dotted(loc)))
    for loc, message in cross_field_problems(data):
        problems.append(Problem(source, message, lines.line(loc), dotted(loc)))

    if problems or spec is None:
        unique = list(dict.fromkeys(problems))
        unique.sort(key=lambda p: (p.file != source, p.line or 0))
        raise InputError(unique)
    return spec


def load_spec(path: Path, check_files: bool = True) -> ExperimentSpec:
    """Read and parse a spec file; relative paths in it resolve against its folder."""
    path = Path(path)
    try:
        text = read_spec_file(path)
    except FileNotFoundError:
        raise InputError([Problem(str(path), "spec file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError([Problem(str(path), f"cannot read spec file: {exc}")]) from None
    return parse_spec(text, source=str(path), base_dir=path.parent, check_files=check_files)


def read_spec_file(path: Path) -> str:
    """A spec file's text; refuses one over MAX_SPEC_BYTES before decoding or parsing
    it. Reads at most one byte past the limit, so a huge file (or /dev/zero) costs
    nothing."""
    with open(path, "rb") as handle:
        raw = handle.read(limits.MAX_SPEC_BYTES + 1)
    if len(raw) > limits.MAX_SPEC_BYTES:
        size = max(_file_size(path), len(raw))
        raise limits.LimitError([Problem(str(path), limits.spec_size_problem(size) or "")])
    return raw.decode("utf-8")


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def spec_to_yaml(spec: ExperimentSpec) -> str:
    """The spec as YAML (absolute paths, every knob explicit); parse_spec reads it back
    into an equal spec."""
    data = spec.model_dump(mode="json", by_alias=True)
    schedule = spec.train.lr_schedule
    if schedule is not None and spec.train.learning_rate != schedule.arguments[0]:
        del data["train"]["learning_rate"]  # ignored by mlx-lm next to a schedule
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def model_identity(base_model: str) -> dict[str, Any]:
    """What identifies a base model: the HF id, or for a local folder the bytes of its
    config/tokenizer files and each weight file's name and size (weights are not read)."""
    if not is_local_model(base_model):
        return {"hf_id": base_model}
    path = Path(base_model)
    if not (path / "config.json").is_file():
        raise InputError(
            [Problem(str(path), "cannot fingerprint the model: no config.json", None, "base_model")]
        )
    files = {name: file_digest(path / name) for name in MODEL_META_FILES if (path / name).is_file()}
    weights = sorted((p.name, p.stat().st_size) for p in path.glob("*.safetensors") if p.is_file())
    return {"local": {"files": files, "weights": weights}}


def fingerprint_payload(spec: ExperimentSpec) -> dict[str, Any]:
    """The canonical data `config_fingerprint` hashes."""
    dataset = Path(spec.dataset)
    suite = Path(spec.eval.suite)
    missing: list[Problem] = []
    if not (dataset / "train.jsonl").is_file():
        missing.append(Problem(str(dataset), "cannot fingerprint: no train.jsonl", None, "dataset"))
    if not suite.is_file():
        missing.append(
            Problem(str(suite), "cannot fingerprint: suite not found", None, "eval.suite")
        )
    if missing:
        raise InputError(missing)

    train = spec.train.model_dump(mode="json")
    train["lora"]["keys"] = sorted(train["lora"]["keys"]) if train["lora"]["keys"] else None
    if spec.train.lr_schedule is not None:
        train["learning_rate"] = None  # mlx-lm ignores it next to a schedule
    if spec.train.fine_tune_type == "full":
        train["lora"] = None  # mlx-lm ignores lora_parameters for full fine-tuning
    ev = spec.eval.model_dump(mode="json", exclude={"suite"})
    ev["variants"] = sorted(ev["variants"])
    if ev["checkpoint_prompts"] is not None:
        ev["checkpoint_prompts"] = sorted(ev["checkpoint_prompts"])
    return {
        "version": FINGERPRINT_VERSION,
        "base_model": model_identity(spec.base_model),
        "dataset": dataset_digest(dataset),
        "suite": file_digest(suite),
        "train": train,
        "fuse": spec.fuse.model_dump(mode="json", by_alias=True) if spec.fuse else None,
        "quantize": sorted(q.variant for q in spec.quantize),
        "eval": ev,
    }


def config_fingerprint(spec: ExperimentSpec) -> str:
    """16 hex chars of sha256 over `fingerprint_payload`: equal for specs that differ only
    in name, seeds or resources; different when any knob, dataset or suite byte changes."""
    canonical = json.dumps(
        fingerprint_payload(spec),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


__all__ = [
    "EvalSpec",
    "ExperimentSpec",
    "FuseSpec",
    "LoraParams",
    "LrSchedule",
    "QuantizeSpec",
    "Resources",
    "TrainSpec",
    "config_fingerprint",
    "cross_field_problems",
    "dotted",
    "fingerprint_payload",
    "is_local_model",
    "load_spec",
    "looks_like_hf_id",
    "model_identity",
    "parse_spec",
    "read_spec_file",
    "read_yaml",
    "resolve_path",
    "spec_to_yaml",
    "variant_name",
]
