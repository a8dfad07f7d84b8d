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
* Hostile text is scored in time linear in its length, and always labelled:
  a response is read up to MAX_RESPONSE_CHARS; code beyond MAX_CODE_CHARS (or
  nested, or holding braces, beyond the bounds below) or that Python's parser
  gives up on (SyntaxError, MemoryError, RecursionError) is code that does not
  parse: `invalid_code` inside the wrapper, no call outside it; JSON nested
  deeper than MAX_NESTING is not read as a call. A response that exhausts the
  interpreter all the same is `degenerate`.
"""

from __future__ import annotations

import ast
import json
import re
import reprlib
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


# --------------------------------------------------------------------------- think


def split_think(text: str) -> tuple[str, str]:
    """Split a response into (thinking, the rest), in one pass over the text."""
    thoughts: list[str] = []
    # Qwen3 chat templates may put `<think>` in the prompt, so the response starts
    # inside the block and only the closing tag is generated.
    close, open_ = text.find("</think>"), text.find("<think>")
    if close != -1 and (open_ == -1 or close < open_):
        thoughts.append(text[:close])
        text = text[close + len("</think>") :]
    rest: list[str] = []
    pos = 0
    while (open_ := text.find("<think>", pos)) != -1:
        close = text.find("</think>", open_ + len("<think>"))
        if close == -1:
            # An unclosed block runs to the end: generation stopped while thinking.
            thoughts.append(text[open_ + len("<think>") :])
            break
        thoughts.append(text[open_ + len("<think>") : close])
        rest.append(text[pos:open_])
        pos = close + len("</think>")
    else:
        open_ = len(text)
    rest.append(text[pos:open_])
    return "\n".join(thoughts), "\n".join(rest)


# --------------------------------------------------------------------------- bounds

# What the scorer reads of a response and hands to Python's parsers. Responses
# come from models gone wrong, so every step below is linear in the length of
# what it reads and every parser call is bounded; a response beyond a bound gets
# a label, never a crash or a minutes-long scan.
#
# A response is read up to MAX_RESPONSE_CHARS (about 250k tokens, far beyond any
# eval's max_tokens); the rest is ignored as if generation had stopped there.
MAX_RESPONSE_CHARS = 1_000_000
# Code handed to `ast.parse`: longer code, or code nesting brackets deeper than
# MAX_NESTING, counts as code that does not parse. The brace cap bounds
# CPython's f-string parser, which is quadratic in the fields of one f-string.
MAX_CODE_CHARS = 100_000
MAX_CODE_BRACES = 5_000
# JSON nested deeper than this is not read (the decoder recurses per level).
MAX_NESTING = 100
# Failed attempts to read bare JSON may scan at most this many times the text;
# past that the rest of the text is not searched for bare JSON calls.
_JSON_SCAN_BUDGET = 8


class _Finder:
    """Next occurrence of a needle at or after a position, for non-decreasing positions.

    The last answer is kept, so a text with many openers and no closer is
    scanned once instead of once per opener.
    """

    def __init__(self, text: str, needle: str | re.Pattern[str]) -> None:
        self._text = text
        self._needle = needle
        self._at = -2  # not searched yet

    def find(self, pos: int) -> int:
        if self._at == -2 or (self._at != -1 and self._at < pos):
            if isinstance(self._needle, str):
                self._at = self._text.find(self._needle, pos)
            else:
                match = self._needle.search(self._text, pos)
                self._at = match.start() if match else -1
        return self._at


@dataclass(frozen=True)
class Segment:
    """One tagged block: `<tool_call>…`, `<function=NAME>…`, `<parameter=NAME>…` or a fence."""

    start: int  # where the opening tag starts
    end: int  # after the closing tag (or where the block stops when the tag is missing)
    name: str | None  # NAME of `<function=NAME>` / `<parameter=NAME>`, else None
    content: str


_NAME_END_RE = re.compile(r"[>\s]")


def _segments(text: str, opener: str, close: str, stops: tuple[str, ...]) -> list[Segment]:
    """Blocks opened by `opener` and ended by `close`, by one of `stops` or by the end.

    A block ends at the first of these after its opening tag; `close` is part of
    the block, a stop is not (it opens what follows). An opener ending in "=" takes
    a name up to ">" (`<function=NAME>`); one whose name is not closed by ">" is
    not an opening tag.
    """
    opens, closes = _Finder(text, opener), _Finder(text, close)
    stop_finders = [_Finder(text, stop) for stop in stops]
    name_ends = _Finder(text, _NAME_END_RE)
    found: list[Segment] = []
    pos = 0
    while (start := opens.find(pos)) != -1:
        body, name = start + len(opener), None
        if opener.endswith("="):
            name_end = name_ends.find(body)
            if name_end in (-1, body) or text[name_end] != ">":
                pos = start + 1
                continue
            name, body = text[body:name_end], name_end + 1
        content_end = block_end = len(text)
        closed_at = closes.find(body)
        if closed_at != -1:
            content_end, block_end = closed_at, closed_at + len(close)
        for finder in stop_finders:
            stop = finder.find(body)
            if stop != -1 and stop < content_end:
                content_end = block_end = stop
        found.append(Segment(start, block_end, name, text[body:content_end]))
        pos = block_end
    return found


def cut_out(text: str, segments: list[Segment]) -> str:
    """`text` with each segment replaced by a newline (what is left outside the tags)."""
    parts, pos = [], 0
    for seg in segments:
        parts.append(text[pos : seg.start])
        pos = seg.end
    parts.append(text[pos:])
    return "\n".join(parts)


def tool_call_blocks(text: str) -> list[Segment]:
    # Closing tags are optional: a block also ends where the next one starts or at the end.
    return _segments(text, "<tool_call>", "</tool_call>", ("<tool_call>",))


def function_blocks(text: str) -> list[Segment]:
    return _segments(text, "<function=", "</function>", ("<function=", "</tool_call>"))


def parameters(function_body: str) -> dict[str, str]:
    """The `<parameter=NAME>` values of one `<function=…>` block."""
    blocks = _segments(function_body, "<parameter=", "</parameter>", ("<parameter=", "</function>"))
    return {b.name or "": _strip_one_newline(b.content) for b in blocks}


def fence_blocks(text: str) -> list[Segment]:
    """Markdown code fences: "```lang\\n…```", the closing fence optional at the end."""
    found: list[Segment] = []
    opens, closes, newlines = _Finder(text, "```"), _Finder(text, "```"), _Finder(text, "\n")
    pos = 0
    while (start := opens.find(pos)) != -1:
        line_end = newlines.find(start + 3)
        if line_end == -1:
            break  # no line after the opening fence, here or further on
        closed_at = closes.find(line_end + 1)
        end = len(text) if closed_at == -1 else closed_at + 3
        content_end = len(text) if closed_at == -1 else closed_at
        found.append(Segment(start, end, None, text[line_end + 1 : content_end]))
        pos = end
    return found


def fence_body(text: str) -> str | None:
    """What a text that is one fenced block ("```lang\\n…```") holds, else None."""
    if not text.startswith("```") or (line_end := text.find("\n", 3)) == -1:
        return None
    body = text[line_end + 1 :].rstrip()
    return body.removesuffix("```")


def strip_fence(text: str) -> str:
    """The code inside a text that is one fenced block, else the text itself."""
    body = fence_body(text)
    return text if body is None else body.strip()


def _strip_one_newline(value: str) -> str:
    # Qwen3 XML puts the value on its own lines: "<parameter=code>\n…\n</parameter>".
    value = value.removeprefix("\n")
    return value.removesuffix("\n")


_TAG_NAME_RE = re.compile(r"[A-Za-z_]*")


def _strip_partial_tag(code: str) -> str:
    """Drop a closing tag cut in the middle by the end of generation ("…\\n</param")."""
    cut = code.rfind("</")
    return code[:cut] if cut != -1 and _TAG_NAME_RE.fullmatch(code, cut + 2) else code


# --------------------------------------------------------------------------- bounded parsing

_BRACKET_RE = re.compile(r"[\[\](){}]")
_OPENERS = frozenset("([{")


def _nesting(text: str) -> int:
    """Deepest bracket nesting in `text`, counted plainly (brackets in strings count too)."""
    depth = deepest = 0
    for match in _BRACKET_RE.finditer(text):
        if match.group() in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(depth - 1, 0)
    return deepest


def _too_deep_starts(text: str, limit: int = MAX_NESTING) -> set[int]:
    """Positions of the brackets with more than `limit` levels open inside them.

    One pass with a stack of open brackets; each bracket is marked at most once,
    so the pass stays linear however deep the text goes.
    """
    stack: list[int] = []
    marked = 0  # stack[:marked] are marked already
    deep: set[int] = set()
    for match in _BRACKET_RE.finditer(text):
        if match.group() in _OPENERS:
            stack.append(match.start())
            if len(stack) - limit > marked:
                deep.update(stack[marked : len(stack) - limit])
                marked = len(stack) - limit
        elif stack:
            stack.pop()
            marked = min(marked, len(stack))
    return deep


def parse_python(code: str | None) -> ast.Module | None:
    """The syntax tree of a response's code (indented, or cut in a closing tag), or None."""
    if code is None or len(code) > MAX_CODE_CHARS:
        return None
    return parse_code(textwrap.dedent(_strip_partial_tag(code)))


def parse_code(code: str) -> ast.Module | None:
    """The syntax tree of `code` as written; None if it does not parse or is beyond the bounds."""
    if not _parseable(code):
        return None
    try:
        with warnings.catch_warnings():
            # Model code often has "\d" style escapes; that is a warning, not an error.
            warnings.simplefilter("ignore")
            return ast.parse(code)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
        # CPython reports input beyond its parser's own limits (long operator
        # chains, thousands of tokens on a line it cannot parse) as MemoryError
        # or RecursionError: code that does not parse, like any syntax error.
        return None


def _parseable(code: str) -> bool:
    return (
        len(code) <= MAX_CODE_CHARS
        and code.count("{") <= MAX_CODE_BRACES
        and _nesting(code) <= MAX_NESTING
    )


def json_prefix(text: str) -> object:
    """The JSON value at the start of `text` (trailing text allowed), or None."""
    if 0 in _too_deep_starts(text):
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
    too_deep = _too_deep_starts(text)
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


_OBJECT_START_RE = re.compile(r"\{\s*[\"}]")
_JSON_WINDOW = 256
# A decode error this close to the end of the window may be the window's doing
# (a number or literal cut short); the longest literal is "-Infinity".
_CUT_MARGIN = 16


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


# --------------------------------------------------------------------------- finding calls


@dataclass(frozen=True)
class _Call:
    """One call found in a response (outside any think block)."""

    name: str | None  # None: a <tool_call> whose content names no tool
    syntax: str  # "json" | "xml" | "python" | "unreadable"
    where: str  # "tool_call": inside <tool_call>; "function": bare <function=…>; "bare"
    arguments: object = None


def _find_calls(body: str, names: frozenset[str]) -> list[_Call]:
    """All calls in `body`: native ones (tagged JSON, XML) and bare JSON / Python ones."""
    calls: list[_Call] = []
    blocks = tool_call_blocks(body)
    for block in blocks:
        calls.extend(_read_tool_call(block.content, names))
    rest = cut_out(body, blocks)
    functions = function_blocks(rest)
    calls.extend(_xml_call(f, "function") for f in functions)
    calls.extend(_bare_calls(cut_out(rest, functions), names))
    return calls


def _read_tool_call(content: str, names: frozenset[str]) -> list[_Call]:
    """Read the inside of one <tool_call> block."""
    text = strip_fence(content.strip())
    if not text:
        return []  # a bare `<tool_call>` at the very end: nothing was called yet
    if "<function=" in text:
        return [_xml_call(f, "tool_call") for f in function_blocks(text)]
    if text.startswith("{"):
        obj = json_prefix(text)
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            return [_Call(obj["name"], "json", "tool_call", obj.get("arguments"))]
        return [_Call(None, "unreadable", "tool_call")]
    # Python straight inside the tags, no wrapper (seen in the seeds' training data).
    tree = parse_python(text)
    if tree is None:
        return [_Call(None, "unreadable", "tool_call")]
    found = [_Call(n, "python", "tool_call") for n in _called_names(tree, names)]
    return found or [_Call(None, "python", "tool_call")]


def _xml_call(function: Segment, where: str) -> _Call:
    return _Call(function.name, "xml", where, parameters(function.content))


def _bare_calls(text: str, names: frozenset[str]) -> list[_Call]:
    """Calls written outside any tag: Python in fences or on its own lines, bare JSON."""
    fences = fence_blocks(text)
    pieces = [f.content for f in fences]
    pieces.append(cut_out(text, fences))
    calls: list[_Call] = []
    for piece in pieces:
        for tree in _python_trees(piece):
            calls.extend(_Call(n, "python", "bare") for n in _called_names(tree, names))
        calls.extend(_bare_json_calls(piece, names))
    return calls


def _python_trees(piece: str) -> Iterator[ast.Module]:
    """Parse a piece as a whole; failing that (prose around code), line by line."""
    tree = parse_python(piece)
    if tree is not None:
        yield tree
        return
    for line in piece.splitlines():
        tree = parse_python(line.strip())
        if tree is not None:
            yield tree


def _bare_json_calls(text: str, names: frozenset[str]) -> Iterator[_Call]:
    # Only objects shaped like a call of a known tool count: {"name": TOOL, "arguments": …}.
    for obj in json_objects(text):
        name = obj.get("name") if isinstance(obj, dict) else None
        if isinstance(name, str) and name in names and "arguments" in obj:
            yield _Call(obj["name"], "json", "bare", obj["arguments"])
            if obj["name"] == WRAPPER:
                yield from _wrapped_calls(obj["arguments"], names)


def _wrapped_calls(arguments: object, names: frozenset[str]) -> Iterator[_Call]:
    """Tool calls inside a wrapper that is not in native syntax: they count as bare calls."""
    tree = parse_python(_code_argument(arguments))
    if tree is not None:
        yield from (_Call(n, "python", "bare") for n in _called_names(tree, names))


def _code_argument(arguments: object) -> str | None:
    """The `code` argument of an execute_code call, in any of the shapes models write."""
    if isinstance(arguments, str):  # OpenAI style: arguments as a JSON string
        arguments = json_prefix(arguments.strip())
    if isinstance(arguments, dict) and isinstance(arguments.get("code"), str):
        return arguments["code"]
    return None


# execute_code("…") inside execute_code("…"): each level is a shorter string, but
# a bound keeps the recursion independent of what a response nests.
_MAX_WRAPPER_NESTING = 8


def _called_names(tree: ast.AST, names: frozenset[str], nesting: int = 0) -> set[str]:
    """Names in `names` that the code calls, as `f(…)` or `obj.f(…)`."""
    found: set[str] = set()
    for call in _calls_in(tree):
        func = call.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name not in names:
            continue
        found.add(name)
        if (
            name == WRAPPER
            and nesting < _MAX_WRAPPER_NESTING
            and call.args
            and isinstance(call.args[0], ast.Constant)
            and isinstance(call.args[0].value, str)
        ):
            # execute_code("typecheck('x')") in plain Python: look inside the string.
            inner = parse_python(call.args[0].value)
            if inner is not None:
                found |= _called_names(inner, names, nesting + 1)
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
            tree = parse_python(_code_argument(call.arguments))
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
    calls = _find_calls(body, known | {WRAPPER} if fmt == CODE_MODE else known)
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
