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
from types import ModuleType

from jobs.formats import code_mode, json_tools, python_calls, qwen3_xml
from jobs.formats.call import Call
from jobs.formats.code_mode import WRAPPER, code_argument
from jobs.formats.json_tools import json_prefix
from jobs.formats.python_calls import (
    MAX_CODE_BRACES,
    MAX_CODE_CHARS,
    called_names,
    parse_code,
    parse_python,
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

# The syntaxes a call may be written in, in the order they are tried; each
# module has the same names (NAME, read_tool_call, read_bare, render_call), like
# mlx-lm's tool parsers. A `<tool_call>` block's content goes to the first that
# takes it (Python last: what no other syntax takes is Python, or unreadable);
# outside the tags each reads its bare calls from what the one before left
# (XML first: its blocks may hold fenced code that is not a bare call).
SYNTAXES: dict[str, ModuleType] = {m.NAME: m for m in (qwen3_xml, json_tools, python_calls)}
# A suite's `format` -> the module that writes (and reads) the call it scores as 1.0.
FORMATS: dict[str, ModuleType] = {m.FORMAT: m for m in (code_mode, json_tools)}


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
    for syntax in SYNTAXES.values():
        found, rest = syntax.read_bare(rest, names)
        calls.extend(found)
    # An execute_code wrapper written as bare JSON: the calls in its code count as bare.
    wrappers = [c for c in calls if c.name == WRAPPER and c.syntax == "json" and c.where == "bare"]
    for wrapper in wrappers:
        calls.extend(_wrapped_calls(wrapper.arguments, names))
    return calls


def _read_tool_call(content: str, names: frozenset[str]) -> list[Call]:
    """Read the inside of one <tool_call> block, in the first syntax that takes it."""
    text = strip_fence(content.strip())
    if not text:
        return []  # a bare `<tool_call>` at the very end: nothing was called yet
    for syntax in SYNTAXES.values():
        calls = syntax.read_tool_call(text, names)
        if calls is not None:
            return list(calls)
    return [Call(None, "unreadable", "tool_call", code=text)]


def _wrapped_calls(arguments: object, names: frozenset[str]) -> list[Call]:
    """Tool calls inside a wrapper that is not in native syntax: they count as bare calls."""
    code = code_argument(arguments)
    tree = parse_python(code)
    if tree is None:
        return []
    return [Call(n, "python", "bare", code=code, inside=WRAPPER) for n in called_names(tree, names)]
