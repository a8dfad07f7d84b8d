"""JSONL dataset validation that agrees with how mlx-lm loads and trains on the data.

mlx-lm (`mlx_lm/tuner/datasets.py`, `trainer.py`) does this with a dataset folder:

* it reads train.jsonl, valid.jsonl and test.jsonl, each that exists, as UTF-8 text
  (universal newlines) and runs `json.loads` on EVERY line, even when it only
  trains and never uses test.jsonl: a BOM, a blank line or a broken line in any
  of them stops the run;
* it picks ONE dataset class per file from the keys of the file's FIRST row:
  ``prompt`` + ``completion`` -> completions, else ``messages`` -> chat (we call a
  chat file with ``tools`` lists "tools"), else ``text`` -> text. An empty file, or
  a first row with none of those keys, stops the run; so does ``text`` with
  ``mask_prompt``;
* while training it renders each train/valid row with the class of its file, so a
  later row that lacks that class's keys fails only when the trainer reaches it;
  test.jsonl's rows are never rendered by a training run;
* a missing valid.jsonl only prints a warning: training runs without validation;
* train.jsonl and valid.jsonl each need at least `batch_size` rows.

Whether a message's role and content render is up to the model's chat template,
so that is checked with the tokenizer (`jobs.checks.measure_examples`), not here.

Lines are read in bounded chunks: a line over MAX_LINE_BYTES is refused without
ever being held in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from jobs.limits import MAX_DATASET_FILE_BYTES, file_size_problem
from jobs.lines import CHUNK as _CHUNK
from jobs.lines import MAX_LINE_BYTES, MB, Line, iter_lines
from jobs.problems import Problem
from jobs.row_sample import RowSample

__all__ = ["MAX_LINE_BYTES", "MB", "Line", "iter_lines"]  # read from here by the checks

FORMATS = ("chat", "tools", "completions", "text")
SPLITS = ("train", "valid", "test")
# Row problems reported per file before the rest are summarised in one line.
MAX_ROW_PROBLEMS = 20
_BOM = "\ufeff"
# The keys each of mlx-lm's dataset classes reads from every row.
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "completions": ("prompt", "completion"),
    "chat": ("messages",),
    "text": ("text",),
}
_TEST_NOTE = (
    " — a training run never reads test.jsonl's rows (only `mlx_lm lora --test` "
    "would fail on this one), so it does not stop training"
)


# --------------------------------------------------------------------------- reading lines


def _megabytes(size: int, limit: int = MAX_LINE_BYTES) -> str:
    value = size / MB
    text = f"{value:.0f}" if value >= 10 else f"{value:.1f}".removesuffix(".0")
    if size > limit and float(text) * MB <= limit:
        # Rounded down to the limit: show enough digits that it is visibly over.
        text = f"{math.ceil(value * 1000) / 1000:.3f}"
    return text


def parse_line(line: Line) -> tuple[Any, str | None]:
    """(the row, None), or (None, why mlx-lm's `json.loads` of this line fails)."""
    if line.data is None:
        return None, (
            f"line is {_megabytes(line.size)} MB, at most {_megabytes(MAX_LINE_BYTES)} MB"
        )
    try:
        text = line.data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "line is not valid UTF-8 — save the file as UTF-8"
    if not text.strip():
        return None, "blank line — mlx-lm parses every line as JSON; remove it"
    if text.startswith(_BOM):
        return None, (
            "line starts with a UTF-8 byte-order mark (BOM), which mlx-lm's JSON "
            "parser refuses — save the file as UTF-8 without BOM"
        )
    try:
        # A str, not bytes: json.loads would skip a BOM in bytes, mlx-lm's text does not.
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} (column {exc.colno})"


# --------------------------------------------------------------------------- rows (pure)


def loader_kind(row: Any) -> str | None:
    """The dataset class mlx-lm picks for a file whose first row is `row`
    ("completions", "chat" or "text"), or None when it picks none."""
    if not isinstance(row, dict):
        return None
    if "prompt" in row and "completion" in row:
        return "completions"
    if "messages" in row:
        return "chat"
    if "text" in row:
        return "text"
    return None


def row_format(row: dict[str, Any]) -> str | None:
    """The farm's name for a row's format: a chat row with tools is "tools"."""
    kind = loader_kind(row)
    return "tools" if kind == "chat" and "tools" in row else kind


def _shape(value: Any) -> str:
    names = {
        str: "a string",
        dict: "an object",
        list: "a list",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _keys(kind: str) -> str:
    return " + ".join(repr(k) for k in KIND_KEYS[kind])


def _check_tools(tools: Any) -> list[tuple[str, str]]:
    # The tokenizer refuses anything but a list of JSON schemas (null means none).
    if tools is None:
        return []
    if not isinstance(tools, list):
        return [("tools", f"must be a list of tool schemas, got {_shape(tools)}")]
    return [
        (f"tools[{i}]", f"must be an object (a tool schema), got {_shape(tool)}")
        for i, tool in enumerate(tools)
        if not isinstance(tool, dict)
    ]


def _check_messages(messages: Any, mask_prompt: bool) -> list[tuple[str, str]]:
    """Errors mlx-lm hits for any chat template: the template renders the roles and
    contents, so those are the tokenizer check's business."""
    if not isinstance(messages, list):
        return [("messages", f"must be a list of messages, got {_shape(messages)}")]
    if not messages:
        return [("messages", "is empty — mlx-lm cannot render an empty conversation")]
    out = [
        (f"messages[{i}]", f"must be an object with 'role' and 'content', got {_shape(m)}")
        for i, m in enumerate(messages)
        if not isinstance(m, dict)
    ]
    if mask_prompt and len(messages) == 1:
        # mlx-lm renders messages[:-1] to find where the prompt ends.
        out.append(
            (
                "messages",
                "has one message, and with mask_prompt mlx-lm renders everything before "
                "the last message as the prompt: an empty conversation it cannot render — "
                "add the prompt, or set `mask_prompt: false`",
            )
        )
    return out


def _message_warnings(messages: Any, mask_prompt: bool) -> list[tuple[str, str]]:
    """What mlx-lm will do with a conversation that has no assistant reply to learn."""
    if not isinstance(messages, list) or not messages:
        return []
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if mask_prompt:
        if roles[-1] == "assistant" or len(messages) < 2:
            return []
        return [
            (
                f"messages[{len(messages) - 1}]",
                f"is a {roles[-1]!r} turn, not the assistant's — with mask_prompt "
                "mlx-lm trains only on the last message, so this row teaches the "
                f"model to write the {roles[-1]!r} turn",
            )
        ]
    if "assistant" in roles:
        return []
    return [
        (
            "messages",
            "has no assistant message — mlx-lm trains on the whole conversation as "
            "plain text; add the reply if the model should learn one",
        )
    ]


def check_row(row: dict[str, Any], kind: str, mask_prompt: bool = False) -> list[tuple[str, str]]:
    """(field, message) for what fails when mlx-lm renders `row` as a `kind` row,
    whatever the model's chat template."""
    missing = [k for k in KIND_KEYS[kind] if k not in row]
    if missing:
        return [("", f"has no {' or '.join(repr(k) for k in missing)}")]
    if kind == "chat":
        return _check_messages(row["messages"], mask_prompt) + _check_tools(row.get("tools"))
    if kind == "completions":
        return _check_tools(row.get("tools"))
    text = row["text"]
    if not isinstance(text, str):
        return [("text", f"must be a string, got {_shape(text)}")]
    return []


def row_warnings(
    row: dict[str, Any], kind: str, mask_prompt: bool = False
) -> list[tuple[str, str]]:
    """(field, message) for a row mlx-lm trains on in a way its author may not expect."""
    if kind == "chat" and "messages" in row:
        return _message_warnings(row["messages"], mask_prompt)
    return []


def _unknown_first_row(row: dict[str, Any]) -> str:
    if "prompt" in row:
        return "has 'prompt' but no 'completion' — completions rows need both"
    if "completion" in row:
        return "has 'completion' but no 'prompt' — completions rows need both"
    keys = ", ".join(repr(k) for k in list(row)[:5]) or "no keys"
    return (
        f"row has {keys} but none of the keys mlx-lm picks a format by: 'messages' "
        "(chat/tools), 'prompt' + 'completion' (completions) or 'text' (text)"
    )


def _deviation(row: Any, kind: str, first_line: int, missing: str) -> str:
    other = row_format(row) if isinstance(row, dict) else None
    what = f"row is '{other}' format" if other else f"row {missing}"
    return (
        f"{what} but line {first_line} is '{kind}' — mlx-lm reads every row of a file "
        f"in the format of its first row, so this row needs {_keys(kind)}"
    )


# --------------------------------------------------------------------------- one file


@dataclass
class JsonlReport:
    """What a scan of one JSONL file found."""

    path: Path
    format: str = ""  # "" when mlx-lm would pick no format (empty file, bad first row)
    rows: int = 0  # lines: mlx-lm's dataset has one entry per line
    problems: list[Problem] = field(default_factory=list)  # mlx-lm fails on these
    warnings: list[Problem] = field(default_factory=list)  # it trains, maybe not as meant
    sample: RowSample = field(default_factory=RowSample)  # rows the content checks read


class _Collector:
    """Problems and warnings of one file, the row-level ones capped at MAX_ROW_PROBLEMS."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.dropped = {"problems": 0, "warnings": 0}
        self.deviating = 0
        self.first_deviation: Problem | None = None

    def add(self, problem: Problem, warning: bool = False) -> None:
        kind = "warnings" if warning else "problems"
        target = self.warnings if warning else self.problems
        if len(target) < MAX_ROW_PROBLEMS:
            target.append(problem)
        else:
            self.dropped[kind] += 1

    def deviation(self, problem: Problem) -> None:
        self.deviating += 1
        if self.first_deviation is None:
            self.first_deviation = problem

    def finish(self, rows_are_read: bool) -> tuple[list[Problem], list[Problem]]:
        problems, warnings = list(self.problems), list(self.warnings)
        if self.first_deviation is not None:
            first = self.first_deviation
            more = f" ({self.deviating} rows deviate)" if self.deviating > 1 else ""
            note = "" if rows_are_read else _TEST_NOTE
            deviation = Problem(first.file, first.message + more + note, first.line, first.field)
            (problems if rows_are_read else warnings).insert(0, deviation)
        for kind, target in (("problems", problems), ("warnings", warnings)):
            if self.dropped[kind]:
                target.append(
                    Problem(self.file, f"... and {self.dropped[kind]} more row {kind} not listed")
                )
        for target in (problems, warnings):
            target.sort(key=lambda p: p.line if p.line is not None else float("inf"))
        return problems, warnings


def scan_jsonl(path: Path, split: str = "train", mask_prompt: bool = False) -> JsonlReport:
    """Stream one split file once, in bounded chunks, the way mlx-lm loads it.

    Lines that do not parse and a first row mlx-lm picks no format from are problems
    in every split. Rows mlx-lm would fail to render are problems in train and valid,
    and warnings in test, whose rows a training run never renders."""
    report = JsonlReport(path=path)
    file = str(path)
    rows_are_read = split != "test"
    out = _Collector(file)
    kind, first_line, has_tools = "", 0, False
    try:
        fh = path.open("rb")
        too_big = oversized_problem(path, _size(fh))
    except OSError as exc:
        report.problems.append(Problem(file, f"cannot read file: {exc.strerror or exc}"))
        return report
    if too_big is not None:
        fh.close()
        report.problems.append(too_big)
        return report
    with fh:
        for line in iter_lines(fh):
            report.rows += 1
            row, error = parse_line(line)
            if error:
                out.add(Problem(file, error, line.number))
                continue
            report.sample.offer(line.number, row, line.size)
            if not kind and first_line == 0:
                first_line = line.number
                kind = _first_row(row, file, line.number, out)
                if not kind:
                    continue
            elif not kind:
                continue  # the first row already stops mlx-lm
            has_tools = has_tools or (kind == "chat" and isinstance(row, dict) and "tools" in row)
            _check_row_at(row, kind, first_line, mask_prompt, rows_are_read, file, line, out)
    if report.rows == 0:
        report.problems.append(
            Problem(file, "file is empty — mlx-lm needs at least one JSON row per line")
        )
        return report
    report.format = "tools" if kind == "chat" and has_tools else kind
    report.problems, report.warnings = out.finish(rows_are_read)
    return report


def _size(fh: BinaryIO) -> int:
    return os.fstat(fh.fileno()).st_size


def oversized_problem(path: Path, size: int) -> Problem | None:
    """A split file over MAX_DATASET_FILE_BYTES, refused before a line is read."""
    message = file_size_problem(
        f"{path.name} is too big to check: the file", size, MAX_DATASET_FILE_BYTES
    )
    if message is None:
        return None
    return Problem(str(path), message + " — split the data or train on a subset")


def _first_row(row: Any, file: str, number: int, out: _Collector) -> str:
    """The file's kind from its first row, or "" after reporting why mlx-lm picks none."""
    if not isinstance(row, dict):
        out.add(Problem(file, f"row must be a JSON object, got {_shape(row)}", number))
        return ""
    kind = loader_kind(row)
    if kind is None:
        out.add(Problem(file, _unknown_first_row(row), number))
        return ""
    return kind


def _check_row_at(
    row: Any,
    kind: str,
    first_line: int,
    mask_prompt: bool,
    rows_are_read: bool,
    file: str,
    line: Line,
    out: _Collector,
) -> None:
    note = "" if rows_are_read else _TEST_NOTE
    if not isinstance(row, dict):
        message = f"row must be a JSON object, got {_shape(row)}{note}"
        out.add(Problem(file, message, line.number), warning=not rows_are_read)
        return
    missing = [k for k in KIND_KEYS[kind] if k not in row]
    if missing:
        listed = " or ".join(repr(k) for k in missing)
        out.deviation(
            Problem(file, _deviation(row, kind, first_line, f"has no {listed}"), line.number)
        )
        return
    for where, message in check_row(row, kind, mask_prompt):
        problem = Problem(file, f"{kind} row: {message}{note}", line.number, where)
        out.add(problem, warning=not rows_are_read)
    if rows_are_read:
        for where, message in row_warnings(row, kind, mask_prompt):
            out.add(Problem(file, f"{kind} row: {message}", line.number, where), warning=True)


def validate_jsonl(
    path: Path, split: str = "train", mask_prompt: bool = False
) -> tuple[str, list[Problem]]:
    """The mlx-lm format of a JSONL file ("chat", "tools", "completions", "text", or ""
    when mlx-lm would pick none) and every problem mlx-lm would fail on."""
    report = scan_jsonl(path, split, mask_prompt)
    return report.format, report.problems


# --------------------------------------------------------------------------- the folder


Loc = tuple[str | int, ...]


@dataclass
class DatasetCheck:
    """A dataset folder checked against mlx-lm: problems in the files, problems of the
    spec's knobs (located in the spec by `Loc`), and warnings."""

    reports: dict[str, JsonlReport] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    spec_problems: list[tuple[Loc, str]] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def check_dataset(directory: Path, batch_size: int | None, mask_prompt: bool) -> DatasetCheck:
    """Scan train/valid/test.jsonl of a dataset folder and check them together (a
    file over MAX_DATASET_FILE_BYTES is refused unread; `jobs.dataset_memo` keeps
    recent results)."""
    directory = Path(directory)
    result = DatasetCheck()
    oversized = [
        problem
        for split in SPLITS
        if (file := directory / f"{split}.jsonl").is_file()
        and (problem := oversized_problem(file, file.stat().st_size)) is not None
    ]
    if oversized:  # refused unread: nothing else about the folder is known
        result.problems += oversized
        return result
    for split in SPLITS:
        file = directory / f"{split}.jsonl"
        if file.is_file():
            report = scan_jsonl(file, split, mask_prompt)
            result.reports[split] = report
            result.problems += report.problems
            result.warnings += report.warnings
    if "train" not in result.reports:
        result.spec_problems.append(
            (("dataset",), f"missing {directory / 'train.jsonl'} — mlx-lm needs a training set")
        )
    formats = {split: r.format for split, r in result.reports.items() if r.format}
    rows = {split: r.rows for split, r in result.reports.items()}
    result.spec_problems += knob_problems(formats, rows, batch_size, mask_prompt)
    result.warnings += folder_warnings(directory, formats, "valid" in result.reports)
    return result


def knob_problems(
    formats: dict[str, str], rows: dict[str, int], batch_size: int | None, mask_prompt: bool
) -> list[tuple[Loc, str]]:
    """Spec knobs mlx-lm cannot train with on these files."""
    out: list[tuple[Loc, str]] = []
    text = [split for split, fmt in formats.items() if fmt == "text"]
    if mask_prompt and text:
        # create_dataset raises for every split it loads, test.jsonl included.
        out.append(
            (
                ("train", "mask_prompt"),
                f"mask_prompt needs chat, tools or completions data, but {text[0]}.jsonl "
                "is 'text' format — set `mask_prompt: false` or convert the data",
            )
        )
    if batch_size is not None:
        for split in ("train", "valid"):
            if 0 < rows.get(split, 0) < batch_size:
                out.append(
                    (
                        ("train", "batch_size"),
                        f"{split}.jsonl has only {rows[split]} rows but batch_size is "
                        f"{batch_size} — mlx-lm needs at least batch_size rows; lower "
                        "batch_size or add rows",
                    )
                )
    return out


def folder_warnings(directory: Path, formats: dict[str, str], has_valid: bool) -> list[Problem]:
    """What mlx-lm trains on differently from what the folder may suggest."""
    out: list[Problem] = []
    if not has_valid:
        out.append(
            Problem(
                str(directory),
                "no valid.jsonl — mlx-lm trains without validation: no validation loss "
                "will be reported, so checkpoints cannot be compared by it",
            )
        )
    family = {k: ("chat" if v == "tools" else v) for k, v in formats.items()}
    if "train" in family and "valid" in family and family["valid"] != family["train"]:
        out.append(
            Problem(
                str(directory / "valid.jsonl"),
                f"valid.jsonl is '{formats['valid']}' format but train.jsonl is "
                f"'{formats['train']}' — mlx-lm reads each file in its own format, so the "
                "validation loss measures a different kind of example than training",
            )
        )
    return out


# --------------------------------------------------------------------------- digests


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def dataset_digest(directory: Path) -> str:
    """sha256 over the bytes of train/valid/test.jsonl (those present), each framed
    by its split name and size so moving bytes between files changes the digest."""
    h = hashlib.sha256()
    for split in SPLITS:
        path = directory / f"{split}.jsonl"
        if not path.is_file():
            continue
        h.update(f"{split}.jsonl\0{path.stat().st_size}\0".encode())
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()
