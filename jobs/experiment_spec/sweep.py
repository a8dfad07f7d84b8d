"""Sweeps: one spec with a `sweep:` section expanded into its grid of specs.

`sweep: {train.learning_rate: [1e-4, 2e-4], train.lora.rank: [8, 16]}` asks for
the cartesian product of the listed values (4 grid points); every grid point
runs every seed in `seeds:`, so the submission holds points × seeds runs, and
that count is held to `limits.MAX_RUNS` before any point is built. Each point
is an ordinary spec (validated like one, its own config fingerprint), so it
pools on the leaderboard with any other experiment of the same config.

Pure: a spec in, `(point, spec)` pairs out, or an InputError whose problems
point at the YAML line of the offending sweep key or value.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from jobs import limits
from jobs.experiment_spec.messages import error_message
from jobs.experiment_spec.model import ExperimentSpec
from jobs.experiment_spec.parse import parse_spec, spec_file_text
from jobs.experiment_spec.words import Loc, dotted, got, suggest
from jobs.experiment_spec.yaml_source import LineOf, read_yaml, yaml_locator
from jobs.problems import InputError, Problem

# A grid point: dotted knob path → the value it takes there.
SweepPoint = dict[str, Any]

SWEEP_EXAMPLE = "{train.learning_rate: [1e-4, 2e-4], train.lora.rank: [8, 16]}"

# Fields that are not knobs of one config, and why (the message says what to do instead).
NOT_KNOBS = {
    "seeds": "seeds are not a knob: every grid point already runs every seed in `seeds:` — "
    "list them there",
    "name": "the name is not a knob: each grid point gets its own name from the sweep's",
    "sweep": "a sweep cannot sweep itself",
    # Paths name files; a sweep varies the knobs of one dataset, suite and model.
    "base_model": "base_model names a model, not a knob — submit one spec per base model",
    "dataset": "dataset names files, not a knob — submit one spec per dataset",
    "eval.suite": "eval.suite names a file, not a knob — submit one spec per suite",
}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (through `X | None`), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):  # not list[Model]: a list is one knob
        for arg in get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def knob_paths(model: type[BaseModel] = ExperimentSpec, prefix: str = "") -> list[str]:
    """Every dotted path a sweep may name: the spec's leaf fields, read from the
    models (so a field added to the spec can be swept at once), minus NOT_KNOBS."""
    out: list[str] = []
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        inner = _model_of(info.annotation)
        if inner is not None:
            out.extend(knob_paths(inner, path + "."))
        elif path not in NOT_KNOBS:
            out.append(path)
    return out


KNOB_PATHS = tuple(knob_paths())


def _value_key(value: Any) -> str:
    # Equal values written alike are one grid point; true and 1 are not equal here.
    return json.dumps(value, sort_keys=True, default=str) + type(value).__name__


def grid_size(sweep: Mapping[str, Any]) -> int:
    """Grid points of a sweep: the product of its value counts (counted, never built)."""
    return math.prod(len(v) if isinstance(v, list) else 1 for v in sweep.values())


def sweep_problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """What is wrong with the `sweep:` of a spec mapping (raw YAML or a dump), each at
    the location of its key or value; the run count (points × seeds) against the limit."""
    sweep = data.get("sweep")
    if sweep is None:
        return []
    if not isinstance(sweep, Mapping):
        return [
            (("sweep",), f"must be a mapping of knob paths to value lists, e.g. {SWEEP_EXAMPLE}")
        ]
    out: list[tuple[Loc, str]] = []
    if not sweep:
        out.append((("sweep",), f"is empty — name at least one knob, e.g. {SWEEP_EXAMPLE}"))
    for key, values in sweep.items():
        where: Loc = ("sweep", str(key))
        if not isinstance(key, str):
            out.append((where, f"a knob is a dotted path like train.learning_rate, got {got(key)}"))
            continue
        if key in NOT_KNOBS:
            out.append((where, NOT_KNOBS[key]))
        elif key not in KNOB_PATHS:
            out.append((where, f"unknown knob '{key}'{suggest(key, KNOB_PATHS)}"))
        if not isinstance(values, list):
            out.append((where, f"must be a list of values, e.g. [1e-4, 2e-4], got {got(values)}"))
            continue
        if not values:
            out.append((where, "is empty — give at least one value"))
        first: dict[str, int] = {}
        for i, value in enumerate(values):
            seen = first.setdefault(_value_key(value), i)
            if seen != i:
                out.append(
                    (
                        (*where, i),
                        f"value {got(value)} is listed twice (also {dotted((*where, seen))}) — "
                        "each value is one grid point; remove the duplicate",
                    )
                )
    seeds = data.get("seeds")
    if isinstance(seeds, list) and len(seeds) <= limits.MAX_SEEDS:
        problem = limits.runs_problem(len(seeds), grid_size(sweep))
        if problem:
            out.append((("sweep",), problem))
    return out


def point_label(point: Mapping[str, Any]) -> str:
    """`learning_rate=0.0001, rank=8`: a point as people read it (last path parts)."""
    return ", ".join(f"{short_knob(k, point)}={show_value(v)}" for k, v in point.items())


def short_knob(path: str, others: Mapping[str, Any] | None = None) -> str:
    """The last part of a knob path, or the whole path when two swept knobs share it."""
    last = path.rsplit(".", 1)[-1]
    clash = [k for k in (others or {}) if k != path and k.rsplit(".", 1)[-1] == last]
    return path if clash else last


def show_value(value: Any) -> str:
    """A swept value as names, tables and charts show it."""
    return json.dumps(value, default=str) if isinstance(value, list | dict) else str(value)


def point_name(base: str, point: Mapping[str, Any], index: int) -> str:
    """A grid point's experiment name: the sweep's name and its values
    (`lr-rank.learning_rate-0.0001.rank-8`), or `.p<N>` when that would not fit."""
    parts = [f"{short_knob(k, point)}-{show_value(v)}" for k, v in point.items()]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", ".".join([base, *parts])).strip("_")
    if len(name) <= limits.MAX_NAME_CHARS:
        return name
    tail = f".p{index + 1}"
    return base[: limits.MAX_NAME_CHARS - len(tail)] + tail


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        child = data.get(part)
        if not isinstance(child, dict):
            child = data[part] = {}  # e.g. fuse: null, swept fuse.dequantize
        data = child
    data[last] = copy.deepcopy(value)


def expand_sweep(
    spec: ExperimentSpec, *, source: str = "<spec>", line_of: LineOf | None = None
) -> list[tuple[SweepPoint, ExperimentSpec]]:
    """The grid of a spec: one (point, spec) per combination of swept values, in the
    order written (the last knob varies fastest). A spec without a sweep is a grid
    of one point, `({}, spec)`. Raises InputError with every problem, each at its
    YAML line when `line_of` locates the spec's text (`yaml_locator`)."""

    def problem(loc: Loc, message: str) -> Problem:
        return Problem(source, message, (line_of(loc) if line_of else None), dotted(loc))

    if spec.sweep is None:
        return [({}, spec)]
    found = sweep_problems({"sweep": spec.sweep, "seeds": spec.seeds})
    found.extend(_schedule_problems(spec))
    if found:
        raise InputError([problem(loc, msg) for loc, msg in found])

    base = spec.model_dump(by_alias=True, exclude={"sweep"})
    axes = list(spec.sweep.items())
    grid: list[tuple[SweepPoint, ExperimentSpec]] = []
    problems: list[Problem] = []
    for index, picks in enumerate(itertools.product(*(range(len(v)) for _, v in axes))):
        point = {path: values[i] for (path, values), i in zip(axes, picks, strict=True)}
        data = copy.deepcopy(base)
        for path, value in point.items():
            _set(data, path, value)
        data["name"] = point_name(spec.name, point, index)
        try:
            grid.append((point, ExperimentSpec.model_validate(data)))
        except ValidationError as exc:
            for err in exc.errors():
                loc = _blame(tuple(err["loc"]), axes, picks)
                message = error_message(err)
                if loc == ("sweep",):  # the combination, not one value, is wrong
                    message = f"grid point {point_label(point)}: {message}"
                problems.append(problem(loc, message))
    if problems:
        raise InputError(list(dict.fromkeys(problems)))
    return grid


def _blame(err_loc: Loc, axes: list[tuple[str, list[Any]]], picks: tuple[int, ...]) -> Loc:
    """The sweep value a point's validation error comes from: the swept knob whose
    path the error is at (or under), else the sweep as a whole."""
    at = dotted(err_loc)
    for (path, _), i in zip(axes, picks, strict=True):
        if at == path or at.startswith(path + ".") or at.startswith(path + "["):
            return ("sweep", path, i)
    return ("sweep",)


def _schedule_problems(spec: ExperimentSpec) -> list[tuple[Loc, str]]:
    # Next to a schedule mlx-lm ignores learning_rate: every point would train alike.
    if spec.train.lr_schedule is None or "train.learning_rate" not in (spec.sweep or {}):
        return []
    return [
        (
            ("sweep", "train.learning_rate"),
            "is ignored when train.lr_schedule is set (every point would train alike) — "
            "sweep train.lr_schedule.arguments instead, or remove the schedule",
        )
    ]


def parse_sweep(
    text: str, source: str = "<spec>", base_dir: Path | None = None, check_files: bool = True
) -> tuple[ExperimentSpec, list[tuple[SweepPoint, ExperimentSpec]]]:
    """`parse_spec` and then `expand_sweep`, with the problems of both reported at
    once, each at its line: the spec and its grid (one point without a sweep)."""
    try:
        _, raw = read_yaml(text, source)
    except InputError:
        raw = None  # parse_spec reports it
    line_of = yaml_locator(text)
    own = sweep_problems(raw) if isinstance(raw, Mapping) else []
    problems = [Problem(source, msg, line_of(loc), dotted(loc)) for loc, msg in own]
    try:
        spec = parse_spec(text, source=source, base_dir=base_dir, check_files=check_files)
    except InputError as exc:
        # The sweep's own wording wins over pydantic's for the same sweep field.
        mine = {p.field for p in problems}
        problems.extend(p for p in exc.problems if p.field not in mine)
        problems.sort(key=lambda p: (p.file != source, p.line or 0))
        raise InputError(problems) from None
    if problems:
        raise InputError(problems)
    return spec, expand_sweep(spec, source=source, line_of=line_of)


def load_sweep(
    path: Path, check_files: bool = True
) -> tuple[ExperimentSpec, list[tuple[SweepPoint, ExperimentSpec]]]:
    """`parse_sweep` for a spec file (relative paths against its folder), as `load_spec`."""
    path = Path(path)
    text = spec_file_text(path)
    return parse_sweep(text, source=str(path), base_dir=path.parent, check_files=check_files)
