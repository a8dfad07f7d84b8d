"""Which dataset rows the content checks read: all of a small file, a fixed sample
of a big one.

Loading the data the way mlx-lm does needs every line, and `jobs.datasets` scans
every line for that. The content checks (call formats, tool share, duplicates,
leakage, system prompt, token lengths with the chat template) answer the same
question from two thousand rows as from a million, and rendering a million rows
with a tokenizer takes most of an hour. So they read the first HEAD_ROWS lines
and SPREAD_ROWS lines evenly spaced over the rest: the same lines every time for
the same file, so two checks of one dataset agree, and each finding drawn from
them says it came from a sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jobs.checks.examples import Example
from jobs.datasets import SPLITS, iter_lines, parse_line

HEAD_ROWS = 500
SPREAD_ROWS = 1500


@dataclass(frozen=True)
class SampledFile:
    """How much of one split file the content checks read."""

    file: str
    checked: int  # lines read (rows that do not parse are left to the loading check)
    lines: int  # lines in the file

    @property
    def is_sample(self) -> bool:
        return self.checked < self.lines

    def note(self) -> str:
        """'a sample of 2000 of 1000000 lines of train.jsonl, the first 500 and the
        rest evenly spaced', for a finding."""
        return (
            f"a sample of {self.checked} of {self.lines} lines of {Path(self.file).name}, "
            f"the first {min(HEAD_ROWS, self.checked)} and the rest evenly spaced"
        )


def sample_lines(total: int, head: int = HEAD_ROWS, spread: int = SPREAD_ROWS) -> set[int]:
    """Line numbers (from 1) to read of a file of `total` lines: every line when it
    has at most head + spread, else the first `head` and `spread` evenly spaced
    over the rest, the last line included."""
    if total <= head + spread:
        return set(range(1, total + 1))
    rest = total - head
    spaced = {head + 1 + (i * (rest - 1)) // max(spread - 1, 1) for i in range(spread)}
    return set(range(1, head + 1)) | spaced


def count_lines(path: Path) -> int:
    """Lines of a file as mlx-lm counts them (its dataset has one row per line)."""
    with path.open("rb") as fh:
        return sum(1 for _ in iter_lines(fh))


def read_sample(
    dataset: Path, lines: Mapping[str, int] | None = None
) -> tuple[list[Example], list[SampledFile]]:
    """The rows of train/valid/test.jsonl the content checks read, with their line
    numbers, and how many of each file's lines that is. `lines` is each split's
    line count when a scan already knows it (else the file is counted first)."""
    examples: list[Example] = []
    files: list[SampledFile] = []
    for split in SPLITS:
        path = Path(dataset) / f"{split}.jsonl"
        if not path.is_file():
            continue
        total = (lines or {}).get(split)
        total = count_lines(path) if total is None else total
        wanted = sample_lines(total)
        last = max(wanted, default=0)
        read = 0
        with path.open("rb") as fh:
            for line in iter_lines(fh):
                if line.number > last:
                    break
                if line.number not in wanted:
                    continue
                read += 1
                row, error = parse_line(line)
                if error is None and isinstance(row, dict):
                    examples.append(Example(str(path), line.number, split, row))
        files.append(SampledFile(str(path), read, max(total, read)))
    return examples, files
