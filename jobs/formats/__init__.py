"""Tool-call formats: one module per way a model writes a call, and the one
function that finds the calls in a text.

Like mlx-lm's `tool_parsers`, each format is a small module that reads (and
writes) its own syntax:

* `qwen3_xml`    — `<tool_call><function=NAME><parameter=ARG>…` blocks
* `json_tools`   — `{"name": TOOL, "arguments": {…}}`, in `<tool_call>` tags or bare
* `python_calls` — `typecheck("src/")` written as Python, bare or in a wrapper
* `code_mode`    — the execute_code wrapper (Qwen3 XML or JSON) whose code is Python

`find_calls` is what the scorer, the preflight checks and the demo data
generator read calls with, so a score, a check and the generated data never
disagree on what a call is. Every reader is total and bounded: any text gives
a list of calls (maybe empty) in time linear in its length, never an
exception (see `text` and the bounds in `python_calls` and `json_tools`).

Decisions made here once (the scorer's contract rests on them):

* A `<tool_call>`/`</tool_call>`, `</function>` or `</parameter>` tag missing at
  the end is accepted (generation stopped there).
* Calls inside a `<think>` block do not count: thinking about a call is not a call.
* A bare JSON object without `<tool_call>` counts as a call only when it is
  shaped like a call of a known tool; it is a call *outside* the wrapper.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

from jobs.formats import code_mode, json_tools, python_calls, qwen3_xml
from jobs.formats.code_mode import WRAPPER, code_argument
from jobs.formats.json_tools import json_objects, json_prefix
from jobs.formats.python_calls import (
    MAX_CODE_BRACES,
    MAX_CODE_CHARS,
    called_names,
    parse_code,
    parse_python,
    python_trees,
)
from jobs.formats.qwen3_xml import function_blocks, parameters, tool_call_blocks
from jobs.formats.text import (
    MAX_NESTING,
    MAX_RESPONSE_CHARS,
    Segment,
    cut_out,
    fence_blocks,
    fence_body,
    split_think,
    strip_fence,
)

__all__ = [
    "FORMATS",
    "MAX_CODE_BRACES",
    "MAX_CODE_CHARS",
    "MAX_NESTING",
    "MAX_RESPONSE_CHARS",
    "SYNTAXES",
    "WRAPPER",
    "Call",
    "Segment",
    "body_calls",
    "called_names",
    "code_argument",
    "cut_out",
    "fence_blocks",
    "fence_body",
    "find_calls",
    "function_blocks",
    "json_prefix",
    "parameters",
    "parse_code",
    "parse_python",
    "split_think",
    "strip_fence",
    "tool_call_blocks",
]

# A suite's `format` -> the module that writes (and reads) the call it scores as 1.0.
FORMATS: dict[str, ModuleType] = {"code_mode": code_mode, "json_tools": json_tools}
# A Call's `syntax` -> the module that read it.
SYNTAXES: dict[str, ModuleType] = {
    "xml": qwen3_xml,
    "json": json_tools,
    "python": python_calls,
}


@dataclass(frozen=True)
class Call:
    """One call found in a text (outside any think block)."""

    name: str | None  # None: a <tool_call> whose content names no tool
    syntax: str  # "xml" | "json" | "python" | "unreadable"
    where: str  # "tool_call": inside <tool_call>; "function": bare <function=…>; "bare"
    arguments: object = None  # as written (XML: the parameters; JSON: "arguments")
    code: str | None = None  # the Python a python / unreadable call was read from
    # The bare JSON wrapper a python call was written in (its `code` argument), else None.
    inside: str | None = None


def find_calls(text: str, names: Iterable[str]) -> list[Call]:
    """Every call in `text` outside think blocks: native ones (in `<tool_call>` tags,
    XML or JSON; bare `<function=…>` blocks) and bare Python / JSON calls of `names`.

    The text is read up to MAX_RESPONSE_CHARS."""
    _, body = split_think(text[:MAX_RESPONSE_CHARS])
    return body_calls(body, frozenset(names))


def body_calls(body: str, names: frozenset[str]) -> list[Call]:
    """`find_calls` for a text whose think blocks are already cut out."""
    calls: list[Call] = []
    blocks = tool_call_blocks(body)
    for block in blocks:
        calls.extend(_read_tool_call(block.content, names))
    rest = cut_out(body, blocks)
    functions = function_blocks(rest)
    calls.extend(_xml_call(f, "function") for f in functions)
    calls.extend(_bare_calls(cut_out(rest, functions), names))
    return calls


def _read_tool_call(content: str, names: frozenset[str]) -> list[Call]:
    """Read the inside of one <tool_call> block: XML, JSON, or Python straight in the tags."""
    text = strip_fence(content.strip())
    if not text:
        return []  # a bare `<tool_call>` at the very end: nothing was called yet
    if qwen3_xml.FUNCTION_START in text:
        return [_xml_call(f, "tool_call") for f in function_blocks(text)]
    if text.startswith("{"):
        call = json_tools.read_call(json_prefix(text))
        if call is None:
            return [Call(None, "unreadable", "tool_call")]
        return [Call(call.name, "json", "tool_call", call.arguments)]
    # Python straight inside the tags, no wrapper (seen in earlier runs' training data).
    tree = parse_python(text)
    if tree is None:
        return [Call(None, "unreadable", "tool_call", code=text)]
    found = [Call(n, "python", "tool_call", code=text) for n in called_names(tree, names)]
    return found or [Call(None, "python", "tool_call", code=text)]


def _xml_call(function: Segment, where: str) -> Call:
    return Call(function.name, "xml", where, parameters(function.content))


def _bare_calls(text: str, names: frozenset[str]) -> list[Call]:
    """Calls written outside any tag: Python in fences or on its own lines, bare JSON."""
    fences = fence_blocks(text)
    pieces = [f.content for f in fences]
    pieces.append(cut_out(text, fences))
    calls: list[Call] = []
    for piece in pieces:
        for code, tree in python_trees(piece):
            calls.extend(Call(n, "python", "bare", code=code) for n in called_names(tree, names))
        calls.extend(_bare_json_calls(piece, names))
    return calls


def _bare_json_calls(text: str, names: frozenset[str]) -> list[Call]:
    # Only objects shaped like a call of a known tool count: {"name": TOOL, "arguments": …}.
    calls: list[Call] = []
    for obj in json_objects(text):
        name = obj.get("name") if isinstance(obj, dict) else None
        if isinstance(name, str) and name in names and "arguments" in obj:
            calls.append(Call(name, "json", "bare", obj["arguments"]))
            if name == WRAPPER:
                calls.extend(_wrapped_calls(obj["arguments"], names))
    return calls


def _wrapped_calls(arguments: object, names: frozenset[str]) -> list[Call]:
    """Tool calls inside a wrapper that is not in native syntax: they count as bare calls."""
    code = code_argument(arguments)
    tree = parse_python(code)
    if tree is None:
        return []
    return [Call(n, "python", "bare", code=code, inside=WRAPPER) for n in called_names(tree, names)]
