"""How the spec layer names a field and a value in its messages.

Every problem points at a field by its dotted path (`train.lora.rank`,
`quantize[0]`), shows the offending value the way it was written in YAML, and
suggests the closest valid key or option when there is one; the modules that
report problems (cross checks, pydantic messages, file checks) share these.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

Loc = tuple[str | int, ...]


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


def suggest(key: str, valid: Sequence[str]) -> str:
    """' — did you mean 'x'?' for the closest valid name, else ''."""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else ""


def got(value: Any) -> str:
    """A value as the user wrote it in YAML, short enough for one message line."""
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


def is_int(value: Any) -> bool:
    """A YAML whole number (YAML's true/false are bools, not numbers)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
