"""The submit form's sweep inputs: several values in one text field make a grid.

A sweep field holds comma-separated values (`1e-4, 2e-4`), each one grid
point; `sweep_from_form` turns the filled ones into the spec's
`sweep: {train.learning_rate: [...]}` mapping, which the spec layer then checks
like a `sweep:` written in YAML (same messages, same run limit). Each value is
read as YAML reads it, so `8` is a whole number and `1e-4` a float.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from jobs import limits
from jobs.experiment_spec import read_yaml
from jobs.experiment_spec.sweep import show_value
from jobs.problems import InputError
from web.seed_ranges import parse_seeds

PREFIX = "sweep."  # a sweep field's form key: PREFIX + the knob's dotted path
SECTION = "Sweep"

# The knobs the form can sweep (a YAML spec can sweep any): path, label. The
# labels differ from the single-value fields' so each names one input.
KNOBS: tuple[tuple[str, str], ...] = (
    ("train.learning_rate", "Swept learning rates"),
    ("train.lora.rank", "Swept LoRA ranks"),
    ("train.iters", "Swept iterations"),
    ("train.lora.scale", "Swept LoRA scales"),
    ("train.lora.dropout", "Swept LoRA dropouts"),
    ("train.num_layers", "Swept layers to adapt"),
)
EXAMPLES = {"train.learning_rate": "1e-4, 2e-4", "train.lora.rank": "8, 16"}


def help_text(path: str) -> str:
    example = EXAMPLES.get(path, "a, b, c")
    return (
        f"Several values, comma-separated — e.g. `{example}`: one grid point each, and every "
        f"point runs every seed. Overrides `{path}` above. Empty: not swept."
    )


def parse_values(text: str) -> list[Any]:
    """`1e-4, 2e-4` -> [0.0001, 0.0002]; ValueError says which piece is not a value."""
    out: list[Any] = []
    for piece in (p.strip() for p in str(text or "").split(",")):
        if not piece:
            continue
        try:
            _, value = read_yaml(piece, "form")
        except InputError as exc:  # a limit, or not YAML at all
            raise ValueError(f"'{limits.shorten(piece)}': {exc.problems[0].message}") from None
        if isinstance(value, list | dict) or value is None:
            raise ValueError(f"'{limits.shorten(piece)}' is not a single value")
        out.append(value)
    return out


def sweep_from_form(
    values: Mapping[str, Any],
) -> tuple[dict[str, list[Any]], list[tuple[str, str]]]:
    """The spec's sweep mapping from the filled sweep fields, and (form key, message)
    for each field that does not parse."""
    sweep: dict[str, list[Any]] = {}
    problems: list[tuple[str, str]] = []
    for path, _ in KNOBS:
        text = str(values.get(PREFIX + path) or "")
        try:
            parsed = parse_values(text)
        except ValueError as exc:
            problems.append((PREFIX + path, str(exc)))
            continue
        if parsed:
            sweep[path] = parsed
    return sweep, problems


def sweep_to_form(sweep: Any) -> tuple[dict[str, str], list[str]]:
    """Sweep field texts for a spec's sweep mapping, and notes on knobs the form lacks."""
    if not isinstance(sweep, Mapping):
        return {}, ([] if sweep is None else ["'sweep' is not a mapping; left out"])
    known = {path for path, _ in KNOBS}
    texts, notes = {}, []
    for path, values in sweep.items():
        if path in known and isinstance(values, list):
            texts[PREFIX + path] = ", ".join(show_value(v) for v in values)
        else:
            notes.append(f"sweep of '{path}' is not one the form offers; left out")
    return texts, notes


def run_count_text(values: Mapping[str, Any]) -> str:
    """`12 runs: 4 grid points × 3 seeds` for the form as filled, counted without
    validating anything else; a refusal names the limit, as submitting would."""
    try:
        seeds = len(parse_seeds(str(values.get("seeds", ""))))
    except ValueError:
        return "runs: fix the seeds first"
    sweep, problems = sweep_from_form(values)
    if problems:
        return "runs: fix the sweep values first"
    points = math.prod(len(v) for v in sweep.values())
    runs = limits.planned_runs(seeds, points)
    text = f"{runs} runs: {points} grid points × {seeds} seeds" if sweep else f"{runs} runs"
    problem = limits.runs_problem(seeds, points)
    return f"{text} — refused: {problem}" if problem else text
