"""JSONL dataset validation against the formats mlx-lm's LoRA trainer accepts.

mlx-lm (`mlx_lm/tuner/datasets.py`) reads every line of `train.jsonl`,
`valid.jsonl` and `test.jsonl` with `json.loads` and picks ONE dataset class per
file from the keys of the FIRST row:

* ``prompt`` + ``completion``  -> completions (checked first)
* ``messages``                 -> chat; with a ``tools`` list we call it "tools"
* ``text``                     -> text

Any later row in another shape fails only when the trainer reaches it, deep into
a run. This module finds those rows up front, streaming the file line by line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.problems import Problem

FORMATS = ("chat", "tools", "completions", "text")
SPLITS = ("train", "valid", "test")
CHAT_ROLES = ("system", "user", "assistant", "tool")
# Row problems reported per file before the rest are summarised in one line.
MAX_ROW_PROBLEMS = 20
_CHUNK = 1 << 20


@dataclass
class JsonlReport:
    """What a scan of one JSONL file found."""

    path: Path
    format: str = ""  # "" when no row could be classified (empty file, all rows broken)
    rows: int = 0  # non-blank lines that parsed as JSON objects
    problems: list[Problem] = field(default_factory=list)


def row_format(row: dict[str, Any]) -> str | None:
    """The format mlx-lm would pick for this row, or None if it has none of the keys."""
    if "prompt" in row and "completion" in row:
        return "completions"
    if "messages" in row:
        return "tools" if "tools" in row else "chat"
    if "text" in row:
        return "text"
    return None


def _family(fmt: str) -> str:
    # chat and tools rows both go through mlx-lm's ChatDataset (tools is optional there).
    return "chat" if fmt in ("chat", "tools") else fmt


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


def _check_messages(messages: Any) -> list[tuple[str, str]]:
    """(field, message) pairs for a `messages` value mlx-lm's chat template would reject."""
    if not isinstance(messages, list):
        return [("messages", f"must be a list of messages, got {_shape(messages)}")]
    if not messages:
        return [("messages", "is empty — a chat row needs at least one assistant message")]
    out: list[tuple[str, str]] = []
    assistants = 0
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            out.append((where, f"must be an object with 'role' and 'content', got {_shape(msg)}"))
            continue
        role = msg.get("role")
        if role not in CHAT_ROLES:
            allowed = ", ".join(CHAT_ROLES)
            got = "missing" if "role" not in msg else repr(role)
            out.append((f"{where}.role", f"must be one of {allowed}; got {got}"))
            continue
        content = msg.get("content")
        if role == "assistant":
            assistants += 1
            calls = msg.get("tool_calls")
            if calls is not None and not isinstance(calls, list):
                out.append((f"{where}.tool_calls", f"must be a list, got {_shape(calls)}"))
            elif isinstance(content, str) or (content is None and calls):
                continue
            elif content is None:
                out.append(
                    (
                        f"{where}.content",
                        "is missing — an assistant message needs text content "
                        "or a non-empty tool_calls list",
                    )
                )
            else:
                out.append((f"{where}.content", f"must be a string, got {_shape(content)}"))
        elif not isinstance(content, str):
            what = (
                "is missing" if "content" not in msg else f"must be a string, got {_shape(content)}"
            )
            out.append((f"{where}.content", what))
    if assistants == 0:
        out.append(
            (
                "messages",
                "has no assistant message — there is nothing to train on; "
                'add the reply as {"role": "assistant", "content": ...}',
            )
        )
    return out


def check_row(row: dict[str, Any], fmt: str) -> list[tuple[str, str]]:
    """(field, message) pairs for a row of the given format that mlx-lm would reject."""
    if fmt in ("chat", "tools"):
        out = _check_messages(row["messages"])
        if fmt == "tools":
            tools = row["tools"]
            if not isinstance(tools, list):
                out.append(("tools", f"must be a list of tool schemas, got {_shape(tools)}"))
            else:
                for i, tool in enumerate(tools):
                    if not isinstance(tool, dict):
                        out.append((f"tools[{i}]", f"must be an object, got {_shape(tool)}"))
        return out
    if fmt == "completions":
        out = []
        for key in ("prompt", "completion"):
            if not isinstance(row[key], str):
                out.append((key, f"must be a string, got {_shape(row[key])}"))
        tools = row.get("tools")
        if tools is not None and not isinstance(tools, list):
            out.append(("tools", f"must be a list of tool schemas, got {_shape(tools)}"))
        return out
    if fmt == "text":
        text = row["text"]
        if not isinstance(text, str):
            return [("text", f"must be a string, got {_shape(text)}")]
        if not text:
            return [("text", "is empty — mlx-lm cannot tokenize an empty text row")]
        return []
    raise ValueError(f"unknown format {fmt!r}")


def _unknown_row_message(row: dict[str, Any]) -> str:
    if "prompt" in row:
        return "has 'prompt' but no 'completion' — completions rows need both strings"
    if "completion" in row:
        return "has 'completion' but no 'prompt' — completions rows need both strings"
    keys = ", ".join(repr(k) for k in list(row)[:5]) or "no keys"
    return (
        f"row has {keys} but none of the keys mlx-lm reads: 'messages' (chat/tools), "
        "'prompt' + 'completion' (completions) or 'text' (text)"
    )


def scan_jsonl(path: Path) -> JsonlReport:
    """Stream a JSONL file once: detect its format, count rows, collect problems."""
    report = JsonlReport(path=path)
    file = str(path)
    found: list[Problem] = []
    dropped = 0
    first_line = 0
    first_family = ""
    has_tools = False
    deviating = 0
    first_deviation: Problem | None = None

    def add(problem: Problem) -> None:
        nonlocal dropped
        if len(found) < MAX_ROW_PROBLEMS:
            found.append(problem)
        else:
            dropped += 1

    try:
        fh = path.open("rb")
    except OSError as exc:
        report.problems.append(Problem(file, f"cannot read file: {exc.strerror or exc}"))
        return report
    nonblank = 0
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                add(
                    Problem(
                        file,
                        "blank line — mlx-lm parses every line as JSON; remove it",
                        lineno,
                    )
                )
                continue
            nonblank += 1
            try:
                row = json.loads(raw)
            except UnicodeDecodeError:
                add(Problem(file, "line is not valid UTF-8", lineno))
                continue
            except json.JSONDecodeError as exc:
                add(Problem(file, f"invalid JSON: {exc.msg} (column {exc.colno})", lineno))
                continue
            if not isinstance(row, dict):
                add(Problem(file, f"row must be a JSON object, got {_shape(row)}", lineno))
                continue
            report.rows += 1
            fmt = row_format(row)
            if fmt is None:
                add(Problem(file, _unknown_row_message(row), lineno))
                continue
            for where, message in check_row(row, fmt):
                add(Problem(file, f"{fmt} row: {message}", lineno, where))
            family = _family(fmt)
            if not first_family:
                first_family, first_line = family, lineno
                report.format = fmt
            elif family != first_family:
                deviating += 1
                if first_deviation is None:
                    first_deviation = Problem(
                        file,
                        f"row is '{family}' format but line {first_line} is "
                        f"'{first_family}' — mlx-lm takes the format from the first row, "
                        "so every row in a file must use the same one",
                        lineno,
                    )
            if fmt == "tools":
                has_tools = True
    if nonblank == 0:
        report.problems.append(Problem(file, "file is empty — add at least one JSON row per line"))
        return report
    if first_family == "chat" and has_tools:
        report.format = "tools"
    if first_deviation is not None:
        if deviating > 1:
            first_deviation = Problem(
                file,
                f"{first_deviation.message} ({deviating} rows deviate)",
                first_deviation.line,
            )
        report.problems.append(first_deviation)
    report.problems.extend(found)
    if dropped:
        report.problems.append(Problem(file, f"... and {dropped} more row problems not listed"))
    report.problems.sort(key=lambda p: p.line if p.line is not None else float("inf"))
    return report


def validate_jsonl(path: Path) -> tuple[str, list[Problem]]:
    """The mlx-lm format of a JSONL file ("chat", "tools", "completions", "text", or ""
    when nothing could be classified) and every problem mlx-lm would trip over."""
    report = scan_jsonl(path)
    return report.format, report.problems


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
