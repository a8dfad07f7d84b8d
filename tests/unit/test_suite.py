"""The eval-suite loader, the demo suite, and the demo dataset generated from it."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest

from jobs.problems import InputError, Problem
from jobs.suite import EvalSuite, load_suite, suite_digest

ROOT = Path(__file__).resolve().parents[2]
DEMO_SUITE = ROOT / "data" / "evals" / "code_mode.yaml"
DEMO_DATA = ROOT / "data" / "datasets" / "code_mode"

GOOD = """\
name: mini
format: code_mode
system_prompt: You are a coding assistant.
tools:
  - name: typecheck
    description: Type-check a path.
    parameters: {path: str}
    returns: [error_count]
  - name: ruff_check
    parameters: {path: str}
    returns: [violation_count]
generation:
  max_tokens: 64
  stop: ["<tool_response>"]
prompts:
  - id: q1
    category: quality
    prompt: Any type errors in src/?
    expect: tool
    tool: typecheck
  - id: d1
    category: direct
    prompt: What is a list?
    expect: direct
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(InputError) as info:
        load_suite(path)
    assert info.value.problems, "InputError without problems"
    return info.value.problems


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line containing needle."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


def test_demo_suite_loads() -> None:
    suite = load_suite(DEMO_SUITE)
    assert isinstance(suite, EvalSuite)
    assert suite.format == "code_mode"
    assert len(suite.tools) == 26 and len(set(suite.tool_names)) == 26
    assert len(suite.prompts) == 27
    assert {p.expect for p in suite.prompts} == {"tool", "direct"}
    assert len({p.category for p in suite.prompts}) >= 6
    assert all(set(p.expected_tools) <= set(suite.tool_names) for p in suite.prompts)
    assert any(len(p.expected_tools) > 1 for p in suite.prompts)
    assert suite.generation.max_tokens > 0


def test_demo_suite_matches_the_scorer_tool_names() -> None:
    from jobs.scorer import DEFAULT_TOOL_NAMES

    assert set(load_suite(DEMO_SUITE).tool_names) == set(DEFAULT_TOOL_NAMES)


def test_small_suite_loads(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, GOOD))
    assert suite.tool_names == ["typecheck", "ruff_check"]
    assert suite.prompts[0].expected_tools == ["typecheck"]
    assert suite.prompts[1].expected_tools == []


def test_suite_digest_is_sha256_of_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    first = suite_digest(path)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    path.write_text(GOOD + "\n")
    assert suite_digest(path) != first


def test_missing_file(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path / "nope.yaml")
    assert problem.file.endswith("nope.yaml") and "not found" in problem.message


def test_bad_yaml(tmp_path: Path) -> None:
    text = GOOD.replace("max_tokens: 64", "max_tokens: [64")
    [problem] = problems_of(write(tmp_path, text))
    assert "invalid YAML" in problem.message
    assert problem.line is not None and problem.line >= line_of(text, "max_tokens")


def test_not_a_mapping(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "- just\n- a list\n"))
    assert "mapping" in problem.message


@pytest.mark.parametrize(
    ("old", "new", "needle", "field", "message"),
    [
        ("format: code_mode", "format: xml_tools", "format:", "format", "unknown format"),
        ("  max_tokens: 64", "  max_tokens: 64\n  temperature: 0.7", "temperature",
         "generation.temperature", "unknown key"),
        ("    expect: direct\n", "    expect: direct\n    weight: 2\n", "weight",
         "prompts[1].weight", "unknown key"),
        ("  max_tokens: 64", "  max_tokens: sixty-four", "max_tokens", "generation.max_tokens",
         "integer"),
        ("    returns: [error_count]", "    returns: error_count", "returns: error_count",
         "tools[0].returns", "list"),
        ("    tool: typecheck", "    tool: 42", "tool: 42", "prompts[0].tool", "tool name"),
        ("    expect: tool", "    expect: maybe", "expect: maybe", "prompts[0].expect", "tool"),
        ("  - id: d1", "  - id: q1", "id: q1", "prompts[1].id", "duplicate prompt id"),
        ("    tool: typecheck", "    tool: [typecheck, mypy_check]", "mypy_check",
         "prompts[0].tool", "not in the suite's tool API"),
        ("    tool: typecheck", "    tool: type_check", "type_check", "prompts[0].tool",
         "not in the suite's tool API"),
        ("  - name: ruff_check", "  - name: typecheck", "- name: typecheck", "tools[1].name",
         "duplicate tool name"),
        ("    expect: direct\n", "    expect: direct\n    tool: typecheck\n", "tool: typecheck",
         "prompts[1].tool", "must not name a tool"),
        ("name: mini\n", "name: mini\nname: other\n", "name: other", "name", "duplicate key"),
    ],
)  # fmt: skip
def test_bad_suite_points_at_line_and_field(
    tmp_path: Path, old: str, new: str, needle: str, field: str, message: str
) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    problems = problems_of(write(tmp_path, text))
    matching = [p for p in problems if p.field == field]
    assert matching, f"no problem for {field}: {[str(p) for p in problems]}"
    problem = matching[0]
    assert message in problem.message
    expected_line = [n for n, line in enumerate(text.splitlines(), 1) if needle in line][-1]
    assert problem.line == expected_line, str(problem)
    assert problem.file == str(tmp_path / "suite.yaml")


def test_expect_tool_without_tool(tmp_path: Path) -> None:
    text = GOOD.replace("    tool: typecheck\n", "")
    [problem] = problems_of(write(tmp_path, text))
    assert problem.field == "prompts[0].tool"
    assert "needs the expected tool" in problem.message
    assert problem.line == line_of(text, "- id: q1")


def test_missing_required_field(tmp_path: Path) -> None:
    text = GOOD.replace("system_prompt: You are a coding assistant.\n", "")
    [problem] = problems_of(write(tmp_path, text))
    assert problem.field == "system_prompt" and "missing" in problem.message
    assert problem.line == 1


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("format: code_mode", "format: nope").replace("  - id: d1", "  - id: q1")
    fields = {p.field for p in problems_of(write(tmp_path, text))}
    assert {"format", "prompts[1].id"} <= fields


# --- the demo dataset --------------------------------------------------------


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "make_demo_data", ROOT / "data" / "make_demo_data.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_demo_data_regenerates_identical_files(tmp_path: Path) -> None:
    load_generator().main(tmp_path)
    for name in ("train.jsonl", "valid.jsonl"):
        assert (tmp_path / name).read_bytes() == (DEMO_DATA / name).read_bytes(), name


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DEMO_DATA / name).read_text().splitlines()]


def test_demo_data_shape_and_held_out_prompts() -> None:
    suite = load_suite(DEMO_SUITE)
    train, valid = rows("train.jsonl"), rows("valid.jsonl")
    assert 300 <= len(train) <= 1000
    assert 0.07 <= len(valid) / (len(train) + len(valid)) <= 0.13
    held_out = {p.prompt for p in suite.prompts}
    wrapper = re.compile(
        r"\A<tool_call>\n<function=execute_code>\n<parameter=code>\n(.*)\n"
        r"</parameter>\n</function>\n</tool_call>\Z",
        re.S,
    )
    called: set[str] = set()
    n_tool = 0
    for row in train + valid:
        system, user, assistant = row["messages"]
        assert [system["role"], user["role"], assistant["role"]] == ["system", "user", "assistant"]
        assert system["content"] == suite.system_prompt
        assert user["content"] not in held_out
        match = wrapper.match(assistant["content"])
        if match:
            n_tool += 1
            tree = ast.parse(match.group(1))
            called |= {
                n.func.id
                for n in ast.walk(tree)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            }
        else:
            assert "<tool_call>" not in assistant["content"]
    assert 0.6 <= n_tool / (len(train) + len(valid)) <= 0.8
    assert set(suite.tool_names) <= called
