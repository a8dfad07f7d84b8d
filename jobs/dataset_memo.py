"""The last few dataset folder checks, kept while their files are unchanged.

`farm check`, `farm submit` and the web form validate the spec (which checks the
dataset as mlx-lm loads it) and then run the preflight (which needs the same
check): scanning a million lines takes seconds, so the second asks here and gets
the first's result, as long as every split file has the same size and
modification time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.datasets import SPLITS, DatasetCheck, check_dataset

KEPT = 4
_recent: dict[tuple[Any, ...], DatasetCheck] = {}


def stamp(directory: Path, batch_size: int | None, mask_prompt: bool) -> tuple[Any, ...] | None:
    """What a check's result depends on: the folder, each split file's size and
    modification time, and the knobs; None when the folder cannot be resolved."""
    try:
        where = Path(directory).resolve()
    except (OSError, ValueError):
        return None
    files: list[tuple[str, int, int]] = []
    for split in SPLITS:
        try:
            stat = (where / f"{split}.jsonl").stat()
        except OSError:
            continue
        files.append((split, stat.st_size, stat.st_mtime_ns))
    return (str(where), tuple(files), batch_size, mask_prompt)


def checked_dataset(directory: Path, batch_size: int | None, mask_prompt: bool) -> DatasetCheck:
    """`jobs.datasets.check_dataset`, or its recent result for unchanged files."""
    key = stamp(directory, batch_size, mask_prompt)
    if key is not None and key in _recent:
        return _copy(_recent[key])
    result = check_dataset(directory, batch_size, mask_prompt)
    if key is not None:
        while len(_recent) >= KEPT:
            _recent.pop(next(iter(_recent)))
        _recent[key] = _copy(result)
    return result


def _copy(check: DatasetCheck) -> DatasetCheck:
    """A copy whose lists the caller may extend without changing the kept result."""
    return DatasetCheck(
        dict(check.reports), list(check.problems), list(check.spec_problems), list(check.warnings)
    )
