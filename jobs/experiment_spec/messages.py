"""Pydantic's validation errors as messages a spec author can act on.

Each message says what is wrong in the spec's own words (YAML's `true`, a
"mapping", the key as written), and where it can, how to fix it: the closest
valid key, the section an unknown key belongs under, the name mlx-lm or
another tool uses for a knob.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel

from jobs import limits
from jobs.experiment_spec.model import (
    EvalSpec,
    ExperimentSpec,
    FuseSpec,
    LoraParams,
    LrSchedule,
    QuantizeSpec,
    Resources,
    TrainSpec,
)
from jobs.experiment_spec.options import QUANT_BITS, SCHEDULES
from jobs.experiment_spec.words import dotted, got, suggest


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
    hint = suggest(key, valid)
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


def error_message(err: Mapping[str, Any]) -> str:
    kind: str = err["type"]
    loc = err["loc"]
    ctx = err.get("ctx") or {}
    shown = got(err.get("input"))
    if kind == "invalid_key" or (loc and loc[-1] == "[key]"):
        return f"keys must be strings, got {shown} — quote it or fix the key"
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
        return f"must be a whole number, got {shown}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, got {shown}"
    if kind == "finite_number":
        return f"must be a finite number, got {shown}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {shown}"
    if kind == "string_type":
        return f"must be a string, got {shown}"
    if kind == "path_type":
        return f"must be a path (a string), got {shown}"
    if kind == "list_type":
        return f"must be a list, e.g. [a, b], got {shown}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        extra = " — write `{}` for all defaults" if err.get("input") is None else ""
        return f"must be a mapping of keys (key: value), got {shown}{extra}"
    if kind == "greater_than":
        return f"must be > {limits.bound_text(ctx.get('gt'))}, got {shown}"
    if kind == "greater_than_equal":
        return f"must be ≥ {limits.bound_text(ctx.get('ge'))}, got {shown}"
    if kind == "less_than":
        return f"must be < {limits.bound_text(ctx.get('lt'))}, got {shown}"
    if kind == "less_than_equal":
        return f"must be ≤ {limits.bound_text(ctx.get('le'))}, got {shown}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    if kind == "too_long":  # a list: the field's name says what it holds ("seeds")
        noun = loc[-1] if loc and isinstance(loc[-1], str) else "items"
        return limits.too_many(ctx.get("actual_length") or 0, noun, ctx.get("max_length") or 0)
    if kind == "string_too_long":
        text = err.get("input")
        length = len(text) if isinstance(text, str) else 0
        return f"{limits.too_many(length, 'characters', ctx.get('max_length') or 0)} ({shown})"
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        hint = ""
        if isinstance(err.get("input"), str):
            options = re.findall(r"'([^']*)'", expected)
            hint = suggest(err["input"], options)
        return f"must be one of {expected}, got {shown}{hint}"
    if kind == "value_error":
        return str(ctx.get("error", err.get("msg", "invalid value")))
    return f"{err.get('msg', 'invalid value')}, got {shown}"
