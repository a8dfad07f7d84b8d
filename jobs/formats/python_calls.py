"""Python tool calls: `typecheck("src/")` written as code, bare or in a wrapper.

Calls are found by parsing, never by keyword search: the code goes through
`ast`, so a tool named in a sentence, a comment or a string literal is not a
call. Every parse is bounded: code beyond MAX_CODE_CHARS, holding more than
MAX_CODE_BRACES braces or nesting brackets deeper than MAX_NESTING, and code
Python's parser gives up on, is code that does not parse (None), never an
exception.

A syntax module: NAME, `read_tool_call`, `read_bare` and `render_call`, as in
every module of `jobs.formats.SYNTAXES`.
"""

from __future__ import annotations

import ast
import re
import textwrap
import warnings
from collections.abc import Iterator, Mapping

from jobs.formats.call import Call
from jobs.formats.code_mode import WRAPPER
from jobs.formats.text import MAX_NESTING, fenced_pieces, nesting

NAME = "python"

# Code handed to `ast.parse`: longer code, or code nesting brackets deeper than
# MAX_NESTING, counts as code that does not parse. The brace cap bounds
# CPython's f-string parser, which is quadratic in the fields of one f-string.
MAX_CODE_CHARS = 100_000
MAX_CODE_BRACES = 5_000

# execute_code("…") inside execute_code("…"): each level is a shorter string, but
# a bound keeps the recursion independent of what a response nests.
_MAX_WRAPPER_NESTING = 8

_TAG_NAME_RE = re.compile(r"[A-Za-z_]*")


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
        and nesting(code) <= MAX_NESTING
    )


def _strip_partial_tag(code: str) -> str:
    """Drop a closing tag cut in the middle by the end of generation ("…\\n</param")."""
    cut = code.rfind("</")
    return code[:cut] if cut != -1 and _TAG_NAME_RE.fullmatch(code, cut + 2) else code


def read_tool_call(text: str, names: frozenset[str]) -> list[Call] | None:
    """Python straight inside `<tool_call>` tags, no wrapper (seen in earlier runs'
    training data). Read last: whatever the other syntaxes did not take is
    Python, or unreadable."""
    tree = parse_python(text)
    if tree is None:
        return [Call(None, "unreadable", "tool_call", code=text)]
    found = [Call(n, NAME, "tool_call", code=text) for n in called_names(tree, names)]
    return found or [Call(None, NAME, "tool_call", code=text)]


def read_bare(text: str, names: frozenset[str]) -> tuple[list[Call], str]:
    """Calls of `names` in Python written outside any tag, in fenced code or on
    lines of their own; the text stays as it is."""
    calls = [
        Call(n, NAME, "bare", code=code)
        for piece in fenced_pieces(text)
        for code, tree in python_trees(piece)
        for n in called_names(tree, names)
    ]
    return calls, text


def render_call(name: str, arguments: Mapping[str, object]) -> str:
    """One call in this format: `name(key=value, …)`, each value as a Python literal."""
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"


def python_trees(piece: str) -> Iterator[tuple[str, ast.Module]]:
    """(code, tree) of a piece parsed as a whole; failing that (prose around code),
    of each line that parses on its own."""
    tree = parse_python(piece)
    if tree is not None:
        yield piece, tree
        return
    for line in piece.splitlines():
        tree = parse_python(line.strip())
        if tree is not None:
            yield line.strip(), tree


def called_names(tree: ast.AST, names: frozenset[str], nesting_: int = 0) -> set[str]:
    """Names in `names` that the code calls, as `f(…)` or `obj.f(…)`.

    execute_code("typecheck('x')") written as plain Python is looked into: the
    tools called in its string count too.
    """
    found: set[str] = set()
    for call in _calls_in(tree):
        func = call.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name not in names:
            continue
        found.add(name)
        if (
            name == WRAPPER
            and nesting_ < _MAX_WRAPPER_NESTING
            and call.args
            and isinstance(call.args[0], ast.Constant)
            and isinstance(call.args[0].value, str)
        ):
            inner = parse_python(call.args[0].value)
            if inner is not None:
                found |= called_names(inner, names, nesting_ + 1)
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
