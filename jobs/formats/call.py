"""A tool call as a format module reads it: what every syntax returns."""

from __future__ import annotations

from dataclasses import dataclass


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
