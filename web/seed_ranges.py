"""Seeds written as ranges in the form: '1-5, 8' ⇄ [1, 2, 3, 4, 5, 8], bounded."""

from __future__ import annotations

import re
from collections.abc import Sequence

from jobs import limits
from jobs.limits import MAX_SEEDS


def parse_seeds(text: str) -> list[int]:
    """'1-5, 8' → [1, 2, 3, 4, 5, 8]; also '[1, 2, 3]' and '1 2 3'. Raises ValueError."""
    body = text.strip().removeprefix("[").removesuffix("]")
    parts = [p for p in re.split(r"[,\s]+", body) if p]
    if not parts:
        raise ValueError("give at least one seed, e.g. `1-3`")
    ranges: list[tuple[int, int]] = []
    for part in parts:
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            if part.startswith("-"):
                raise ValueError(f"'{limits.shorten(part)}': seeds are whole numbers ≥ 0")
            raise ValueError(f"'{limits.shorten(part)}' is not a seed or a range like 1-5")
        for digits in match.groups():
            too_long = limits.number_too_long(digits or "")
            if too_long:
                raise ValueError(too_long)
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise ValueError(f"range '{part}' runs backwards — write {high}-{low}")
        ranges.append((low, high))
    # Counted before any list is built: '1-99999999999' must cost nothing. A seed
    # above 2^32-1 is left to the spec, so its message is the CLI's word for word.
    count = sum(high - low + 1 for low, high in ranges)
    if count > MAX_SEEDS:
        raise ValueError(limits.too_many(count, "seeds", MAX_SEEDS))
    return [seed for low, high in ranges for seed in range(low, high + 1)]


def format_seeds(seeds: Sequence[int]) -> str:
    """[1, 2, 3, 5] → '1-3, 5' (the inverse of parse_seeds for sorted seeds)."""
    parts: list[str] = []
    i = 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if j - i < 2 else f"{seeds[i]}-{seeds[j]}")
        if j - i == 1:
            parts.append(str(seeds[j]))
        i = j + 1
    return ", ".join(parts)
