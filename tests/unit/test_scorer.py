"""Tests for the format-adherence scorer (docs/architecture.md, "Scorer (`farm score`)")."""

from __future__ import annotations

import json

import pytest

from jobs.scorer import (
    DEFAULT_TOOL_NAMES,
    LABEL_SCORES,
    Score,
    is_degenerate,
    score_record,
    score_response,
)


def xml_wrapper(code: str) -> str:
    """The Code-Mode call exactly as the models write it."""
    return (
        "<tool_call>\n<function=execute_code>\n<parameter=code>\n"
        f"{code}\n</parameter>\n</function>\n</tool_call>"
    )


def json_call(name: str, arguments: dict) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


TYPECHECK_CODE = 'result = typecheck("src/app.py")\nprint(result.error_count)'


def label(response: str, expect: str = "tool", tool=None, **kw) -> str:
    if expect == "tool" and tool is None:
        tool = "typecheck"
    return score_response(response, expect, tool, **kw).label


# --------------------------------------------------------------------------- the table


def test_label_scores_match_design_table():
    assert LABEL_SCORES == {
        "execute_code": 1.0,
        "wrong_tool": 0.25,
        "invalid_code": 0.25,
        "direct_call": 0.5,
        "prose": 0.0,
        "think": 0.0,
        "degenerate": 0.0,
        "empty": 0.0,
        "direct_answer": 1.0,
        "unneeded_tool": 0.0,
        "tool_call": 1.0,
        "invalid_call": 0.25,
    }


def test_default_tool_names_are_the_26_runtime_tools():
    assert len(DEFAULT_TOOL_NAMES) == 26
    assert {"read_file", "typecheck", "git_diff", "validate_route_pattern"} <= DEFAULT_TOOL_NAMES
    assert "execute_code" not in DEFAULT_TOOL_NAMES


def test_score_carries_the_label_score():
    assert score_response(xml_wrapper(TYPECHECK_CODE), "tool", "typecheck") == Score(
        "execute_code", 1.0, False
    )
    assert score_response("I'd run the type checker.", "tool", "typecheck") == Score("prose", 0.0)


# ------------------------------------------------------------------ code_mode, execute_code


def test_execute_code_xml_wrapper():
    assert label(xml_wrapper(TYPECHECK_CODE)) == "execute_code"


def test_execute_code_json_wrapper():
    response = json_call("execute_code", {"code": TYPECHECK_CODE})
    assert label(response) == "execute_code"


def test_execute_code_json_wrapper_with_arguments_as_json_string():
    payload = {"name": "execute_code", "arguments": json.dumps({"code": TYPECHECK_CODE})}
    assert label(f"<tool_call>{json.dumps(payload)}</tool_call>") == "execute_code"


def test_execute_code_method_style_call_counts():
    assert label(xml_wrapper('r = tools.typecheck("a.py")')) == "execute_code"


@pytest.mark.parametrize(
    "cut",
    ["\n</tool_call>", "\n</function>\n</tool_call>", "\n</parameter>\n</function>\n</tool_call>"],
)
def test_missing_closing_tags_at_the_end_are_accepted(cut):
    response = xml_wrapper(TYPECHECK_CODE)
    assert response.endswith(cut)
    assert label(response.removesuffix(cut)) == "execute_code"


def test_closing_tag_cut_in_the_middle_at_the_end_is_accepted():
    response = xml_wrapper(TYPECHECK_CODE).removesuffix("ameter>\n</function>\n</tool_call>")
    assert response.endswith("</par")
    assert label(response) == "execute_code"


def test_json_wrapper_missing_closing_tag():
    response = json_call("execute_code", {"code": TYPECHECK_CODE}).removesuffix("</tool_call>")
    assert label(response) == "execute_code"


def test_missing_tool_call_opener_with_function_tag_is_the_wrapper():
    response = xml_wrapper(TYPECHECK_CODE).removeprefix("<tool_call>\n")
    assert response.startswith("<function=execute_code>")
    assert label(response) == "execute_code"


def test_text_before_the_wrapper_is_fine():
    assert label("Let me check the types.\n\n" + xml_wrapper(TYPECHECK_CODE)) == "execute_code"


def test_indented_code_in_wrapper_is_dedented():
    code = "    r = typecheck('a.py')\n    print(r.error_count)"
    assert label(xml_wrapper(code)) == "execute_code"


# --------------------------------------------------------------------------- multi-tool


def test_multi_tool_all_called_is_execute_code():
    code = "s = git_status()\nd = git_diff()\nprint(s.files, d.diff)"
    assert label(xml_wrapper(code), tool=["git_status", "git_diff"]) == "execute_code"


def test_multi_tool_one_missing_is_wrong_tool():
    code = "s = git_status()\nprint(s.files)"
    assert label(xml_wrapper(code), tool=["git_status", "git_diff"]) == "wrong_tool"


def test_multi_tool_across_two_wrappers_counts():
    response = xml_wrapper("git_status()") + "\n" + xml_wrapper("git_diff()")
    assert label(response, tool=["git_status", "git_diff"]) == "execute_code"


def test_multi_tool_direct_calls_need_all_tools():
    both = json_call("git_status", {}) + json_call("git_diff", {})
    one = json_call("git_status", {})
    assert label(both, tool=["git_status", "git_diff"]) == "direct_call"
    assert label(one, tool=["git_status", "git_diff"]) == "wrong_tool"


# ------------------------------------------------------------------ wrong_tool, invalid_code


def test_wrong_tool_in_wrapper():
    assert label(xml_wrapper('r = ruff_check("src/")\nprint(r)')) == "wrong_tool"


def test_tool_in_string_inside_wrapper_is_not_a_call():
    assert label(xml_wrapper("print(\"call typecheck('src/app.py') next\")")) == "wrong_tool"


def test_tool_in_comment_inside_wrapper_is_not_a_call():
    assert label(xml_wrapper('# typecheck("src/app.py")\nprint("todo")')) == "wrong_tool"


def test_tool_name_referenced_but_not_called_in_wrapper():
    assert label(xml_wrapper("f = typecheck\nprint(f)")) == "wrong_tool"


def test_invalid_code_in_xml_wrapper():
    assert label(xml_wrapper('result = typecheck("src/app.py"\nprint(result')) == "invalid_code"


def test_invalid_code_in_json_wrapper():
    response = json_call("execute_code", {"code": "for x in typecheck('a'):\nprint(x)"})
    assert label(response) == "invalid_code"


def test_wrapper_without_code_parameter_is_invalid_code():
    response = "<tool_call>\n<function=execute_code>\n<parameter=path>\nsrc\n</parameter>\n"
    assert label(response) == "invalid_code"


def test_tool_call_tag_with_garbage_is_invalid_code():
    assert label("<tool_call>\nI will check the types now.\n</tool_call>") == "invalid_code"


# --------------------------------------------------------------------------- direct_call


def test_direct_call_native_json():
    response = '<tool_call>{"name": "typecheck", "arguments": {"path": "src/app.py"}}</tool_call>'
    assert label(response) == "direct_call"


def test_direct_call_qwen_xml():
    response = (
        "<tool_call>\n<function=typecheck>\n<parameter=path>\nsrc/app.py\n"
        "</parameter>\n</function>\n</tool_call>"
    )
    assert label(response) == "direct_call"


def test_direct_call_bare_python_in_fence():
    response = 'I will run the checker:\n\n```python\nresult = typecheck("x.py")\n```'
    assert label(response) == "direct_call"


def test_direct_call_bare_python_on_its_own_line():
    assert label('Checking now.\ntypecheck("x.py")\nDone.') == "direct_call"


def test_direct_call_python_inside_tool_call_without_wrapper():
    assert (
        label('<tool_call>result = typecheck("src/")\nprint(result)</tool_call>') == "direct_call"
    )


def test_direct_call_bare_json_without_tags():
    response = (
        'I\'ll use the typecheck tool.\n\n{\n  "name": "typecheck",\n'
        '  "arguments": {"path": "src/"}\n}'
    )
    assert label(response) == "direct_call"


def test_plain_python_execute_code_call_is_a_direct_call_of_what_it_wraps():
    response = '```python\nresult = execute_code("""\ntypecheck(path="src/")\n""")\n```'
    assert label(response) == "direct_call"


def test_expected_tools_split_between_wrapper_and_direct_call_is_direct_call():
    response = xml_wrapper("git_status()") + "\n" + json_call("git_diff", {})
    assert label(response, tool=["git_status", "git_diff"]) == "direct_call"


def test_direct_call_of_another_tool_is_wrong_tool():
    assert label(json_call("read_file", {"path": "a.py"})) == "wrong_tool"


# --------------------------------------------------------------------------- prose


def test_prose_no_call():
    assert label("I'll help you with that. Let me first check the project structure.") == "prose"


def test_tool_named_in_a_sentence_is_not_a_call():
    assert label("You can use typecheck to find the errors in src/app.py.") == "prose"


def test_tool_call_written_inline_in_a_sentence_is_not_a_call():
    assert label('Run `typecheck("src/app.py")` and look at error_count.') == "prose"


def test_tool_in_python_comment_is_not_a_call():
    assert label('```python\n# typecheck("src/app.py")\nx = 1\n```') == "prose"


def test_tool_in_string_literal_is_not_a_call():
    assert label("```python\nprint(\"typecheck('src/app.py')\")\n```") == "prose"


def test_usage_line_in_prose_is_not_a_call():
    # Parses as an annotated name; the annotation is never executed.
    assert label("Usage: typecheck(path)") == "prose"


def test_unknown_function_call_is_not_a_tool_call():
    assert label('```python\nprint(check_types("src"))\n```') == "prose"


def test_tool_names_come_from_the_suite():
    response = 'my_tool("x")'
    assert label(response, tool="my_tool", tool_names={"other"}) == "direct_call"
    assert label(response, tool="other", tool_names={"other"}) == "prose"
    assert label(response, tool="other", tool_names={"other", "my_tool"}) == "wrong_tool"


def test_no_expected_tool_any_known_tool_satisfies():
    assert score_response(xml_wrapper("git_log()"), "tool", None).label == "execute_code"
    assert score_response(xml_wrapper("print(1)"), "tool", None).label == "wrong_tool"


# --------------------------------------------------------------------------- think


def test_think_only():
    assert label("<think>\nThe user wants types checked. I should call typecheck.\n</think>") == (
        "think"
    )


def test_call_inside_think_does_not_count():
    response = f"<think>\nMaybe:\n{xml_wrapper(TYPECHECK_CODE)}\n</think>\n"
    assert label(response) == "think"


def test_unclosed_think_is_think():
    assert label("<think>\nLet me figure out which tool to use") == "think"


def test_think_then_call_is_scored_by_the_call_and_flagged():
    response = "<think>\nI need the type checker.\n</think>\n\n" + xml_wrapper(TYPECHECK_CODE)
    assert score_response(response, "tool", "typecheck") == Score("execute_code", 1.0, True)


def test_think_then_direct_call_is_flagged():
    response = "<think>\nI need typecheck.\n</think>\n" + json_call("typecheck", {"path": "a"})
    assert score_response(response, "tool", "typecheck") == Score("direct_call", 0.5, True)


def test_think_opened_in_the_prompt_only_closing_tag_generated():
    response = "I need the type checker.\n</think>\n\n" + xml_wrapper(TYPECHECK_CODE)
    assert score_response(response, "tool", "typecheck") == Score("execute_code", 1.0, True)


def test_no_think_no_flag():
    assert score_response(xml_wrapper(TYPECHECK_CODE), "tool", "typecheck").thought is False


def test_empty_think_preamble_is_not_flagged():
    response = "<think>\n\n</think>\n\n" + xml_wrapper(TYPECHECK_CODE)
    assert score_response(response, "tool", "typecheck") == Score("execute_code", 1.0, False)


def test_think_then_prose_is_prose_not_flagged():
    response = "<think>\nhmm\n</think>\nI'll help you with that."
    assert score_response(response, "tool", "typecheck") == Score("prose", 0.0, False)


# --------------------------------------------------------------------------- expect=direct


def test_direct_answer():
    response = "Dependency injection passes a component its collaborators instead of building them."
    assert score_response(response, "direct", None) == Score("direct_answer", 1.0)


def test_direct_answer_naming_a_tool_is_still_an_answer():
    assert label("You could run typecheck, but the answer is: no.", expect="direct") == (
        "direct_answer"
    )


def test_direct_answer_after_think_is_flagged():
    response = "<think>\nNo tool needed.\n</think>\n\nA Protocol is a structural interface."
    assert score_response(response, "direct", None) == Score("direct_answer", 1.0, True)


def test_direct_with_code_example_without_tool_calls_is_an_answer():
    response = "Like this:\n\n```python\nwith open('a.txt') as fh:\n    data = fh.read()\n```"
    assert label(response, expect="direct") == "direct_answer"


@pytest.mark.parametrize(
    "response",
    [
        xml_wrapper(TYPECHECK_CODE),
        json_call("read_file", {"path": "a.py"}),
        json_call("some_unknown_tool", {}),
        '```python\nread_file("README.md")\n```',
        "<tool_call>\n<function=hover>\n<parameter=symbol>\nFoo\n</parameter>\n",
    ],
)
def test_unneeded_tool(response):
    assert score_response(response, "direct", None) == Score("unneeded_tool", 0.0)


def test_direct_think_only_is_think():
    assert label("<think>\nWhat is DI?", expect="direct") == "think"


# --------------------------------------------------------------------------- empty


@pytest.mark.parametrize("response", ["", "   ", "\n" * 500, " \n\t\n" * 50])
@pytest.mark.parametrize("expect", ["tool", "direct"])
def test_empty(response, expect):
    assert score_response(response, expect, "typecheck") == Score("empty", 0.0)


def test_empty_think_block_and_nothing_else_is_empty():
    assert label("<think>\n\n</think>\n\n") == "empty"


# --------------------------------------------------------------------------- degenerate

PHRASE = "I will check the file first."


@pytest.mark.parametrize(
    "response",
    [
        "the " * 100,
        "The answer is " + "the " * 60,
        " ".join([PHRASE] * 20),
        "Let me look.\n" + 'run_command("grep -r class.*Protocol .")\n' * 20,
        "return\n" * 40,
        "ab" * 200,
        "<think>\n" + "Wait, let me reconsider. " * 30 + "</think>\n" + xml_wrapper(TYPECHECK_CODE),
        xml_wrapper(TYPECHECK_CODE) + "\n" + "</tool_call>\n" * 40,
    ],
    ids=[
        "word",
        "word-after-text",
        "phrase",
        "line",
        "short-line",
        "no-whitespace",
        "loop-in-think",
        "loop-after-call",
    ],
)
@pytest.mark.parametrize("expect", ["tool", "direct"])
def test_degenerate(response, expect):
    assert is_degenerate(response)
    assert score_response(response, expect, "typecheck") == Score("degenerate", 0.0)


def test_degenerate_thresholds():
    # Single word: 32 in a row; a 6-token sentence: 6 in a row; 8+ tokens: 4 in a row.
    assert not is_degenerate("the " * 31)
    assert is_degenerate("the " * 32)
    assert not is_degenerate(" ".join([PHRASE] * 5))
    assert is_degenerate(" ".join([PHRASE] * 6))
    line = 'result = typecheck("src/app.py") and print(result.error_count) or None  # ten tokens\n'
    assert len(line.split()) == 10
    assert not is_degenerate(line * 3)
    assert is_degenerate(line * 4)
    sentence = "Then I will open the file, read it, and report every error that it contains."
    assert len(sentence.split()) == 15
    assert not is_degenerate(" ".join([sentence] * 3))
    assert is_degenerate(" ".join([sentence] * 4))
    assert not is_degenerate("=" * 159)
    assert is_degenerate("=" * 160)


LEGIT_CODE = """\
import os
import sys
import json
from pathlib import Path
from typing import Any

GRID = [[0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0]]


def main() -> None:
    print("=" * 80)
    print()
    print()
    print()
    for name in ["a.py", "b.py", "c.py"]:
        result = typecheck(name)
        print(result.error_count)
        print(result.error_count)
        print(result.error_count)
    print("=" * 80)
"""

LEGIT_ANSWER = """\
| tool | result | notes |
| --- | --- | --- |
| typecheck | ok | - |
| ruff_check | ok | - |

Very, very, very important: check the config, then check the config again.
- item one
- item two
- item three
"""


@pytest.mark.parametrize("text", [LEGIT_CODE, LEGIT_ANSWER])
def test_legit_repetition_is_not_degenerate(text):
    assert not is_degenerate(text)


def test_legit_code_with_repeated_lines_scores_normally():
    assert label(xml_wrapper(LEGIT_CODE)) == "execute_code"
    assert label(LEGIT_ANSWER, expect="direct") == "direct_answer"


# --------------------------------------------------------------------------- json_tools

J = {"fmt": "json_tools"}


def test_json_tools_tool_call():
    response = json_call("typecheck", {"path": "src/app.py"})
    assert score_response(response, "tool", "typecheck", fmt="json_tools") == Score(
        "tool_call", 1.0
    )


def test_json_tools_tool_call_missing_closing_tag():
    response = json_call("typecheck", {"path": "a"}).removesuffix("</tool_call>")
    assert label(response, **J) == "tool_call"


def test_json_tools_json_in_a_fence_inside_the_tags():
    response = '<tool_call>\n```json\n{"name": "typecheck", "arguments": {}}\n```\n</tool_call>'
    assert label(response, **J) == "tool_call"


def test_json_tools_multi_tool():
    both = json_call("git_status", {}) + "\n" + json_call("git_diff", {})
    one = json_call("git_status", {})
    assert label(both, tool=["git_status", "git_diff"], **J) == "tool_call"
    assert label(one, tool=["git_status", "git_diff"], **J) == "wrong_tool"


def test_json_tools_wrong_tool():
    assert label(json_call("read_file", {"path": "a"}), **J) == "wrong_tool"


def test_json_tools_invalid_call_unparseable_json():
    assert label('<tool_call>{"name": "typecheck", "arguments": {"path": </tool_call>', **J) == (
        "invalid_call"
    )


def test_json_tools_code_mode_wrapper_is_invalid_call():
    assert label(xml_wrapper(TYPECHECK_CODE), **J) == "invalid_call"


def test_json_tools_bare_json_without_tags_is_not_the_target_format():
    response = '{"name": "typecheck", "arguments": {"path": "a"}}'
    assert label(response, **J) == "invalid_call"


def test_json_tools_prose_think_empty_degenerate():
    assert label("You can use typecheck for that.", **J) == "prose"
    assert label("<think>\ncall typecheck\n</think>", **J) == "think"
    assert label("\n\n\n", **J) == "empty"
    assert label("the " * 100, **J) == "degenerate"


def test_json_tools_think_then_call_is_flagged():
    response = "<think>\nneed types\n</think>\n" + json_call("typecheck", {"path": "a"})
    assert score_response(response, "tool", "typecheck", fmt="json_tools") == Score(
        "tool_call", 1.0, True
    )


def test_json_tools_direct():
    assert label("It is a structural interface.", expect="direct", **J) == "direct_answer"
    assert label(json_call("hover", {"symbol": "X"}), expect="direct", **J) == "unneeded_tool"
    assert label('<tool_call>{"name": ', expect="direct", **J) == "unneeded_tool"


# --------------------------------------------------------------------------- errors


def test_score_response_rejects_bad_expect_and_format():
    with pytest.raises(ValueError, match="expect must be 'tool' or 'direct'"):
        score_response("x", "maybe", None)
    with pytest.raises(ValueError, match="format must be one of"):
        score_response("x", "tool", "typecheck", fmt="yaml_tools")
    with pytest.raises(ValueError, match="tool must be"):
        score_response("x", "tool", 3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- score_record


def test_score_record_shape():
    record = {
        "id": "p1",
        "expect": "tool",
        "tool": "typecheck",
        "response": xml_wrapper("typecheck('a')"),
    }
    assert score_record(record) == {"id": "p1", "label": "execute_code", "score": 1.0}


def test_score_record_tool_is_optional_and_list_allowed():
    assert score_record({"id": 2, "expect": "direct", "response": "Yes."}) == {
        "id": 2,
        "label": "direct_answer",
        "score": 1.0,
    }
    record = {"id": "m", "expect": "tool", "tool": ["git_status", "git_diff"]}
    record["response"] = xml_wrapper("git_status()")
    assert score_record(record)["label"] == "wrong_tool"


def test_score_record_thought_key_only_when_flagged():
    response = "<think>\nok\n</think>\n" + xml_wrapper("typecheck('a')")
    record = {"id": "t", "expect": "tool", "tool": "typecheck", "response": response}
    assert score_record(record) == {
        "id": "t",
        "label": "execute_code",
        "score": 1.0,
        "thought": True,
    }
    record["response"] = xml_wrapper("typecheck('a')")
    assert "thought" not in score_record(record)


def test_score_record_passes_format_and_tool_names():
    record = {"id": "j", "expect": "tool", "tool": "lint", "response": json_call("lint", {})}
    assert score_record(record, tool_names={"lint"}, fmt="json_tools")["label"] == "tool_call"
    assert score_record(record, tool_names={"lint"})["label"] == "direct_call"


def test_score_record_output_is_json_serialisable():
    record = {"id": "s", "expect": "direct", "response": "Fine."}
    assert json.loads(json.dumps(score_record(record))) == score_record(record)


@pytest.mark.parametrize("missing", ["id", "expect", "response"])
def test_score_record_missing_field(missing):
    record = {"id": "x", "expect": "tool", "tool": "typecheck", "response": "hi"}
    del record[missing]
    with pytest.raises(ValueError, match=f"missing field\\(s\\): {missing}"):
        score_record(record)


def test_score_record_bad_expect_names_the_record():
    with pytest.raises(ValueError, match="record 'r9': expect must be 'tool' or 'direct'"):
        score_record({"id": "r9", "expect": "answer", "response": "hi"})


def test_score_record_rejects_non_string_response_and_non_dict():
    with pytest.raises(ValueError, match="response must be a string"):
        score_record({"id": "x", "expect": "direct", "response": None})
    with pytest.raises(ValueError, match="JSON object"):
        score_record(["id", "expect"])  # type: ignore[arg-type]
