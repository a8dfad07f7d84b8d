"""The tool-call formats (jobs.formats): each reads its own calls, the name table
points at them, and every reader is total and linear on hostile text."""

from __future__ import annotations

import time

import pytest

from jobs import formats
from jobs.formats import (
    FORMATS,
    SYNTAXES,
    WRAPPER,
    Call,
    code_mode,
    find_calls,
    json_tools,
    python_calls,
    qwen3_xml,
)

NAMES = frozenset({"typecheck", "git_log", WRAPPER})
CODE = 'result = typecheck("src/app.py")\nprint(result.error_count)'


def test_the_name_tables_point_at_the_format_modules() -> None:
    assert FORMATS == {"code_mode": code_mode, "json_tools": json_tools}
    assert SYNTAXES == {"xml": qwen3_xml, "json": json_tools, "python": python_calls}


@pytest.mark.parametrize("syntax", ["xml", "json", "python"])
def test_every_syntax_is_a_plug_in_that_reads_what_it_writes(syntax: str) -> None:
    """One interface in every syntax module (like mlx-lm's tool parsers): the table
    is built from their NAMEs, and a call each one renders is read back as its own."""
    module = SYNTAXES[syntax]
    assert module.NAME == syntax
    written = module.render_call("typecheck", {"path": "src/"})
    assert module.read_bare("no call here", NAMES) == ([], "no call here")
    [call] = find_calls(f"Checking.\n{written}\nDone.", NAMES)
    assert (call.name, call.syntax) == ("typecheck", syntax)
    if syntax == "python":
        assert call.code == "typecheck(path='src/')"
    else:
        assert call.arguments == {"path": "src/"} and call.where == "tool_call"
        inside = written.removeprefix("<tool_call>\n").removesuffix("\n</tool_call>")
        [read] = module.read_tool_call(inside, NAMES)
        assert read == call
    assert python_calls.read_tool_call("not python (", NAMES)[0].syntax == "unreadable"


@pytest.mark.parametrize("fmt", ["code_mode", "json_tools"])
def test_every_suite_format_renders_its_call_in_its_own_syntax(fmt: str) -> None:
    module = FORMATS[fmt]
    assert module.FORMAT == fmt
    [call] = find_calls(module.render_call(WRAPPER, {"code": CODE}), NAMES)
    assert (call.name, call.where) == (WRAPPER, "tool_call")
    assert call.syntax == {"code_mode": "xml", "json_tools": "json"}[fmt]


# --------------------------------------------------------------------------- each format


def test_code_mode_writes_the_call_its_parser_reads() -> None:
    block = code_mode.render_code(CODE)
    assert block == (
        "<tool_call>\n<function=execute_code>\n<parameter=code>\n"
        f"{CODE}\n</parameter>\n</function>\n</tool_call>"
    )
    [call] = find_calls(block, NAMES)
    assert (call.name, call.syntax, call.where) == (WRAPPER, "xml", "tool_call")
    assert code_mode.code_argument(call.arguments) == CODE


def test_qwen3_xml_reads_functions_and_parameters_with_missing_closing_tags() -> None:
    text = "<tool_call>\n<function=git_log>\n<parameter=path>\nsrc/\n</parameter>\n<parameter=n>\n3"
    [block] = qwen3_xml.tool_call_blocks(text)
    [function] = qwen3_xml.function_blocks(block.content)
    assert function.name == "git_log"
    assert qwen3_xml.parameters(function.content) == {"path": "src/", "n": "3"}
    [call] = find_calls(text, NAMES)
    assert call == Call("git_log", "xml", "tool_call", {"path": "src/", "n": "3"})


def test_a_bare_function_block_is_an_xml_call_outside_the_tags() -> None:
    [call] = find_calls("<function=typecheck>\n<parameter=path>\na\n</parameter>", NAMES)
    assert (call.name, call.syntax, call.where) == ("typecheck", "xml", "function")


def test_json_tools_reads_native_and_bare_calls() -> None:
    native = json_tools.render_call("typecheck", {"path": "src/"})
    [call] = find_calls(native, NAMES)
    assert call == Call("typecheck", "json", "tool_call", {"path": "src/"})
    # Arguments as a JSON string (OpenAI style) are decoded on request.
    assert json_tools.arguments_object('{"path": "a"}') == {"path": "a"}
    bare = 'Call it like {"name": "git_log", "arguments": {}} — or {"name": "other"}.'
    assert find_calls(bare, NAMES) == [Call("git_log", "json", "bare", {})]


def test_a_bare_json_wrapper_yields_the_calls_in_its_code() -> None:
    text = '{"name": "execute_code", "arguments": {"code": "typecheck(\'a\')"}}'
    calls = find_calls(text, NAMES)
    assert calls[0] == Call(WRAPPER, "json", "bare", {"code": "typecheck('a')"})
    assert calls[1].name == "typecheck" and calls[1].inside == WRAPPER


def test_python_calls_are_parsed_not_searched() -> None:
    text = "Run typecheck(path) later.\n```python\nr = typecheck('a')\n```\n# git_log()"
    [call] = find_calls(text, NAMES)
    assert (call.name, call.syntax, call.where) == ("typecheck", "python", "bare")
    # An annotation is never a call ("Usage: typecheck(path)"), a method call is.
    assert find_calls("Usage: typecheck(path)", NAMES) == []
    assert [c.name for c in find_calls("repo.git_log()", NAMES)] == ["git_log"]


def test_python_inside_tool_call_tags_and_code_that_does_not_parse() -> None:
    [call] = find_calls(f"<tool_call>\n{CODE}\n</tool_call>", NAMES)
    assert (call.name, call.syntax, call.code) == ("typecheck", "python", CODE)
    [bad] = find_calls("<tool_call>\ndef (:\n</tool_call>", NAMES)
    assert (bad.name, bad.syntax, bad.code) == (None, "unreadable", "def (:")
    [json_bad] = find_calls('<tool_call>{"nam": 1}</tool_call>', NAMES)
    assert (json_bad.syntax, json_bad.code) == ("unreadable", None)


def test_calls_in_think_blocks_do_not_count() -> None:
    assert find_calls(f"<think>{code_mode.render_code(CODE)}</think>Done.", NAMES) == []
    # The prompt may open the block: only its end is generated.
    assert find_calls(f"{code_mode.render_code(CODE)}</think>Done.", NAMES) == []


def test_nested_execute_code_strings_are_looked_into() -> None:
    tree = python_calls.parse_python("execute_code(\"git_log('x')\")")
    assert tree is not None
    assert python_calls.called_names(tree, NAMES) == {WRAPPER, "git_log"}


# --------------------------------------------------------------------------- hostile text

HOSTILE = {
    "open tool_call tags": "<tool_call>" * 50_000,
    "open functions": "<function=a>" * 50_000,
    "names never closed": "<function=" * 50_000,
    "open parameters": "<tool_call><function=execute_code>" + "<parameter=code>" * 50_000,
    "open fences": "```\n" * 50_000,
    "open braces": "{" * 200_000,
    "brace keys": '{"a": ' * 50_000,
    "deep brackets": "(" * 50_000 + ")" * 50_000,
    "deep code": code_mode.render_code("x = " + "[" * 5_000 + "]" * 5_000),
    "f-string braces": code_mode.render_code('f"' + "{x}" * 20_000 + '"'),
    "long operator chain": code_mode.render_code("x = " + " + ".join(["1"] * 60_000)),
    "open think": "<think>" * 50_000,
    "unterminated json": '{"name": "typecheck", "arguments": "' + "x" * 300_000,
    "nested wrappers": "execute_code(" * 30 + ")" * 30,
}


@pytest.mark.parametrize("shape", sorted(HOSTILE))
def test_every_reader_is_total_and_linear(shape: str) -> None:
    text = HOSTILE[shape]
    start = time.perf_counter()
    calls = find_calls(text, NAMES)
    assert isinstance(calls, list) and all(isinstance(c, Call) for c in calls)
    for block in (*formats.tool_call_blocks(text), *formats.fence_blocks(text)):
        assert isinstance(block.content, str)
    formats.split_think(text)
    assert python_calls.parse_python(text) is None or len(text) <= python_calls.MAX_CODE_CHARS
    json_tools.json_prefix(text)
    list(json_tools.json_objects(text))
    assert time.perf_counter() - start < 10, shape


def test_text_beyond_the_cap_is_not_read() -> None:
    text = "x " * (formats.MAX_RESPONSE_CHARS // 2) + code_mode.render_code(CODE)
    assert find_calls(text, NAMES) == []
