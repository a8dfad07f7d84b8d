"""Code API checks: the tools, parameters and result attributes the training
examples' calls use exist in the suite's tool API, and their code parses.

Pure: the code is parsed with `jobs.formats` (bounded), never run.
"""

from __future__ import annotations

import ast
import builtins
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobs.checks.examples import Example, ExampleCall, locations
from jobs.checks.findings import DISTRIBUTION_GAPS, MAX_LISTED, Finding, capped
from jobs.formats import WRAPPER, parse_code
from jobs.suite import EvalSuite

_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class ApiProblem:
    kind: str  # unknown_tool | unknown_parameter | unknown_attribute | too_many_arguments | syntax
    tool: str  # the tool (or the unknown name)
    name: str = ""  # the parameter or attribute
    text: str = ""  # the offending expression


def _defined_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def _result_vars(tree: ast.AST, tools: Mapping[str, Any]) -> dict[str, str]:
    """Variables that only ever hold one tool's result: name -> tool."""
    holds: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = list(node.targets), node.value
        elif isinstance(node, ast.AnnAssign | ast.NamedExpr):
            targets, value = [node.target], node.value
        elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension | ast.withitem):
            target = node.optional_vars if isinstance(node, ast.withitem) else node.target
            targets = [target] if target is not None else []
        for target in targets:
            for name_node in ast.walk(target):
                if isinstance(name_node, ast.Name):
                    tool = _tool_called(value, tools) if target is name_node else None
                    holds.setdefault(name_node.id, set()).add(tool or "")
    return {
        name: next(iter(held)) for name, held in holds.items() if len(held) == 1 and "" not in held
    }


def _tool_called(value: ast.expr | None, tools: Mapping[str, Any]) -> str | None:
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        return value.func.id if value.func.id in tools else None
    return None


def code_api_problems(code: str, suite: EvalSuite) -> list[ApiProblem]:
    """Calls of functions the runtime does not have, unknown keyword parameters, and
    attributes of a tool's result that the tool does not return."""
    tree = parse_code(code)
    if tree is None:
        first = code.strip().splitlines()[0] if code.strip() else ""
        return [ApiProblem("syntax", "", text=first[:80])]
    tools = {tool.name: tool for tool in suite.tools}
    defined = _defined_names(tree)
    problems: list[ApiProblem] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            tool = tools.get(name)
            if tool is None:
                if name not in _BUILTINS and name not in defined and name != WRAPPER:
                    problems.append(ApiProblem("unknown_tool", name, text=f"{name}(…)"))
                continue
            for kw in node.keywords:
                if kw.arg is not None and tool.parameters and kw.arg not in tool.parameters:
                    problems.append(
                        ApiProblem("unknown_parameter", name, kw.arg, f"{name}({kw.arg}=…)")
                    )
            if tool.parameters and len(node.args) > len(tool.parameters):
                problems.append(
                    ApiProblem("too_many_arguments", name, str(len(node.args)), f"{name}(…)")
                )
    results = _result_vars(tree, tools)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        tool_name: str | None = None
        base = ""
        if isinstance(node.value, ast.Name) and node.value.id in results:
            tool_name, base = results[node.value.id], node.value.id
        elif isinstance(node.value, ast.Call):
            tool_name = _tool_called(node.value, tools)
            base = f"{tool_name}(…)"
        if tool_name is None:
            continue
        returns = tools[tool_name].returns
        if returns and node.attr not in returns:
            problems.append(
                ApiProblem("unknown_attribute", tool_name, node.attr, f"{base}.{node.attr}")
            )
    return problems


def call_api_problems(call: ExampleCall, suite: EvalSuite) -> list[ApiProblem]:
    """API problems of one call: its code for wrappers and bare code, else its name
    and arguments."""
    if call.code is not None:
        return code_api_problems(call.code, suite)
    if call.family in ("xml_call", "json_call", "structured_call") and call.name:
        tools = {tool.name: tool for tool in suite.tools}
        tool = tools.get(call.name)
        if tool is None:
            return [ApiProblem("unknown_tool", call.name, text=f"{call.name}(…)")]
        return [
            ApiProblem("unknown_parameter", call.name, arg, f"{call.name}({arg}=…)")
            for arg in (call.arguments or {})
            if tool.parameters and arg not in tool.parameters
        ]
    return []


def suggest_attribute(name: str, returns: Sequence[str]) -> str | None:
    """The API attribute an invented one most likely meant: `valid_component` -> `valid`,
    `count` -> `match_count`; else the closest spelling."""
    for matches in (
        lambda r: name.startswith(r) or r.startswith(name),
        lambda r: name in r or r in name,
    ):
        found = [r for r in returns if matches(r)]
        if found:
            return max(found, key=len)
    close = difflib.get_close_matches(name, list(returns), n=1, cutoff=0.6)
    return close[0] if close else None


def _api_message(
    problem: ApiProblem, suite: EvalSuite, tools_seen: Sequence[str] = ()
) -> tuple[str, str]:
    tools = {tool.name: tool for tool in suite.tools}
    if problem.kind == "unknown_tool":
        close = difflib.get_close_matches(problem.tool, list(tools), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (
            f"`{problem.text}` calls {problem.tool!r}, which is not in the suite's tool API{hint}",
            f"call one of the API's {len(tools)} tools"
            + (f", e.g. {close[0]!r}" if close else "")
            + ", or add the tool to the suite's tools",
        )
    if problem.kind == "unknown_parameter":
        tool = tools[problem.tool]
        return (
            f"`{problem.text}`: {problem.tool} has no parameter {problem.name!r} "
            f"(API: {', '.join(tool.parameters)})",
            "use the API's parameter names",
        )
    if problem.kind == "too_many_arguments":
        tool = tools[problem.tool]
        return (
            f"`{problem.text}` passes {problem.name} positional arguments; {problem.tool} "
            f"takes {len(tool.parameters)} ({', '.join(tool.parameters)})",
            "use the API's parameters",
        )
    # unknown_attribute, grouped over every tool whose result is read that way
    returns = list(dict.fromkeys(r for name in tools_seen for r in tools[name].returns))
    close = suggest_attribute(problem.name, returns)
    hint = f"; did you mean {close!r}?" if close else ""
    if len(tools_seen) == 1:
        whose = f"{tools_seen[0]} results have"
        api = f"API: {', '.join(returns)}"
    else:
        shown = ", ".join(tools_seen[:3]) + (" …" if len(tools_seen) > 3 else "")
        whose = f"the results of {len(tools_seen)} tools ({shown}) have"
        api = f"they return {', '.join(returns)}"
    return (
        f"`{problem.text}`: {whose} no attribute {problem.name!r} ({api}{hint}) — at runtime "
        "this raises AttributeError (earlier runs' `result.valid_component`)",
        "use the attributes the runtime returns",
    )


def check_api_usage(
    examples: Sequence[Example], suite: EvalSuite, calls: Mapping[int, list[ExampleCall]]
) -> list[Finding]:
    """Every tool name, parameter and result attribute the examples use exists in the
    suite's tool API; the code in every call parses. One finding per problem (an
    invented attribute is one problem, whichever tools' results it is read from)."""
    grouped: dict[tuple[str, str, str], list[Example]] = {}
    first: dict[tuple[str, str, str], ApiProblem] = {}
    tools_of: dict[tuple[str, str, str], dict[str, None]] = {}
    for index, example_calls_ in calls.items():
        seen: set[tuple[str, str, str]] = set()
        for call in example_calls_:
            for problem in call_api_problems(call, suite):
                key = (
                    problem.kind,
                    "" if problem.kind in ("unknown_attribute", "syntax") else problem.tool,
                    problem.name,
                )
                first.setdefault(key, problem)
                tools_of.setdefault(key, {})[problem.tool] = None
                if key not in seen:
                    seen.add(key)
                    grouped.setdefault(key, []).append(examples[index])
    findings: list[Finding] = []
    for key, rows in sorted(grouped.items(), key=lambda kv: (kv[1][0].file, kv[1][0].line)):
        problem = first[key]
        tools_seen = list(tools_of[key])
        if problem.kind == "syntax":
            message = (
                f"the code of {len(rows)} tool-call examples does not parse as Python "
                f"(e.g. {locations(rows)}) — the model learns invalid_code"
            )
            fix = "fix the code in those examples"
        else:
            message, fix = _api_message(problem, suite, tools_seen)
            message += f"; in {len(rows)} examples ({locations(rows)})"
        findings.append(
            Finding(
                "error",
                DISTRIBUTION_GAPS,
                message,
                fix,
                rows[0].file,
                rows[0].line,
                evidence={
                    "kind": problem.kind,
                    "tools": tools_seen,
                    "name": problem.name,
                    "expression": problem.text,
                    "examples": len(rows),
                    "locations": [r.where for r in rows[:MAX_LISTED]],
                },
            )
        )
    return capped(findings)
