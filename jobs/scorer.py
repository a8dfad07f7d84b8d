"""Format-adherence scorer: one model response in, one label and score out.

The contract (labels, scores, what counts as a call) is the "Scorer" section of
DESIGN.md; the eval stage, `farm score` and the leaderboard all rely on it.

Calls are found by *parsing*, never by keyword search: Python code goes through
`ast` (a tool named in a sentence, a comment or a string literal is not a call)
and native tool calls through `json` or the Qwen3 XML grammar. Everything here is
pure: strings in, `Score` out, no I/O.

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
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
import warnings
from collections.abc import Collection, Iterator
from dataclasses import dataclass

CODE_MODE = "code_mode"
JSON_TOOLS = "json_tools"
FORMATS = (CODE_MODE, JSON_TOOLS)
EXPECTS = ("tool", "direct")

# The Code-Mode wrapper: the one native tool whose `code` argument runs Python.
WRAPPER = "execute_code"

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

# The 26 tool names of the runtime in the seeds (the demo Code-Mode suite's tool API).
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
        if need + p > n:
            continue
        run = 0
        for a, b in zip(seq, seq[p:], strict=False):
            run = run + 1 if a == b else 0
            if run >= need:
                return True
    return False


# --------------------------------------------------------------------------- think


def _split_think(text: str) -> tuple[str, str]:
    """Split a response into (thinking, the rest)."""
    thoughts: list[str] = []
    # Qwen3 chat templates may put `<think>` in the prompt, so the response starts
    # inside the block and only the closing tag is generated.
    close, open_ = text.find("</think>"), text.find("<think>")
    if close != -1 and (open_ == -1 or close < open_):
        thoughts.append(text[:close])
        text = text[close + len("</think>") :]

    def take(match: re.Match[str]) -> str:
        thoughts.append(match.group(1))
        return "\n"

    text = re.sub(r"<think>(.*?)</think>", take, text, flags=re.DOTALL)
    # An unclosed block runs to the end: generation stopped while thinking.
    open_ = text.find("<think>")
    if open_ != -1:
        thoughts.append(text[open_ + len("<think>") :])
        text = text[:open_]
    return "\n".join(thoughts), text


# --------------------------------------------------------------------------- finding calls


@dataclass(frozen=True)
class _Call:
    """One call found in a response (outside any think block)."""

    name: str | None  # None: a <tool_call> whose content names no tool
    syntax: str  # "json" | "xml" | "python" | "unreadable"
    where: str  # "tool_call": inside <tool_call>; "function": bare <function=…>; "bare"
    arguments: object = None


# Closing tags are optional: a segment also ends where the next one starts or at the end.
TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|(?=<tool_call>)|\Z)", re.DOTALL)
FUNCTION_RE = re.compile(
    r"<function=([^>\s]+)>(.*?)(?:</function>|(?=<function=)|(?=</tool_call>)|\Z)", re.DOTALL
)
PARAMETER_RE = re.compile(
    r"<parameter=([^>\s]+)>(.*?)(?:</parameter>|(?=<parameter=)|(?=</function>)|\Z)", re.DOTALL
)
FENCE_RE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
# A closing tag cut in the middle by the end of generation ("…\n</param").
_PARTIAL_TAG_RE = re.compile(r"</[A-Za-z_]*\Z")


def _find_calls(body: str, names: frozenset[str]) -> list[_Call]:
    """All calls in `body`: native ones (tagged JSON, XML) and bare JSON / Python ones."""
    calls: list[_Call] = []

    def tool_call(match: re.Match[str]) -> str:
        calls.extend(_read_tool_call(match.group(1), names))
        return "\n"

    rest = TOOL_CALL_RE.sub(tool_call, body)

    def function(match: re.Match[str]) -> str:
        calls.append(_xml_call(match, "function"))
        return "\n"

    rest = FUNCTION_RE.sub(function, rest)
    calls.extend(_bare_calls(rest, names))
    return calls


def _read_tool_call(content: str, names: frozenset[str]) -> list[_Call]:
    """Read the inside of one <tool_call> block."""
    text = _strip_fence(content.strip())
    if not text:
        return []  # a bare `<tool_call>` at the very end: nothing was called yet
    if "<function=" in text:
        return [_xml_call(m, "tool_call") for m in FUNCTION_RE.finditer(text)]
    if text.startswith("{"):
        obj = _json_prefix(text)
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            return [_Call(obj["name"], "json", "tool_call", obj.get("arguments"))]
        return [_Call(None, "unreadable", "tool_call")]
    # Python straight inside the tags, no wrapper (seen in the seeds' training data).
    tree = _parse_python(text)
    if tree is None:
        return [_Call(None, "unreadable", "tool_call")]
    found = [_Call(n, "python", "tool_call") for n in _called_names(tree, names)]
    return found or [_Call(None, "python", "tool_call")]


def _xml_call(match: re.Match[str], where: str) -> _Call:
    params = {m.group(1): _strip_one_newline(m.group(2)) for m in PARAMETER_RE.finditer(match[2])}
    return _Call(match.group(1), "xml", where, params)


def _strip_one_newline(value: str) -> str:
    # Qwen3 XML puts the value on its own lines: "<parameter=code>\n…\n</parameter>".
    value = value.removeprefix("\n")
    return value.removesuffix("\n")


def _strip_fence(text: str) -> str:
    match = re.fullmatch(r"```[^\n]*\n(.*?)(?:```)?\s*", text, flags=re.DOTALL)
    return match.group(1).strip() if match else text


def _json_prefix(text: str) -> object:
    """The JSON value at the start of `text` (trailing text allowed), or None."""
    try:
        return json.JSONDecoder().raw_decode(text)[0]
    except (ValueError, RecursionError):
        return None


def _bare_calls(text: str, names: frozenset[str]) -> list[_Call]:
    """Calls written outside any tag: Python in fences or on its own lines, bare JSON."""
    pieces = [m.group(1) for m in FENCE_RE.finditer(text)]
    pieces.append(FENCE_RE.sub("\n", text))
    calls: list[_Call] = []
    for piece in pieces:
        for tree in _python_trees(piece):
            calls.extend(_Call(n, "python", "bare") for n in _called_names(tree, names))
        calls.extend(_bare_json_calls(piece, names))
    return calls


def _python_trees(piece: str) -> Iterator[ast.Module]:
    """Parse a piece as a whole; failing that (prose around code), line by line."""
    tree = _parse_python(piece)
    if tree is not None:
        yield tree
        return
    for line in piece.splitlines():
        tree = _parse_python(line.strip())
        if tree is not None:
            yield tree


def _bare_json_calls(text: str, names: frozenset[str]) -> Iterator[_Call]:
    # Only objects shaped like a call of a known tool count: {"name": TOOL, "arguments": …}.
    decoder = json.JSONDecoder()
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):
            i = text.find("{", i + 1)
            continue
        name = obj.get("name") if isinstance(obj, dict) else None
        if isinstance(name, str) and name in names and "arguments" in obj:
            yield _Call(obj["name"], "json", "bare", obj["arguments"])
            if obj["name"] == WRAPPER:
                yield from _wrapped_calls(obj["arguments"], names)
        i = text.find("{", end)


def _wrapped_calls(arguments: object, names: frozenset[str]) -> Iterator[_Call]:
    """Tool calls inside a wrapper that is not in native syntax: they count as bare calls."""
    tree = _parse_python(_code_argument(arguments))
    if tree is not None:
        yield from (_Call(n, "python", "bare") for n in _called_names(tree, names))


def _code_argument(arguments: object) -> str | None:
    """The `code` argument of an execute_code call, in any of the shapes models write."""
    if isinstance(arguments, str):  # OpenAI style: arguments as a JSON string
        arguments = _json_prefix(arguments.strip())
    if isinstance(arguments, dict) and isinstance(arguments.get("code"), str):
        return arguments["code"]
    return None


def _parse_python(code: str | None) -> ast.Module | None:
    if code is None:
        return None
    code = textwrap.dedent(_PARTIAL_TAG_RE.sub("", code))
    try:
        with warnings.catch_warnings():
            # Model code often has "\d" style escapes; that is a warning, not an error.
            warnings.simplefilter("ignore")
            return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return None


def _called_names(tree: ast.AST, names: frozenset[str]) -> set[str]:
    """Names in `names` that the code calls, as `f(…)` or `obj.f(…)`."""
    found: set[str] = set()
    for call in _calls_in(tree):
        func = call.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name not in names:
            continue
        found.add(name)
        if name == WRAPPER and call.args and isinstance(call.args[0], ast.Constant):
            # execute_code("typecheck('x')") in plain Python: look inside the string.
            inner = _parse_python(
                call.args[0].value if isinstance(call.args[0].value, str) else None
            )
            if inner is not None:
                found |= _called_names(inner, names)
    return found


def _calls_in(tree: ast.AST) -> Iterator[ast.Call]:
    # Annotations are skipped: "Usage: typecheck(path)" in prose parses as an
    # annotated name, and an annotation is never executed as a call.
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Call):
            yield node
        for field, value in ast.iter_fields(node):
            if field in ("annotation", "returns"):
                continue
            if isinstance(value, ast.AST):
                stack.append(value)
            elif isinstance(value, list):
                stack.extend(v for v in value if isinstance(v, ast.AST))


# --------------------------------------------------------------------------- labels


def _satisfies(called: set[str], expected: frozenset[str], known: frozenset[str]) -> bool:
    # With no expected tool given, any known tool will do.
    return expected <= called if expected else bool(called & known)


def _label_code_mode(calls: list[_Call], expected: frozenset[str], known: frozenset[str]) -> str:
    wrapped: set[str] = set()  # tools called inside execute_code wrappers whose code parses
    outside: set[str] = set()  # tools called any other way
    wrappers = parsed = unreadable = other = False
    for call in calls:
        native_wrapper = call.name == WRAPPER and (
            call.syntax == "xml" or (call.syntax == "json" and call.where == "tool_call")
        )
        if native_wrapper:
            wrappers = True
            tree = _parse_python(_code_argument(call.arguments))
            if tree is not None:
                parsed = True
                wrapped |= _called_names(tree, known)
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


def _label_json_tools(calls: list[_Call], expected: frozenset[str], known: frozenset[str]) -> str:
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
    raise ValueError(f"tool must be a tool name or a list of tool names, got {tool!r}")


def score_response(
    response: str,
    expect: str,
    tool: str | list[str] | None,
    tool_names: Collection[str] = DEFAULT_TOOL_NAMES,
    fmt: str = CODE_MODE,
) -> Score:
    """Label one response to a prompt that expects a tool call or a direct answer."""
    if expect not in EXPECTS:
        raise ValueError(f"expect must be 'tool' or 'direct', got {expect!r}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    expected = _expected_tools(tool)

    thinking, body = _split_think(response)
    if not thinking.strip() and not body.strip():
        return _score("empty")
    if is_degenerate(response):
        return _score("degenerate")

    known = frozenset(tool_names) | expected
    # execute_code is recognised as a call name too, so a plain-Python
    # execute_code("…") is seen (and looked into) rather than ignored.
    calls = _find_calls(body, known | {WRAPPER} if fmt == CODE_MODE else known)
    if expect == "tool":
        label = (_label_code_mode if fmt == CODE_MODE else _label_json_tools)(
            calls, expected, known
        )
    else:
        label = "unneeded_tool" if calls else ("direct_answer" if body.strip() else "")
    if not label:
        label = "prose" if body.strip() else "think"
    return _score(label, thought=bool(thinking.strip()) and label in _THOUGHT_LABELS)


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
    where = f"record {record['id']!r}" if "id" in record else "record"
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
