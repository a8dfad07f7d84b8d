"""Dataset rows as the checks see them, and the tool calls each one makes.

Calls are found by `jobs.formats`, the parser the scorer scores with, so a check
and a score never disagree on a call; here they are sorted into the call
families the dataset checks count (`CALL_FAMILIES`). Pure: rows in, calls out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs import formats
from jobs.formats import WRAPPER
from jobs.formats.json_tools import arguments_object

# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Example:
    """One dataset row and where it is."""

    file: str
    line: int
    split: str  # train | valid | test
    row: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{Path(self.file).name}:{self.line}"


@dataclass(frozen=True)
class ExampleCall:
    """One tool call found in an assistant turn, sorted into its family."""

    family: str  # a key of CALL_FAMILIES
    name: str | None  # the function called (execute_code for the wrappers)
    arguments: dict[str, Any] | None = None
    code: str | None = None  # the Python the call runs (wrapper or bare code)


CALL_FAMILIES: dict[str, str] = {
    "xml_wrapper": "the Qwen3 XML execute_code wrapper "
    "(<tool_call><function=execute_code><parameter=code>…)",
    "json_wrapper": 'the JSON execute_code wrapper (<tool_call>{"name": "execute_code", …})',
    "structured_wrapper": "an execute_code call in the message's tool_calls field",
    "xml_call": "a Qwen3 XML call of a tool without the wrapper (<function=TOOL>)",
    "json_call": 'a native JSON tool call (<tool_call>{"name": TOOL, …})',
    "structured_call": "a tool call in the message's tool_calls field",
    "tool_call_code": "bare Python inside <tool_call>, without the wrapper",
    "python_call": "a Python tool call outside any tool-call tags",
    "unreadable": "a <tool_call> block that is neither XML, JSON nor Python",
}
# What the suite's format scores as the target (1.0).
TARGET_FAMILIES: dict[str, frozenset[str]] = {
    "code_mode": frozenset({"xml_wrapper", "json_wrapper", "structured_wrapper"}),
    "json_tools": frozenset({"json_call", "structured_call"}),
}


# --------------------------------------------------------------------------- calls


def find_calls(text: str, tool_names: Iterable[str]) -> list[ExampleCall]:
    """The tool calls in one assistant text (calls inside a think block do not count)."""
    names = frozenset(tool_names) | {WRAPPER}
    found = (_family_call(call) for call in formats.find_calls(text, names))
    return [call for call in found if call is not None]


def _family_call(call: formats.Call) -> ExampleCall | None:
    if call.syntax == "xml":
        params = call.arguments if isinstance(call.arguments, dict) else {}
        if call.name == WRAPPER:
            return ExampleCall("xml_wrapper", WRAPPER, params, params.get("code"))
        return ExampleCall("xml_call", call.name, params)
    if call.where == "tool_call":
        if call.syntax == "json" and call.name is not None:
            return _named_call("json", call.name, call.arguments)
        if call.syntax == "python":
            return ExampleCall("tool_call_code", call.name, None, call.code)
        return ExampleCall("unreadable", None, None, call.code)
    if call.syntax == "python" and call.inside is None:
        return ExampleCall("python_call", call.name, None, call.code)
    # A bare JSON object is not a training format the checks sort: in an answer it
    # reads the same as an example object in an explanation.
    return None


def _named_call(kind: str, name: str, arguments: object) -> ExampleCall:
    """A JSON or structured call: the wrapper (its code read from its arguments) or a tool."""
    args = arguments_object(arguments)
    if name == WRAPPER:
        code = args.get("code") if args else None
        return ExampleCall(
            f"{kind}_wrapper", WRAPPER, args, code if isinstance(code, str) else None
        )
    return ExampleCall(f"{kind}_call", name, args)


def assistant_turns(row: Mapping[str, Any]) -> list[tuple[str, list[Any]]]:
    """(text, structured tool_calls) of each assistant turn of a row, in any mlx-lm format."""
    if isinstance(row.get("messages"), list):
        return [
            (m.get("content") if isinstance(m.get("content"), str) else "", m.get("tool_calls"))
            for m in row["messages"]
            if isinstance(m, dict) and m.get("role") == "assistant"
        ]
    if isinstance(row.get("completion"), str):
        return [(row["completion"], [])]
    if isinstance(row.get("text"), str):
        return [(row["text"], [])]
    return []


def example_calls(example: Example, tool_names: Iterable[str]) -> list[ExampleCall]:
    """Every tool call an example's assistant turns make, in their text and in the
    messages' structured `tool_calls`."""
    names = list(tool_names)
    calls: list[ExampleCall] = []
    for text, structured in assistant_turns(example.row):
        calls.extend(find_calls(text, names))
        for item in structured or []:
            function = item.get("function", item) if isinstance(item, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                calls.append(ExampleCall("unreadable", None))
                continue
            calls.append(_named_call("structured", function["name"], function.get("arguments")))
    return calls


def locations(examples: Sequence[Example], limit: int = 3) -> str:
    """Where the first few examples are, for a message: "train.jsonl:3, … and 4 more"."""
    shown = ", ".join(e.where for e in examples[:limit])
    return shown + (f" and {len(examples) - limit} more" if len(examples) > limit else "")
