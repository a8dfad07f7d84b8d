"""Qwen3 XML tool calls: `<tool_call><function=NAME><parameter=ARG>…` — the
grammar of Code Mode's execute_code wrapper (and of Qwen3-Coder's native calls).

Closing tags are optional: generation may stop before them, so a block also
ends where the next one opens or at the end of the text.

A syntax module: NAME, `read_tool_call`, `read_bare` and `render_call`, as in
every module of `jobs.formats.SYNTAXES`.
"""

from __future__ import annotations

from collections.abc import Mapping

from jobs.formats.call import Call
from jobs.formats.text import Segment, cut_out, segments

NAME = "xml"

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
FUNCTION_START = "<function="


def tool_call_blocks(text: str) -> list[Segment]:
    """The `<tool_call>` blocks of a text (any format inside)."""
    return segments(text, TOOL_CALL_START, TOOL_CALL_END, (TOOL_CALL_START,))


def function_blocks(text: str) -> list[Segment]:
    """The `<function=NAME>` blocks of a text; NAME is the block's name."""
    return segments(text, FUNCTION_START, "</function>", (FUNCTION_START, TOOL_CALL_END))


def parameters(function_body: str) -> dict[str, str]:
    """The `<parameter=NAME>` values of one `<function=…>` block."""
    blocks = segments(function_body, "<parameter=", "</parameter>", ("<parameter=", "</function>"))
    return {b.name or "": _strip_one_newline(b.content) for b in blocks}


def read_tool_call(text: str, names: frozenset[str]) -> list[Call] | None:
    """The calls of a `<tool_call>` block's content written in this syntax, else None."""
    if FUNCTION_START not in text:
        return None
    return [_call(f, "tool_call") for f in function_blocks(text)]


def read_bare(text: str, names: frozenset[str]) -> tuple[list[Call], str]:
    """Bare `<function=…>` blocks outside any `<tool_call>`, and the text without them."""
    functions = function_blocks(text)
    return [_call(f, "function") for f in functions], cut_out(text, functions)


def render_call(name: str, arguments: Mapping[str, object]) -> str:
    """One call in this format, as the chat template writes it."""
    params = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in arguments.items())
    return f"{TOOL_CALL_START}\n<function={name}>\n{params}</function>\n{TOOL_CALL_END}"


def _call(function: Segment, where: str) -> Call:
    return Call(function.name, NAME, where, parameters(function.content))


def _strip_one_newline(value: str) -> str:
    # Qwen3 XML puts the value on its own lines: "<parameter=code>\n…\n</parameter>".
    value = value.removeprefix("\n")
    return value.removesuffix("\n")
