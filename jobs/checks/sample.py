"""Which dataset rows the content checks read: all of a small file, a fixed sample
of a big one.

Loading the data the way mlx-lm does needs every line, and `jobs.datasets` scans
every line for that. The content checks (call formats, tool share, duplicates,
leakage, system prompt, token lengths with the chat template) answer the same
question from two thousand rows as from a million, and rendering a million rows
with a tokenizer takes most of an hour. So they read the sample the scan keeps
(`jobs.row_sample`: the first rows and rows evenly spaced over the rest, the same
rows every time for the same file), and each finding drawn from it says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jobs.checks.examples import Example
from jobs.datasets import SPLITS, JsonlReport, iter_lines, parse_line
from jobs.row_sample import RowSample


@dataclass(frozen=True)
class SampledFile:
    """How much of one split file the content checks read."""

    file: str
    checked: int  # lines read
    lines: int  # lines in the file

    @property
    def is_sample(self) -> bool:
        return self.checked < self.lines

    def note(self) -> str:
        """'a sample of 2453 of 1000000 lines of train.jsonl, …', for a finding."""
        return (
            f"a sample of {self.checked} of {self.lines} lines of {Path(self.file).name}, "
            "the first lines and lines evenly spaced over the rest"
        )


def sample_file(path: Path) -> RowSample:
    """The sample of a file no scan has read yet, in one pass over it."""
    sample = RowSample()
    with path.open("rb") as fh:
        for line in iter_lines(fh):
            row, error = parse_line(line)
            sample.offer(line.number, None if error else row, line.size)
    return sample


def read_sample(
    dataset: Path, reports: Mapping[str, JsonlReport] | None = None
) -> tuple[list[Example], list[SampledFile]]:
    """The rows of train/valid/test.jsonl the content checks read, with their line
    numbers, and how many of each file's lines that is. `reports` are the dataset
    scan's (`jobs.datasets.check_dataset`), which kept the sample while reading;
    a file without one is read here."""
    examples: list[Example] = []
    files: list[SampledFile] = []
    for split in SPLITS:
        path = Path(dataset) / f"{split}.jsonl"
        if not path.is_file():
            continue
        report = (reports or {}).get(split)
        sample = report.sample if report is not None else sample_file(path)
        lines = report.rows if report is not None else sample.lines
        for number, row in sorted(sample.rows.items()):
            if isinstance(row, dict):
                examples.append(Example(str(path), number, split, row))
        files.append(SampledFile(str(path), len(sample.rows), max(lines, len(sample.rows))))
    return examples, files
