"""Eval suites: the YAML file that says what to ask a model and how to score it.

`load_suite` reports every problem it can find in one go, each with the file,
the line (from the YAML node marks, so it points at what the user typed) and
the field path (`prompts[3].tool`), because a suite is hand-written and a
half-reported error costs one edit-run cycle per problem.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.experiment_spec.yaml_source import line_locator
from jobs.limits import MAX_SUITE_BYTES, file_size_problem
from jobs.problems import InputError, Problem

FORMATS = ("code_mode", "json_tools")


class Tool(BaseModel):
    """One function of the runtime tool API the model is taught to call."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1)
    description: str = ""
    # parameter name -> type name as written in the API docs ("str", "int", ...)
    parameters: dict[str, str] = Field(default_factory=dict)
    # attribute names of the result object; training data may only use these
    returns: list[str] = Field(default_factory=list)


class SuitePrompt(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1)
    category: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    expect: Literal["tool", "direct"]
    tool: str | list[str] | None = None

    @property
    def expected_tools(self) -> list[str]:
        if self.tool is None:
            return []
        return [self.tool] if isinstance(self.tool, str) else list(self.tool)


class Generation(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    max_tokens: int = Field(gt=0)
    stop: list[str] = Field(default_factory=list)


class EvalSuite(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1)
    format: Literal["code_mode", "json_tools"]
    system_prompt: str
    tools: list[Tool] = Field(min_length=1)
    generation: Generation
    prompts: list[SuitePrompt] = Field(min_length=1)

    @property
    def tool_names(self) -> list[str]:
        return [tool.name for tool in self.tools]


def suite_digest(path: Path | str) -> str:
    """sha256 of the file bytes: part of a run's config fingerprint."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def suite_size_problem(path: Path) -> str | None:
    """Why a suite file is refused unread (over MAX_SUITE_BYTES), or None; raises
    OSError when it cannot be measured."""
    return file_size_problem("the suite file", path.stat().st_size, MAX_SUITE_BYTES)


def load_suite(path: Path | str) -> EvalSuite:
    """Parse and validate a suite file; raise InputError listing every problem."""
    path = Path(path)
    file = str(path)
    try:
        if (too_big := suite_size_problem(path)) is not None:
            raise InputError([Problem(file, too_big)])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError([Problem(file, "suite file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError([Problem(file, f"cannot read suite file: {exc}")]) from None

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError([Problem(file, f"invalid YAML: {problem}", line)]) from None

    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        line = root.start_mark.line + 1 if root is not None else None
        raise InputError([Problem(file, "a suite must be a YAML mapping", line)])

    problems = _duplicate_keys(file, root, ())
    line_of = _line_finder(root)
    try:
        suite = EvalSuite.model_validate(data)
    except ValidationError as exc:
        suite = None
        problems += _validation_problems(file, root, line_of, exc)
    problems += _semantic_problems(file, line_of, data)

    problems = _unique(problems)
    if problems or suite is None:
        raise InputError(problems)
    return suite


# --- where things are in the file ------------------------------------------

Loc = tuple[str | int, ...]
LineFinder = Callable[[Loc], int]


def _field_name(loc: Loc) -> str:
    """('prompts', 3, 'tool') -> 'prompts[3].tool'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _walked(root: yaml.Node, loc: Loc) -> Loc:
    """The part of loc that is in the file (a field a message can name).

    Pydantic adds non-path parts to a loc (union branch names like 'str' or
    'list[str]'); they match no key and simply end the walk.
    """
    node, walked = root, ()
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if key.value == part:
                    child = value
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                child = node.value[part]
        if child is None:
            break
        node, walked = child, (*walked, part)
    return walked


def _line_finder(root: yaml.Node) -> LineFinder:
    """The line of a field: its key or list item, else the deepest part of it
    that is there, else the document's first line (the spec layer's locator, so
    suite and spec messages point the same way)."""
    located = line_locator(root)
    top = root.start_mark.line + 1
    return lambda loc: located(loc) or top


# --- the checks -------------------------------------------------------------


def _duplicate_keys(file: str, node: yaml.Node, loc: Loc) -> list[Problem]:
    """YAML silently keeps the last of two equal keys; a suite author never means that."""
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                field = _field_name((*loc, name))
                problems.append(Problem(file, "duplicate key", key.start_mark.line + 1, field))
            seen.add(name)
            problems += _duplicate_keys(file, value, (*loc, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(file, item, (*loc, i))
    return problems


def _validation_problems(
    file: str, root: yaml.Node, line_of: LineFinder, exc: ValidationError
) -> list[Problem]:
    problems: list[Problem] = []
    for error in exc.errors():
        loc: Loc = tuple(error["loc"])
        kind = error["type"]
        if kind == "extra_forbidden":
            problems.append(Problem(file, "unknown key", line_of(loc), _field_name(loc)))
            continue
        walked = _walked(root, loc)
        field = _field_name(walked) if kind != "missing" else _field_name(loc)
        line = line_of(walked)
        if kind == "missing":
            message = "required field is missing"
        elif walked == ("format",):
            message = f"unknown format {error['input']!r} (known: {', '.join(FORMATS)})"
        elif len(walked) == 3 and walked[0] == "prompts" and walked[2] == "tool":
            message = "must be a tool name or a list of tool names"
        else:
            message = error["msg"]
        problems.append(Problem(file, message, line, field))
    return problems


def _semantic_problems(file: str, line_of: LineFinder, data: dict[str, Any]) -> list[Problem]:
    """Checks across fields, run on the raw data so they report alongside type errors."""
    problems: list[Problem] = []
    tools = data.get("tools") if isinstance(data.get("tools"), list) else []
    names: set[str] = set()
    for i, tool in enumerate(tools):
        name = tool.get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str):
            continue
        if name in names:
            loc = ("tools", i, "name")
            problems.append(
                Problem(file, f"duplicate tool name {name!r}", line_of(loc), _field_name(loc))
            )
        names.add(name)

    prompts = data.get("prompts") if isinstance(data.get("prompts"), list) else []
    ids: set[str] = set()
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, dict):
            continue
        pid = prompt.get("id")
        if isinstance(pid, str):
            if pid in ids:
                loc = ("prompts", i, "id")
                problems.append(
                    Problem(file, f"duplicate prompt id {pid!r}", line_of(loc), _field_name(loc))
                )
            ids.add(pid)
        problems += _expect_problems(file, line_of, i, prompt, names)
    return problems


def _expect_problems(
    file: str, line_of: LineFinder, i: int, prompt: dict[str, Any], names: set[str]
) -> list[Problem]:
    loc = ("prompts", i, "tool")
    field = _field_name(loc)
    expect, tool = prompt.get("expect"), prompt.get("tool")
    if expect == "tool" and tool in (None, [], ""):
        line = line_of(loc)
        return [Problem(file, "expect: tool needs the expected tool name(s)", line, field)]
    if expect == "direct" and tool is not None:
        return [Problem(file, "expect: direct must not name a tool", line_of(loc), field)]
    if expect != "tool" or not names:
        return []
    wanted = [(tool, loc)] if isinstance(tool, str) else []
    if isinstance(tool, list):
        wanted = [(t, (*loc, j)) for j, t in enumerate(tool) if isinstance(t, str)]
    return [
        Problem(file, f"tool {name!r} is not in the suite's tool API", line_of(at), field)
        for name, at in wanted
        if name not in names
    ]


def _unique(problems: list[Problem]) -> list[Problem]:
    """One line per (line, field): a union type reports each failed branch."""
    seen: set[tuple[int | None, str]] = set()
    out: list[Problem] = []
    for problem in problems:
        key = (problem.line, problem.field)
        if key not in seen:
            seen.add(key)
            out.append(problem)
    return sorted(out, key=lambda p: (p.line or 0, p.field))
