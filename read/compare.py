"""Comparing leaderboard configurations field by field.

A leaderboard row is a config fingerprint × variant. Its configuration is the
spec of the first experiment with that fingerprint, minus what the fingerprint
leaves out (name, seeds, resources): those differ between experiments that
pool into the same row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from jobs.db import Experiment
from jobs.experiment_spec.options import quant_variant

NOT_IN_FINGERPRINT = ("name", "seeds", "resources", "notify")


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lora': {'rank': 8}}} → {'train.lora.rank': 8}; lists become text."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path + "."))
        elif path == "quantize" and isinstance(value, list):
            out[path] = ", ".join(
                quant_variant(
                    q.get("mode") or "affine", q.get("bits"), q.get("group_size"), q.get("recipe")
                )
                for q in value
            )
        elif isinstance(value, list):
            out[path] = ", ".join(map(str, value))
        elif isinstance(value, Mapping):
            out[path] = "{}"
        else:
            out[path] = value
    return out


def config_specs(session: Session, fingerprints: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The spec of the first experiment of each fingerprint."""
    if not fingerprints:
        return {}
    first = (
        select(func.min(Experiment.id))
        .where(Experiment.fingerprint.in_(list(fingerprints)))  # type: ignore[attr-defined]
        .group_by(Experiment.fingerprint)
    )
    rows = session.execute(
        select(Experiment.fingerprint, Experiment.spec).where(Experiment.id.in_(first))  # type: ignore[union-attr]
    )
    return {fp: dict(spec) for fp, spec in rows}


def config_diff(
    columns: Sequence[tuple[str, Mapping[str, Any]]], only_differences: bool = False
) -> list[dict[str, Any]]:
    """One row per spec field: {field, <column label>: value…, differs}. `columns` pairs a
    label with a spec mapping; fields left out of the fingerprint are skipped."""
    flat = [
        (
            label,
            {k: v for k, v in flatten(spec).items() if k.split(".")[0] not in NOT_IN_FINGERPRINT},
        )
        for label, spec in columns
    ]
    keys: list[str] = []
    for _, values in flat:
        keys.extend(k for k in values if k not in keys)
    rows = []
    for key in keys:
        values = [values.get(key) for _, values in flat]
        differs = any(_norm(v) != _norm(values[0]) for v in values[1:])
        if only_differences and not differs:
            continue
        row: dict[str, Any] = {"field": key}
        for (label, _), value in zip(flat, values, strict=True):
            row[label] = "–" if value is None else str(value)
        row["differs"] = differs
        rows.append(row)
    return rows


def _norm(value: Any) -> Any:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def label_mix_long(rows: Sequence[tuple[str, Mapping[str, float]]]) -> list[dict[str, Any]]:
    """[(row label, {label: share})] → long format {config, label, share} for a stacked bar."""
    return [
        {"config": name, "label": label, "share": share}
        for name, mix in rows
        for label, share in mix.items()
    ]
