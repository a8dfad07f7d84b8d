"""The submit form's adherence-probe inputs, as `train.adherence_probe` in YAML.

The probe generates a few suite prompts at checkpoints and may stop training
once the format has locked or collapsed (`jobs.experiment_spec.probe`). A switch turns it
on; zero in a number field means "the spec's default" (every checkpoint, the
eval's max tokens, no lock rule), so a filled form writes only what was set,
and the spec layer checks it with the same messages as a YAML spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs.experiment_spec.probe import AdherenceProbe

PREFIX = "train.adherence_probe."
ENABLED = PREFIX + "enabled"
SECTION = "Adherence probe"
_DEFAULTS = AdherenceProbe()

# key, label, kind, default, help: the form's FormField arguments
INPUTS: tuple[tuple[str, str, str, Any, str], ...] = (
    (ENABLED, "Probe adherence while training", "bool", False,
     "Generate a few suite prompts at checkpoints and keep the adherence curve."),
    (PREFIX + "prompts", "Probe prompts", "text", str(_DEFAULTS.prompts),
     "A count (the first N suite prompts) or suite prompt ids, comma-separated."),
    (PREFIX + "every", "Probe every", "int", 0,
     "Iterations between probes, a multiple of Save every; 0: at every checkpoint."),
    (PREFIX + "max_tokens", "Probe max tokens", "int", 0,
     "Tokens per probe response; 0: the eval's max tokens."),
    (PREFIX + "stop_when_locked", "Stop when locked at", "float", 0.0,
     "Stop training once probe adherence is at least this (e.g. 0.9) on `patience` "
     "probes in a row; 0: never."),
    (PREFIX + "stop_when_collapsed", "Stop when collapsed", "bool", False,
     "Stop training once every probe response loops or is empty on `patience` probes in a row."),
    (PREFIX + "patience", "Patience", "int", _DEFAULTS.patience,
     "Probes in a row a stop rule needs."),
)  # fmt: skip


def _prompts(text: str) -> int | list[str]:
    text = str(text or "").strip()
    if text.isdigit():
        return int(text)
    return [p.strip() for p in text.split(",") if p.strip()]


def probe_from_form(values: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `train.adherence_probe` mapping of the form's values; None when off."""
    if not values.get(ENABLED):
        return None
    probe: dict[str, Any] = {"prompts": _prompts(values[PREFIX + "prompts"]),
                             "patience": values[PREFIX + "patience"]}  # fmt: skip
    for name in ("every", "max_tokens", "stop_when_locked"):
        if values[PREFIX + name]:  # 0: the spec's default
            probe[name] = values[PREFIX + name]
    if values[PREFIX + "stop_when_collapsed"]:
        probe["stop_when_collapsed"] = True
    return probe


def probe_to_form(probe: Any) -> dict[str, Any]:
    """Form values for a spec's `train.adherence_probe` (absent: the switch off)."""
    if not isinstance(probe, Mapping):
        return {ENABLED: False}
    prompts = probe.get("prompts", _DEFAULTS.prompts)
    values: dict[str, Any] = {
        ENABLED: True,
        PREFIX + "prompts": ", ".join(map(str, prompts)) if isinstance(prompts, list)
        else str(prompts),
        PREFIX + "stop_when_collapsed": bool(probe.get("stop_when_collapsed", False)),
    }  # fmt: skip
    for name in ("every", "max_tokens", "stop_when_locked", "patience"):
        if probe.get(name) is not None:
            values[PREFIX + name] = probe[name]
    return values
