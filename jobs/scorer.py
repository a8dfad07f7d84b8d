"""Format-adherence scorer: one model response in, one label and score out.

The contract (labels, scores, what counts as a call) is the "Scorer" section of
docs/architecture.md; the eval stage, `farm score` and the leaderboard all rely on it.

Calls are found by *parsing*, never by keyword search, by `jobs.formats` (the one
tool-call parser of the farm): Python code goes through `ast` (a tool named in a
sentence, a comment or a string literal is not a call) and native tool calls
through `json` or the Qwen3 XML grammar. This module turns the calls found into
a label. Everything here is pure: strings in, `Score` out, no I/O.

Decisions the design table leaves open, made here once:

* A `<tool_call>`/`</tool_call>`, `</function>` or `</parameter>` tag missing at
  the end is accepted (generation stopped there). The `<tool_call>` *opening* tag
  may be missing too when `<function=execute_code>` is present: that tag names
  the wrapper unambiguously, and what we score is the structure the runtime
  parses, not one token of it. A bare JSON object without `<tool_call>` is
  different: it is indistinguishable from an example in an explanation, so it is
  counted as a call *outside* the wrapper (a direct call), never as the wrapper
  or, for `json_tools`, as the target format.
* Calls inside a `<think>` block do not count: thinking about a call is not a
  call. A response that is only a think block is `think` for any expect; an
  empty `<think></think>` (Qwen3's non-thinking preamble) with nothing after it
  is `empty`.
* A call outside the wrapper that misses the expected tool(s) (another tool, an
  unknown native function, a bare `execute_code(...)` without the tool inside)
  is `wrong_tool`: it is a routing failure, and `wrong_tool` is the label the
  farm reads as "training distribution gap".
* `direct_call` and `execute_code` both need *all* expected tools. With no
  expected tool given, any known tool satisfies the expectation.
* `thought` is set when a non-empty think block is followed by the expected
  call or an answer: labels `execute_code`, `tool_call`, `direct_call` and
  `direct_answer`.
* Hostile text is scored in time linear in its length, and always labelled:
  a response is read up to MAX_RESPONSE_CHARS; code beyond MAX_CODE_CHARS (or
  nested, or holding braces, beyond the bounds of `jobs.formats`) or that Python's parser
  gives up on (SyntaxError, MemoryError, RecursionError) is code that does not
  parse: `invalid_code` inside the wrapper, no call outside it; JSON nested
  deeper than MAX_NESTING is not read as a call. A response that exhausts the
  interpreter all the same is `degenerate`.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Collection
from dataclasses import dataclass

from jobs import formats
from jobs.formats import (
    MAX_RESPONSE_CHARS,
    WRAPPER,
    Call,
    body_calls,
    called_names,
    code_argument,
    parse_python,
    split_think,
)

CODE_MODE = "code_mode"
JSON_TOOLS = "json_tools"
FORMATS = tuple(formats.FORMATS)  # (CODE_MODE, JSON_TOOLS)
EXPECTS = ("tool", "direct")

LABEL_SCORES: dict[str, float] = {
    # code_mode, expect=tool
    "execute_code": 1.0,
    "direct_call": 0.5,
    "wrong_tool": 0.25,
    "invalid_code": 0.25,
    "prose": 0.0,
    "think": 0.0,
    # json_tools, expect=tool (wrong_tool, prose, think shared with code_mode)
    "tool_call": 1.0,
    "invalid_call": 0.25,
    # expect=direct
    "direct_answer": 1.0,
    "unneeded_tool": 0.0,
    # any expect, decided first
    "degenerate": 0.0,
    "empty": 0.0,
}

# The 26 tool names of the runtime in earlier runs (the demo Code-Mode suite's tool API).
DEFAULT_TOOL_NAMES: frozenset[str] = frozenset(
    {
        "read_file",
        "write_file",
        "run_command",
        "typecheck",
        "ruff_check",
        "pytest_run",
        "goto_definition",
        "find_references",
        "hover",
        "document_symbols",
        "workspace_symbols",
        "git_status",
        "git_diff",
        "git_log",
        "cst_find_pattern",
        "cst_rename",
        "cst_add_import",
        "validate_component",
        "check_render_tree",
        "validate_escape_context",
        "validate_service_registration",
        "check_dependency_graph",
        "validate_injection_site",
        "validate_middleware_chain",
        "check_di_template_binding",
        "validate_route_pattern",
    }
)

# Labels after which a think block is worth flagging: the model thought and then
# still did what was asked (the expected call, or an answer).
_THOUGHT_LABELS = frozenset({"execute_code", "tool_call", "direct_call", "direct_answer"})


@dataclass(frozen=True)
class Score:
    label: str
    score: float
    thought: bool = False  # response thought (<think>…</think>) and then made a valid call / answer


# --------------------------------------------------------------------------- degenerate

# Token loops: a unit of p whitespace-separated tokens repeated back to back.
# Short units need many repeats (a real text can say "very very", a list can hold
# eight zeros), long units need few (four verbatim copies of a sentence or a code
# line in a row is a loop). Repeats needed = max(4, ceil(32 / p)): "the" x32,
# a 2-token unit x16, a 4-token unit x8, 8+ tokens x4.
_MIN_REPEATS = 4
_MIN_LOOP_TOKENS = 32
_MAX_UNIT_TOKENS = 256
# Loops with no whitespace in them ("abababab…", "((((((…"): a unit of up to 16
# characters covering 160 characters. 160 is above any sane separator line.
_MAX_UNIT_CHARS = 16
_MIN_LOOP_CHARS = 160
_CHAR_LOOPS = [
    re.compile(rf"(\S{{{p}}})\1{{{-(-_MIN_LOOP_CHARS // p) - 1},}}")
    for p in range(1, _MAX_UNIT_CHARS + 1)
]


def is_degenerate(text: str) -> bool:
    """True when `text` holds a repetition loop: a word, phrase or line repeated many times."""
    return _has_token_loop(text.split()) or any(p.search(text) for p in _CHAR_LOOPS)


def _repeats_needed(unit_tokens: int) -> int:
    return max(_MIN_REPEATS, -(-_MIN_LOOP_TOKENS // unit_tokens))


def _has_token_loop(tokens: list[str]) -> bool:
    ids: dict[str, int] = {}
    seq = [ids.setdefault(t, len(ids)) for t in tokens]
    n = len(seq)
    for p in range(1, min(_MAX_UNIT_TOKENS, n // _MIN_REPEATS) + 1):
        # `need` equal pairs (seq[i], seq[i+p]) in a row = a span of need+p tokens
        # with period p, i.e. the unit repeated _repeats_needed(p) times.
        need = (_repeats_needed(p) - 1) * p
        if need + p <= n and _has_equal_run(seq, p, need):
            return True
    return False


def _has_equal_run(seq: list[int], p: int, need: int) -> bool:
    """True when seq[i] == seq[i + p] for `need` consecutive i.

    Any such run covers one of the anchors need-1, 2*need-1, …, so only runs
    through an anchor where the pair is equal are measured: most periods cost
    n/need comparisons instead of n, and no period more than about 2n.
    """
    last = len(seq) - p  # pairs (i, i + p) for i in [0, last)
    for anchor in range(need - 1, last, need):
        if seq[anchor] != seq[anchor + p]:
            continue
        lo = anchor
        while lo > anchor - need + 1 and lo > 0 and seq[lo - 1] == seq[lo - 1 + p]:
            lo -= 1
        hi = anchor
        while hi - lo + 1 < need and hi + 1 < last and seq[hi + 1] == seq[hi + 1 + p]:
            hi += 1
        if hi - lo + 1 >= need:
            return True
    return False


# --------------------------------------------------------------------------- labels


def _satisfies(called: set[str], expected: frozenset[str], known: frozenset[str]) -> bool:
    # With no expected tool given, any known tool will do.
    return expected <= called if expected else bool(called & known)


def _label_code_mode(calls: list[Call], expected: frozenset[str], known: frozenset[str]) -> str:
    wrapped: set[str] = set()  # tools called inside execute_code wrappers whose code parses
    outside: set[str] = set()  # tools called any other way
    wrappers = parsed = unreadable = other = False
    for call in calls:
        native_wrapper = call.name == WRAPPER and (
            call.syntax == "xml" or (call.syntax == "json" and call.where == "tool_call")
        )
        if native_wrapper:
            wrappers = True
            tree = parse_python(code_argument(call.arguments))
            if tree is not None:
                parsed = True
                wrapped |= called_names(tree, known)
        elif call.syntax == "unreadable":
            unreadable = True
        else:
            other = True
            if call.name is not None:
                outside.add(call.name)
    if parsed and _satisfies(wrapped, expected, known):
        return "execute_code"
    if _satisfies(wrapped | outside, expected, known):
        return "direct_call"
    if wrappers:
        return "wrong_tool" if parsed else "invalid_code"
    if unreadable:
        return "invalid_code"  # a <tool_call> opened, but what follows is not code
    if other:
        return "wrong_tool"
    return ""


def _label_json_tools(calls: list[Call], expected: frozenset[str], known: frozenset[str]) -> str:
    native = {c.name for c in calls if c.syntax == "json" and c.where == "tool_call" and c.name}
    if native:
        return "tool_call" if _satisfies(native, expected, known) else "wrong_tool"
    if any(c.where == "tool_call" for c in calls):
        return "invalid_call"  # <tool_call> whose content is not a JSON call
    if calls:
        # Outside the target format (bare JSON, XML, Python): the runtime cannot read it.
        named = {c.name for c in calls if c.name}
        return "invalid_call" if _satisfies(named, expected, known) else "wrong_tool"
    return ""


def _expected_tools(tool: str | list[str] | None) -> frozenset[str]:
    if tool is None:
        return frozenset()
    if isinstance(tool, str):
        return frozenset({tool})
    if isinstance(tool, list | tuple) and all(isinstance(t, str) for t in tool):
        return frozenset(tool)
    raise ValueError(f"tool must be a tool name or a list of tool names, got {_short(tool)}")


# Values quoted in error messages come from input files: keep them short and
# shallow (a plain repr of a list nested a thousand deep recurses as deep).
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80


def _short(value: object) -> str:
    return _SHORT.repr(value)


def score_response(
    response: str,
    expect: str,
    tool: str | list[str] | None,
    tool_names: Collection[str] = DEFAULT_TOOL_NAMES,
    fmt: str = CODE_MODE,
) -> Score:
    """Label one response to a prompt that expects a tool call or a direct answer."""
    if expect not in EXPECTS:
        raise ValueError(f"expect must be 'tool' or 'direct', got {_short(expect)}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {_short(fmt)}")
    expected = _expected_tools(tool)

    response = response[:MAX_RESPONSE_CHARS]
    thinking, body = split_think(response)
    if not thinking.strip() and not body.strip():
        return _score("empty")
    if is_degenerate(response):
        return _score("degenerate")
    try:
        label = _label(body, expect, expected, frozenset(tool_names) | expected, fmt)
    except (RecursionError, MemoryError):
        # The bounds above keep every step linear and shallow; a response that
        # still exhausts the interpreter is no answer a model meant to give.
        return _score("degenerate")
    return _score(label, thought=bool(thinking.strip()) and label in _THOUGHT_LABELS)


def _label(
    body: str, expect: str, expected: frozenset[str], known: frozenset[str], fmt: str
) -> str:
    """The label of a response's body (outside think blocks) that is neither empty nor a loop."""
    # execute_code is recognised as a call name too, so a plain-Python
    # execute_code("…") is seen (and looked into) rather than ignored.
    calls = body_calls(body, known | {WRAPPER} if fmt == CODE_MODE else known)
    if expect == "tool":
        label = (_label_code_mode if fmt == CODE_MODE else _label_json_tools)(
            calls, expected, known
        )
    else:
        label = "unneeded_tool" if calls else ("direct_answer" if body.strip() else "")
    if not label:
        label = "prose" if body.strip() else "think"
    return label


def _score(label: str, thought: bool = False) -> Score:
    return Score(label, LABEL_SCORES[label], thought)


def score_record(
    record: dict,
    tool_names: Collection[str] = DEFAULT_TOOL_NAMES,
    fmt: str = CODE_MODE,
) -> dict:
    """Score one `farm score` line.

    {"id", "expect", "tool"?, "response"} -> {"id", "label", "score"}, plus
    "thought": true only when flagged (absent otherwise, so old readers see the
    contract's three keys).
    """
    if not isinstance(record, dict):
        raise ValueError(f"record must be a JSON object, got {type(record).__name__}")
    missing = [key for key in ("id", "expect", "response") if key not in record]
    where = f"record {_short(record['id'])}" if "id" in record else "record"
    if missing:
        raise ValueError(f"{where}: missing field(s): {', '.join(missing)}")
    if not isinstance(record["response"], str):
        raise ValueError(f"{where}: response must be a string")
    try:
        score = score_response(
            record["response"], record["expect"], record.get("tool"), tool_names, fmt
        )
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    out: dict = {"id": record["id"], "label": score.label, "score": score.score}
    if score.thought:
        out["thought"] = True
    return out
