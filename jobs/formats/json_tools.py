"""JSON tool calls: `{"name": TOOL, "arguments": {…}}`, in `<tool_call>` tags or bare.

The shape mlx-lm's `json_tools` parser reads (`name` and `arguments`, the
arguments an object or, OpenAI style, a JSON string). JSON nested deeper than
MAX_NESTING is not decoded (the decoder recurses per level), and the search for
bare objects in prose is linear in the text however many "{" fail to start one.

A syntax module: NAME, `read_tool_call`, `read_bare` and `render_call`, as in
every module of `jobs.formats.SYNTAXES`; and a suite format (FORMAT), as
`code_mode` is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from jobs.formats.call import Call
from jobs.formats.text import fenced_pieces, too_deep_starts

NAME = "json"  # the syntax
FORMAT = "json_tools"  # the suite format whose 1.0 call is a JSON `<tool_call>`

# Failed attempts to read bare JSON may scan at most this many times the text;
# past that the rest of the text is not searched for bare JSON calls.
_JSON_SCAN_BUDGET = 8
_OBJECT_START_RE = re.compile(r"\{\s*[\"}]")
_JSON_WINDOW = 256
# A decode error this close to the end of the window may be the window's doing
# (a number or literal cut short); the longest literal is "-Infinity".
_CUT_MARGIN = 16


@dataclass(frozen=True)
class JsonCall:
    name: str
    arguments: object  # as written: an object, a JSON string, or anything else


def read_call(obj: object) -> JsonCall | None:
    """The call a decoded JSON value is, or None when it names no tool."""
    if isinstance(obj, dict) and isinstance(obj.get("name"), str):
        return JsonCall(obj["name"], obj.get("arguments"))
    return None


def arguments_object(arguments: object) -> dict | None:
    """A call's arguments as an object: decoded when written as a JSON string."""
    if isinstance(arguments, str):  # OpenAI style: arguments as a JSON string
        arguments = json_prefix(arguments.strip())
    return arguments if isinstance(arguments, dict) else None


def read_tool_call(text: str, names: frozenset[str]) -> list[Call] | None:
    """The call of a `<tool_call>` block's content written as JSON, else None."""
    if not text.startswith("{"):
        return None
    call = read_call(json_prefix(text))
    if call is None:
        return [Call(None, "unreadable", "tool_call")]
    return [Call(call.name, NAME, "tool_call", call.arguments)]


def read_bare(text: str, names: frozenset[str]) -> tuple[list[Call], str]:
    """Bare JSON objects shaped like a call of a known tool, {"name": TOOL,
    "arguments": …}; any other object is not a call. The text stays as it is."""
    calls = []
    for piece in fenced_pieces(text):
        for obj in json_objects(piece):
            name = obj.get("name") if isinstance(obj, dict) else None
            if isinstance(name, str) and name in names and "arguments" in obj:
                calls.append(Call(name, NAME, "bare", obj["arguments"]))
    return calls, text


def render_call(name: str, arguments: Mapping[str, object]) -> str:
    """One call in this format, as a `<tool_call>` block."""
    body = json.dumps({"name": name, "arguments": dict(arguments)})
    return f"<tool_call>\n{body}\n</tool_call>"


def json_prefix(text: str) -> object:
    """The JSON value at the start of `text` (trailing text allowed), or None."""
    if 0 in too_deep_starts(text):
        return None
    try:
        return json.JSONDecoder().raw_decode(text)[0]
    except (ValueError, RecursionError):
        return None


def json_objects(text: str) -> Iterator[object]:
    """Every JSON object written in `text` (bare, in prose), left to right.

    A failed attempt at one "{" is retried at the next; to keep that linear, the
    characters failed attempts read are counted against a budget, and objects
    nested deeper than MAX_NESTING are skipped without decoding.
    """
    decoder = json.JSONDecoder()
    too_deep = too_deep_starts(text)
    budget = _JSON_SCAN_BUDGET * len(text)
    i = text.find("{")
    while i != -1 and budget > 0:
        # `{` not followed by a key or `}` is no object: skipped without a decode error.
        if i in too_deep or not _OBJECT_START_RE.match(text, i):
            i = text.find("{", i + 1)
            continue
        ok, obj, end = _decode_object(decoder, text, i)
        if not ok:
            budget -= end
            i = text.find("{", i + 1)
            continue
        yield obj
        i = text.find("{", end)


def _decode_object(decoder: json.JSONDecoder, text: str, start: int) -> tuple[bool, object, int]:
    """(True, object, end) for the JSON object at `start`; (False, None, chars read) if none.

    The decoder gets a window that grows only while the object may go on past
    it: a decode error counts the newlines before it in what the decoder was
    handed, so handing it the whole text at every "{" would be quadratic.
    """
    window = _JSON_WINDOW
    while True:
        piece = text[start : start + window]
        try:
            obj, end = decoder.raw_decode(piece)
            return True, obj, start + end
        except RecursionError:
            return False, None, len(piece)
        except ValueError as exc:
            unterminated = getattr(exc, "msg", "").startswith("Unterminated")
            pos = getattr(exc, "pos", len(piece))
            if start + window < len(text) and (unterminated or pos >= len(piece) - _CUT_MARGIN):
                window *= 4
                continue
            return False, None, len(piece) if unterminated else pos + 1
