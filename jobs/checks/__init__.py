"""Preflight checks: what can be refused or warned about before a job is queued.

Each check is a pure function over data (tokenizer facts, dataset rows, suite,
spec) that returns Findings; `preflight` gathers the inputs at the edge and
runs them all. `model_findings` is the part that needs the base model's
tokenizer: `preflight` runs it for a local model folder (or one already in the
Hugging Face cache), and `worker.preflight` runs it on the worker, before
training, for a Hugging Face id that is not on the submitting machine.

Every finding names the failure pattern it guards against (the names of
DESIGN.md's table "Failures the farm must catch"), the evidence (file, line,
token, figures) and what to do about it. Errors refuse the submission.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jobs.datasets import check_dataset, iter_lines, loader_kind, parse_line
from jobs.problems import InputError, Problem
from jobs.scorer import (
    MAX_RESPONSE_CHARS,
    Segment,
    cut_out,
    fence_blocks,
    fence_body,
    function_blocks,
    json_prefix,
    parameters,
    parse_code,
    split_think,
    tool_call_blocks,
)
from jobs.spec import (
    DEFAULT_GROUP_SIZE,
    ExperimentSpec,
    QuantizeSpec,
    variant_name,
)
from jobs.suite import EvalSuite, load_suite

# --------------------------------------------------------------------------- patterns

# The failure patterns of DESIGN.md ("Failures the farm must catch"); run
# diagnostics (jobs.diagnostics) use the same names so a preflight warning and
# a detection after the run line up in the UI.
QUANTIZATION_SIGNAL_LOSS = "quantization signal loss"
TOKENIZER_MISMATCH = "tokenizer / format mismatch"
CONFLICTING_FORMATS = "conflicting formats in data"
DISTRIBUTION_GAPS = "training distribution gaps"
EOS_MISMATCH = "eos / stop mismatch"
THINK_INTERFERENCE = "think-mode interference"
PROSE_DRIFT = "prose drift / alignment override"
WRAPPER_NOT_LEARNED = "wrapper not learned"
MODE_COLLAPSE = "mode collapse"
STOCHASTIC_FORMAT_LOCK = "stochastic format lock"
MISLEADING_VAL_LOSS = "misleading val loss"
# Data and suite hygiene that the table's patterns do not name on their own.
DUPLICATE_EXAMPLES = "duplicate examples"
EVAL_LEAKAGE = "eval prompts in training data"
TRUNCATION = "truncated examples"
SHORT_MAX_TOKENS = "max_tokens too short"
SUITE_CONSISTENCY = "eval suite consistency"
# How mlx-lm will read and train on the dataset files (jobs.datasets).
DATA_LOADING = "how mlx-lm reads the data"

# --------------------------------------------------------------------------- thresholds

# Special tokens each suite format relies on: each must be ONE token of the
# base model's tokenizer (the seeds' Qwen2.5 split <tool_response> into 5
# pieces: 0% tool calling).
FORMAT_TOKENS: dict[str, tuple[str, ...]] = {
    "code_mode": (
        "<tool_call>",
        "</tool_call>",
        "<tool_response>",
        "</tool_response>",
        "<|im_start|>",
        "<|im_end|>",
    ),
    "json_tools": (
        "<tool_call>",
        "</tool_call>",
        "<tool_response>",
        "</tool_response>",
        "<|im_start|>",
        "<|im_end|>",
    ),
}
# Below 5 bits (32 levels) the seeds' fused adapters were rounded away.
MIN_SAFE_BITS = 5
TWIN_BITS = 5
# Tool-call share of the training examples outside this range: warning.
TOOL_SHARE_RANGE = (0.10, 0.90)
# Generations cut by max_tokens: warn when this share of training answers is longer.
LONG_ANSWER_SHARE = 0.5
# Training examples whose system prompt differs from the suite's: warn above this share.
SYSTEM_PROMPT_MISMATCH_SHARE = 0.5
# Seeds needed to see seed-to-seed spread (the seeds: 82.4%, 38.9%, 22.2%).
MIN_SEEDS = 3
# mlx-lm reports a val loss at `it - 1` for it in 1, k*steps_per_eval, iters; a
# checkpoint counts as having one when a report is at most this many steps away.
VAL_LOSS_TOLERANCE_STEPS = 1
# Findings of one kind listed before the rest are summarised.
MAX_LISTED = 20

WRAPPER = "execute_code"
_BUILTINS = frozenset(dir(builtins))


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One preflight result: the failure pattern it guards against, the evidence, the fix."""

    severity: str  # error | warning | info
    pattern: str
    message: str
    fix: str = ""
    file: str = ""
    line: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        where = (
            f"{self.file}:{self.line}: " if self.line else (f"{self.file}: " if self.file else "")
        )
        text = f"{self.severity}: {where}[{self.pattern}] {self.message}"
        return text + (f" — {self.fix}" if self.fix else "")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Example:
    """One dataset row and where it is."""

    file: str
    line: int
    split: str  # train | valid | test
    row: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{Path(self.file).name}:{self.line}"


@dataclass(frozen=True)
class Call:
    """One tool call found in an assistant turn."""

    family: str  # a key of CALL_FAMILIES
    name: str | None  # the function called (execute_code for the wrappers)
    arguments: dict[str, Any] | None = None
    code: str | None = None  # the Python the call runs (wrapper or bare code)


CALL_FAMILIES: dict[str, str] = {
    "xml_wrapper": "the Qwen3 XML execute_code wrapper "
    "(<tool_call><function=execute_code><parameter=code>…)",
    "json_wrapper": 'the JSON execute_code wrapper (<tool_call>{"name": "execute_code", …})',
    "structured_wrapper": "an execute_code call in the message's tool_calls field",
    "xml_call": "a Qwen3 XML call of a tool without the wrapper (<function=TOOL>)",
    "json_call": 'a native JSON tool call (<tool_call>{"name": TOOL, …})',
    "structured_call": "a tool call in the message's tool_calls field",
    "tool_call_code": "bare Python inside <tool_call>, without the wrapper",
    "python_call": "a Python tool call outside any tool-call tags",
    "unreadable": "a <tool_call> block that is neither XML, JSON nor Python",
}
# What the suite's format scores as the target (1.0).
TARGET_FAMILIES: dict[str, frozenset[str]] = {
    "code_mode": frozenset({"xml_wrapper", "json_wrapper", "structured_wrapper"}),
    "json_tools": frozenset({"json_call", "structured_call"}),
}


@dataclass(frozen=True)
class TokenizerFacts:
    """What the checks need to know about a base model's tokenizer and config."""

    model: str
    tokenizer_file: str  # the file to cite for tokens
    template_file: str  # the file to cite for the chat template
    pieces: dict[str, list[str]]  # special token -> the pieces it encodes to
    has_chat_template: bool
    template_error: str = ""  # why a probe conversation could not be rendered
    turn_end: str | None = None  # the token that ends an assistant turn in the template
    turn_end_id: int | None = None
    turn_end_text: str = ""  # what follows the assistant content when it is not a token
    eos_ids: tuple[int, ...] = ()  # the ids mlx-lm stops generation on
    eos_tokens: dict[int, str] = field(default_factory=dict)
    eos_file: str = ""
    eos_line: int | None = None
    eos_source: str = ""
    stop_ids: dict[str, int] = field(default_factory=dict)  # single-token suite stop strings


@dataclass(frozen=True)
class ExampleLength:
    """Token counts of one rendered training example."""

    file: str
    line: int
    tokens: int
    answer_tokens: int | None = None  # the last assistant turn, for tool-call examples


# --------------------------------------------------------------------------- tokenizer checks


def check_special_tokens(
    facts: TokenizerFacts, fmt: str, examples: Sequence[Example] = ()
) -> list[Finding]:
    """Every special token the suite's format relies on is one token."""
    findings: list[Finding] = []
    for token in FORMAT_TOKENS.get(fmt, ()):
        pieces = facts.pieces.get(token)
        if pieces is None or len(pieces) == 1:
            continue
        used = sum(token in json.dumps(e.row, ensure_ascii=False) for e in examples)
        share = f"; {used} of {len(examples)} examples contain it" if examples else ""
        findings.append(
            Finding(
                "error",
                TOKENIZER_MISMATCH,
                f"{token!r} is not one token in {facts.model}'s tokenizer: it encodes to "
                f"{len(pieces)} pieces {pieces}{share} — the {fmt} format needs it as a single "
                "token (the seeds' Qwen2.5 split <tool_response> this way and called 0% of tools)",
                "use a base model whose tokenizer has it as one token (a Qwen3 model), or "
                "choose a suite format this tokenizer supports",
                facts.tokenizer_file,
                evidence={"token": token, "pieces": pieces, "examples_using_it": used},
            )
        )
    return findings


def check_chat_template(facts: TokenizerFacts) -> list[Finding]:
    """The tokenizer has a chat template, and it renders a plain conversation."""
    if not facts.has_chat_template:
        return [
            Finding(
                "error",
                TOKENIZER_MISMATCH,
                f"{facts.model}'s tokenizer has no chat template — training and eval prompts "
                "would be plain text, which cost the seeds 60 points (88% → 28%)",
                "use a model whose tokenizer_config.json has a chat_template (or ships "
                "chat_template.jinja)",
                facts.template_file,
                evidence={"chat_template": None},
            )
        ]
    if facts.template_error:
        return [
            Finding(
                "error",
                TOKENIZER_MISMATCH,
                f"the chat template cannot render the eval's conversation: {facts.template_error}",
                "fix the chat template",
                facts.template_file,
                evidence={"error": facts.template_error},
            )
        ]
    return []


def check_eos(facts: TokenizerFacts) -> list[Finding]:
    """The ids generation stops on include the token that ends an assistant turn."""
    if not facts.has_chat_template or facts.template_error:
        return []  # check_chat_template reports it
    if facts.turn_end_id is None:
        return [
            Finding(
                "info",
                EOS_MISMATCH,
                f"the chat template ends an assistant turn with {facts.turn_end_text!r}, not "
                "with a special token, so the eos check cannot tell whether generation stops",
                "make sure the suite's generation.stop covers the end of a turn",
                facts.template_file,
                evidence={"turn_end_text": facts.turn_end_text},
            )
        ]
    stops = set(facts.eos_ids) | set(facts.stop_ids.values())
    if facts.turn_end_id in stops:
        return []
    eos = ", ".join(f"{i} {facts.eos_tokens.get(i, '?')!r}" for i in facts.eos_ids) or "none"
    return [
        Finding(
            "error",
            EOS_MISMATCH,
            f"the chat template ends an assistant turn with {facts.turn_end!r} (id "
            f"{facts.turn_end_id}), but generation stops only on eos {eos} "
            f"({facts.eos_source}) — every generation would run to max_tokens (the seeds' "
            "7B model: uniform 19 s per answer)",
            f"set eos_token_id to include {facts.turn_end_id} in {Path(facts.eos_file).name}, "
            f"or add {facts.turn_end!r} to the suite's generation.stop",
            facts.eos_file,
            facts.eos_line,
            evidence={
                "turn_end": facts.turn_end,
                "turn_end_id": facts.turn_end_id,
                "eos_ids": list(facts.eos_ids),
                "eos_tokens": {str(k): v for k, v in facts.eos_tokens.items()},
                "single_token_stops": facts.stop_ids,
            },
        )
    ]


def check_lengths(
    lengths: Sequence[ExampleLength],
    max_seq_length: int,
    max_tokens: int,
    max_tokens_at: tuple[str, int | None] = ("", None),
) -> list[Finding]:
    """The longest example against max_seq_length; answers against eval max_tokens
    (`max_tokens_at`: the file and line that set it)."""
    findings: list[Finding] = []
    over = [n for n in lengths if n.tokens > max_seq_length]
    if over:
        longest = max(over, key=lambda n: n.tokens)
        findings.append(
            Finding(
                "warning",
                TRUNCATION,
                f"{len(over)} of {len(lengths)} examples are longer than max_seq_length "
                f"{max_seq_length} tokens; the longest has {longest.tokens} tokens — mlx-lm "
                "cuts them, and the cut falls on the end of the answer (the call and the "
                "end-of-turn token)",
                f"raise train.max_seq_length to at least {longest.tokens}, or shorten or split "
                "those examples",
                longest.file,
                longest.line,
                evidence={
                    "max_seq_length": max_seq_length,
                    "longest_tokens": longest.tokens,
                    "examples_over": len(over),
                    "examples": len(lengths),
                },
            )
        )
    answers = sorted(n.answer_tokens for n in lengths if n.answer_tokens is not None)
    if answers:
        longer = sum(a > max_tokens for a in answers)
        if longer / len(answers) >= LONG_ANSWER_SHARE:
            median = answers[len(answers) // 2]
            findings.append(
                Finding(
                    "warning",
                    SHORT_MAX_TOKENS,
                    f"eval max_tokens {max_tokens} is shorter than {longer} of {len(answers)} "
                    f"training tool-call answers (median {median} tokens) — most generations "
                    "will hit max_tokens and be cut before the call closes, and the runaway-"
                    "generation diagnostic will fire for the wrong reason",
                    f"set eval.max_tokens (or the suite's generation.max_tokens) to at least "
                    f"{answers[-1]}",
                    max_tokens_at[0],
                    max_tokens_at[1],
                    evidence={
                        "max_tokens": max_tokens,
                        "answers_longer": longer,
                        "answers": len(answers),
                        "median_answer_tokens": median,
                        "longest_answer_tokens": answers[-1],
                    },
                )
            )
    return findings


# --------------------------------------------------------------------------- finding calls

# The scorer's segmenting and bounded parsers, so a check and a score never
# disagree on a call and a hostile dataset line is read in linear time.
_parse = parse_code


def _called_names(tree: ast.AST) -> list[str]:
    return [
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]


def _arguments(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):  # OpenAI style: arguments as a JSON string
        value = json_prefix(value.strip())
    return value if isinstance(value, dict) else None


def _xml_call(function: Segment) -> Call:
    params = parameters(function.content)
    if function.name == WRAPPER:
        return Call("xml_wrapper", function.name, params, params.get("code"))
    return Call("xml_call", function.name, params)


def _json_call(obj: Any) -> Call:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return Call("unreadable", None)
    args = _arguments(obj.get("arguments", obj.get("parameters")))
    if obj["name"] == WRAPPER:
        code = args.get("code") if args else None
        return Call("json_wrapper", WRAPPER, args, code if isinstance(code, str) else None)
    return Call("json_call", obj["name"], args)


def find_calls(text: str, tool_names: Iterable[str]) -> list[Call]:
    """The tool calls in one assistant text (calls inside a think block do not count)."""
    names = frozenset(tool_names) | {WRAPPER}
    _, body = split_think(text[:MAX_RESPONSE_CHARS])
    calls: list[Call] = []
    blocks = tool_call_blocks(body)
    for block in blocks:
        calls.extend(_tool_call_content(block.content.strip(), names))
    rest = cut_out(body, blocks)
    functions = function_blocks(rest)
    calls.extend(_xml_call(f) for f in functions)
    calls.extend(_bare_python_calls(cut_out(rest, functions), names))
    return calls


def _tool_call_content(inner: str, names: frozenset[str]) -> list[Call]:
    """The calls inside one <tool_call> block: XML, JSON, or Python straight in the tags."""
    if not inner:
        return []
    if "<function=" in inner:
        return [_xml_call(f) for f in function_blocks(inner)]
    if inner.startswith("{"):
        return [_json_call(json_prefix(inner))]
    fenced = fence_body(inner)
    code = inner if fenced is None else fenced
    tree = _parse(code)
    if tree is None:
        return [Call("unreadable", None, None, code)]
    return [Call("tool_call_code", _first_known(tree, names), None, code)]


def _bare_python_calls(text: str, names: frozenset[str]) -> list[Call]:
    """Python calls of known tools outside any tags: in fences, the whole text, or a line."""
    fences = fence_blocks(text)
    outside = cut_out(text, fences)
    calls: list[Call] = []
    for piece in (f.content for f in fences):
        tree = _parse(piece)
        if tree is not None and any(n in names for n in _called_names(tree)):
            calls.append(Call("python_call", _first_known(tree, names), None, piece))
    tree = _parse(outside)
    trees = [(tree, outside)] if tree is not None else []
    if tree is None:
        for line in outside.splitlines():
            line_tree = _parse(line.strip())
            if line_tree is not None:
                trees.append((line_tree, line.strip()))
    for tree, code in trees:
        if any(n in names for n in _called_names(tree)):
            calls.append(Call("python_call", _first_known(tree, names), None, code))
    return calls


def _first_known(tree: ast.AST, names: frozenset[str]) -> str | None:
    return next((n for n in _called_names(tree) if n in names), None)


def assistant_turns(row: Mapping[str, Any]) -> list[tuple[str, list[Any]]]:
    """(text, structured tool_calls) of each assistant turn of a row, in any mlx-lm format."""
    if isinstance(row.get("messages"), list):
        return [
            (m.get("content") if isinstance(m.get("content"), str) else "", m.get("tool_calls"))
            for m in row["messages"]
            if isinstance(m, dict) and m.get("role") == "assistant"
        ]
    if isinstance(row.get("completion"), str):
        return [(row["completion"], [])]
    if isinstance(row.get("text"), str):
        return [(row["text"], [])]
    return []


def example_calls(example: Example, tool_names: Iterable[str]) -> list[Call]:
    """Every tool call an example's assistant turns make."""
    names = list(tool_names)
    calls: list[Call] = []
    for text, structured in assistant_turns(example.row):
        calls.extend(find_calls(text, names))
        for item in structured or []:
            function = item.get("function", item) if isinstance(item, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                calls.append(Call("unreadable", None))
                continue
            args = _arguments(function.get("arguments"))
            if function["name"] == WRAPPER:
                code = args.get("code") if args else None
                calls.append(
                    Call(
                        "structured_wrapper",
                        WRAPPER,
                        args,
                        code if isinstance(code, str) else None,
                    )
                )
            else:
                calls.append(Call("structured_call", function["name"], args))
    return calls


# --------------------------------------------------------------------------- dataset checks


def _locations(examples: Sequence[Example], limit: int = 3) -> str:
    shown = ", ".join(e.where for e in examples[:limit])
    return shown + (f" and {len(examples) - limit} more" if len(examples) > limit else "")


def check_call_formats(
    examples: Sequence[Example], suite: EvalSuite, calls: Mapping[int, list[Call]]
) -> list[Finding]:
    """One tool-call format across the dataset, and the one the suite scores.

    `calls` maps an index into `examples` to the calls that example makes."""
    by_family: dict[str, list[Example]] = {}
    for index, example_calls_ in calls.items():
        for family in dict.fromkeys(c.family for c in example_calls_):
            by_family.setdefault(family, []).append(examples[index])
    if not by_family:
        return []
    ranked = sorted(by_family.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    target = TARGET_FAMILIES.get(suite.format, frozenset())
    findings: list[Finding] = []
    evidence = {family: {"examples": len(rows), "first": rows[0].where} for family, rows in ranked}
    if len(ranked) > 1:
        main_family = next((f for f, _ in ranked if f in target), ranked[0][0])
        others = [(f, rows) for f, rows in ranked if f != main_family]
        first_other = min((rows[0] for _, rows in others), key=lambda e: (e.file, e.line))
        parts = "; ".join(
            f"{len(rows)} use {CALL_FAMILIES[f]} (e.g. {_locations(rows)})" for f, rows in ranked
        )
        n_other = sum(len(rows) for _, rows in others)
        findings.append(
            Finding(
                "error",
                CONFLICTING_FORMATS,
                f"the dataset mixes {len(ranked)} tool-call formats: {parts} — each format "
                "reinforces a different pattern (the seeds: 419 XML vs 62 bare-code examples)",
                f"rewrite the {n_other} other examples to {CALL_FAMILIES[main_family]}",
                first_other.file,
                first_other.line,
                evidence=evidence,
            )
        )
    if target and not any(f in target for f in by_family):
        family, rows = ranked[0]
        findings.append(
            Finding(
                "error",
                CONFLICTING_FORMATS,
                f"the suite scores the {suite.format} format, but no training example uses it: "
                f"{len(rows)} examples use {CALL_FAMILIES[family]} (e.g. {_locations(rows)}) — "
                "the model would learn calls the suite scores 0.5 at best",
                f"convert the examples to {CALL_FAMILIES[sorted(target)[0]]}, or use a suite "
                "whose format matches the data",
                rows[0].file,
                rows[0].line,
                evidence=evidence,
            )
        )
    return findings


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
    tree = _parse(code)
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


def call_api_problems(call: Call, suite: EvalSuite) -> list[ApiProblem]:
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
        "this raises AttributeError (the seeds' `result.valid_component`)",
        "use the attributes the runtime returns",
    )


def check_api_usage(
    examples: Sequence[Example], suite: EvalSuite, calls: Mapping[int, list[Call]]
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
                f"(e.g. {_locations(rows)}) — the model learns invalid_code"
            )
            fix = "fix the code in those examples"
        else:
            message, fix = _api_message(problem, suite, tools_seen)
            message += f"; in {len(rows)} examples ({_locations(rows)})"
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
    return _capped(findings)


def check_tool_share(
    examples: Sequence[Example], suite: EvalSuite, calls: Mapping[int, list[Call]]
) -> list[Finding]:
    """The share of tool-call vs direct-answer training examples (reported; warning
    outside 10–90%), and suite tools no training example calls."""
    train = [i for i, e in enumerate(examples) if e.split == "train"]
    if not train:
        return []
    n_tool = sum(bool(calls.get(i)) for i in train)
    share = n_tool / len(train)
    low, high = TOOL_SHARE_RANGE
    figures = (
        f"{share:.0%} of the {len(train)} training examples are tool calls ({n_tool} tool-call, "
        f"{len(train) - n_tool} direct-answer)"
    )
    evidence = {"tool_examples": n_tool, "direct_examples": len(train) - n_tool, "share": share}
    file = examples[train[0]].file
    findings: list[Finding] = []
    if low <= share <= high:
        findings.append(Finding("info", DISTRIBUTION_GAPS, figures, file=file, evidence=evidence))
    else:
        findings.append(
            Finding(
                "warning",
                DISTRIBUTION_GAPS,
                figures
                + (
                    " — too few tool calls to learn the format"
                    if share < low
                    else " — the model will call tools for conceptual questions too"
                ),
                f"aim for {low:.0%}–{high:.0%} tool calls (the seeds settled on 70/30)",
                file,
                evidence=evidence,
            )
        )
    called: set[str] = set()
    for i in train:
        for call in calls.get(i, []):
            if call.name and call.name != WRAPPER:
                called.add(call.name)
            if call.code:
                tree = _parse(call.code)
                called |= set(_called_names(tree)) if tree else set()
    expected = {t for p in suite.prompts for t in p.expected_tools}
    missing = sorted(expected - called)
    if n_tool and missing:
        findings.append(
            Finding(
                "warning",
                DISTRIBUTION_GAPS,
                f"the suite expects {len(missing)} tools that no training example calls: "
                f"{', '.join(missing)} — expect wrong_tool on those prompts",
                "add training examples for them",
                file,
                evidence={"tools_never_trained": missing},
            )
        )
    return findings


def _row_key(row: Mapping[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def check_duplicates(examples: Sequence[Example]) -> list[Finding]:
    """Duplicate examples within a split, and examples in both train and valid."""
    by_split: dict[str, dict[str, list[Example]]] = {}
    for example in examples:
        by_split.setdefault(example.split, {}).setdefault(_row_key(example.row), []).append(example)
    findings: list[Finding] = []
    for split, groups in by_split.items():
        dupes = [rows for rows in groups.values() if len(rows) > 1]
        if not dupes:
            continue
        extra = sum(len(rows) - 1 for rows in dupes)
        first = min(dupes, key=lambda rows: rows[1].line)
        findings.append(
            Finding(
                "warning",
                DUPLICATE_EXAMPLES,
                f"{split}.jsonl has {extra} duplicate rows in {len(dupes)} groups (e.g. "
                f"{first[1].where} repeats {first[0].where}) — duplicates weigh those examples "
                "more than the rest",
                "remove the duplicates",
                first[1].file,
                first[1].line,
                evidence={"split": split, "duplicate_rows": extra, "groups": len(dupes)},
            )
        )
    train, valid = by_split.get("train", {}), by_split.get("valid", {})
    shared = [key for key in valid if key in train]
    if shared:
        first_valid = min((valid[k][0] for k in shared), key=lambda e: e.line)
        first_train = train[_row_key(first_valid.row)][0]
        findings.append(
            Finding(
                "warning",
                MISLEADING_VAL_LOSS,
                f"{len(shared)} of {len(valid)} distinct validation examples are also in "
                f"train.jsonl (e.g. {first_valid.where} = {first_train.where}) — val loss then "
                "measures memorization and looks better than the model is",
                "remove them from one of the splits",
                first_valid.file,
                first_valid.line,
                evidence={"shared": len(shared), "valid_distinct": len(valid)},
            )
        )
    return findings


def _user_texts(row: Mapping[str, Any]) -> list[str]:
    if isinstance(row.get("messages"), list):
        return [
            m["content"]
            for m in row["messages"]
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
        ]
    if isinstance(row.get("prompt"), str):
        return [row["prompt"]]
    return []


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def check_eval_leakage(
    examples: Sequence[Example], suite: EvalSuite, suite_file: str = ""
) -> list[Finding]:
    """Suite prompts that appear as a user turn in the training data."""
    prompts = {_norm(p.prompt): p.id for p in suite.prompts}
    leaked: dict[str, Example] = {}
    for example in examples:
        if example.split != "train":
            continue
        for text in _user_texts(example.row):
            pid = prompts.get(_norm(text))
            if pid is not None and pid not in leaked:
                leaked[pid] = example
    if not leaked:
        return []
    first = min(leaked.values(), key=lambda e: e.line)
    return [
        Finding(
            "warning",
            EVAL_LEAKAGE,
            f"{len(leaked)} of the suite's {len(suite.prompts)} prompts are training examples "
            f"({', '.join(f'{pid} at {e.where}' for pid, e in list(leaked.items())[:3])}) — "
            "adherence on them measures recall, not the learned format",
            f"hold the suite's prompts out of the training data ({Path(suite_file).name})",
            first.file,
            first.line,
            evidence={"prompts": sorted(leaked)},
        )
    ]


def _system_prompt(row: Mapping[str, Any]) -> str | None:
    messages = row.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
        if messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
            return messages[0]["content"]
    return None


def check_system_prompt(
    examples: Sequence[Example], suite: EvalSuite, suite_file: str = ""
) -> list[Finding]:
    """The eval prompt is rendered the way the model was trained: same system prompt."""
    chat = [e for e in examples if e.split == "train" and isinstance(e.row.get("messages"), list)]
    if not chat:
        return []
    wanted = suite.system_prompt.strip()
    differ = [e for e in chat if (_system_prompt(e.row) or "").strip() != wanted]
    if len(differ) / len(chat) <= SYSTEM_PROMPT_MISMATCH_SHARE:
        return []
    common = Counter((_system_prompt(e.row) or "").strip() for e in chat).most_common(1)[0][0]
    shown = (common[:60] + "…") if len(common) > 60 else common
    return [
        Finding(
            "warning",
            TOKENIZER_MISMATCH,
            f"{len(differ)} of {len(chat)} training examples use a different system prompt "
            f"than the suite (most common in the data: {shown!r}; suite: "
            f"{(wanted[:60] + '…') if len(wanted) > 60 else wanted!r}) — the eval prompt is not "
            "the prompt the model learned (the seeds lost 60 points to a prompt format change)",
            f"use the same system prompt in the data and in {Path(suite_file).name or 'the suite'}",
            differ[0].file,
            differ[0].line,
            evidence={"differ": len(differ), "examples": len(chat)},
        )
    ]


def dataset_findings(
    examples: Sequence[Example], suite: EvalSuite, suite_file: str = ""
) -> list[Finding]:
    """All dataset checks (no tokenizer needed)."""
    names = suite.tool_names
    calls = {i: c for i, e in enumerate(examples) if (c := example_calls(e, names))}
    return [
        *check_call_formats(examples, suite, calls),
        *check_api_usage(examples, suite, calls),
        *check_tool_share(examples, suite, calls),
        *check_duplicates(examples),
        *check_eval_leakage(examples, suite, suite_file),
        *check_system_prompt(examples, suite, suite_file),
    ]


# --------------------------------------------------------------------------- suite checks

# Stop strings that would cut the call the format asks for before it is written.
_FORMAT_MARKERS: dict[str, tuple[str, ...]] = {
    "code_mode": ("<tool_call>", "<function=", "<parameter=", WRAPPER),
    "json_tools": ("<tool_call>", '{"name"'),
}


def check_suite(
    suite: EvalSuite,
    suite_file: str = "",
    line_of: Callable[[tuple[str | int, ...]], int | None] = lambda _loc: None,
    checkpoint_prompts: Sequence[str] | None = None,
) -> list[Finding]:
    """Prompts, tool API and format are consistent; every expected tool exists."""
    findings: list[Finding] = []
    names = set(suite.tool_names)
    for i, prompt in enumerate(suite.prompts):
        for tool in prompt.expected_tools:
            if tool not in names:
                findings.append(
                    Finding(
                        "error",
                        SUITE_CONSISTENCY,
                        f"prompt {prompt.id} expects tool {tool!r}, which is not in the "
                        "suite's tool API — it can never score 1.0",
                        "fix the prompt's tool or add the tool to tools",
                        suite_file,
                        line_of(("prompts", i)),
                        evidence={"prompt": prompt.id, "tool": tool},
                    )
                )
    for i, stop in enumerate(suite.generation.stop):
        if any(stop in marker or marker in stop for marker in _FORMAT_MARKERS[suite.format]):
            findings.append(
                Finding(
                    "error",
                    SUITE_CONSISTENCY,
                    f"stop string {stop!r} occurs in every {suite.format} call, so generation "
                    "would stop before the call is written",
                    "remove it from generation.stop",
                    suite_file,
                    line_of(("generation", "stop", i)),
                    evidence={"stop": stop},
                )
            )
    if suite.format == "code_mode" and WRAPPER in names:
        index = suite.tool_names.index(WRAPPER)
        findings.append(
            Finding(
                "error",
                SUITE_CONSISTENCY,
                "execute_code is the Code-Mode wrapper, not a tool of the runtime API",
                "remove it from tools",
                suite_file,
                line_of(("tools", index)),
            )
        )
    if suite.format == "code_mode" and WRAPPER not in suite.system_prompt:
        findings.append(
            Finding(
                "warning",
                PROSE_DRIFT,
                "the system prompt does not mention execute_code — without tool instructions "
                "the seeds' 7B model answered every tool prompt in prose",
                "tell the model in the system prompt to write Python in the execute_code tool",
                suite_file,
                line_of(("system_prompt",)),
            )
        )
    kinds = Counter(p.expect for p in suite.prompts)
    if not kinds.get("tool"):
        findings.append(
            Finding(
                "warning",
                SUITE_CONSISTENCY,
                "the suite has no `expect: tool` prompts, so format adherence is not measured",
                "add tool prompts",
                suite_file,
                line_of(("prompts",)),
            )
        )
    if checkpoint_prompts:
        chosen = [p for p in suite.prompts if p.id in set(checkpoint_prompts)]
        if chosen and not any(p.expect == "tool" for p in chosen):
            findings.append(
                Finding(
                    "warning",
                    MISLEADING_VAL_LOSS,
                    "eval.checkpoint_prompts has no tool prompt, so the checkpoint adherence "
                    "curve cannot show whether the format was learned",
                    "include tool prompts in eval.checkpoint_prompts",
                    evidence={"checkpoint_prompts": list(checkpoint_prompts)},
                )
            )
    return findings


# --------------------------------------------------------------------------- spec checks


def quantized_bits(base_model: str, config: Mapping[str, Any] | None) -> int | None:
    """Bits of a quantized base model, from its config or (for an HF id) its name."""
    if config:
        quant = config.get("quantization") or config.get("quantization_config")
        if isinstance(quant, Mapping) and isinstance(quant.get("bits"), int):
            return int(quant["bits"])
        return None
    match = re.search(r"(?<![0-9])([2-8])-?bit", base_model, flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


def _twin_present(spec: ExperimentSpec) -> bool:
    """A ≥ MIN_SAFE_BITS or f16 variant is evaluated next to the quantized ones."""
    variants = set(spec.eval.variants)
    if "fused" in variants and (spec.fuse is None or spec.fuse.dequantize):
        return True
    return "quantized" in variants and any(q.bits >= MIN_SAFE_BITS for q in spec.quantize)


def check_quantization(
    spec: ExperimentSpec,
    base_bits: int | None = None,
    spec_file: str = "",
    line_of: Callable[[tuple[str | int, ...]], int | None] = lambda _loc: None,
) -> list[Finding]:
    """Quantizing a fused adapter below 5 bits, or fusing into a quantized base."""
    findings: list[Finding] = []
    if spec.fuse is None:
        return findings
    low = [(i, q) for i, q in enumerate(spec.quantize) if q.bits < MIN_SAFE_BITS]
    if low:
        i, first = low[0]
        variants = ", ".join(q.variant for _, q in low)
        twin = (
            "it is compared with the run's f16 / ≥ 5-bit twin"
            if _twin_present(spec)
            else f"the farm adds a {variant_name(TWIN_BITS)} twin to compare against"
        )
        findings.append(
            Finding(
                "warning",
                QUANTIZATION_SIGNAL_LOSS,
                f"{variants} quantizes the fused adapter to {first.bits} bits "
                f"({2**first.bits} levels): LoRA deltas are small and get rounded away (the "
                "seeds: 100% in f16 → 60% at 4 bits, near 0% after a 4-bit fuse); " + twin,
                f"ship a ≥ {MIN_SAFE_BITS}-bit variant (quantize: [{{bits: {MIN_SAFE_BITS}}}]) "
                "or the fused f16 model",
                spec_file,
                line_of(("quantize", i, "bits")),
                evidence={"variants": [q.variant for _, q in low], "bits": first.bits},
            )
        )
    if not spec.fuse.dequantize and base_bits is not None and base_bits < MIN_SAFE_BITS:
        findings.append(
            Finding(
                "warning",
                QUANTIZATION_SIGNAL_LOSS,
                f"fuse.dequantize is false and the base model is {base_bits}-bit: the adapter "
                f"is fused back into {base_bits}-bit weights, which erased the seeds' adapter",
                "set `fuse: {dequantize: true}` and quantize explicitly to ≥ 5 bits",
                spec_file,
                line_of(("fuse", "dequantize")),
                evidence={"base_bits": base_bits},
            )
        )
    return findings


def ensure_quant_twin(spec: ExperimentSpec) -> tuple[ExperimentSpec, Finding | None]:
    """When a fused adapter is quantized below 5 bits and evaluated, and neither the
    fused f16 model nor a ≥ 5-bit variant is evaluated next to it, add a q5 variant
    (same group size) so the run has a twin to compare against. Returns the spec
    (unchanged when nothing is needed) and an info Finding naming what was added."""
    if spec.fuse is None or "quantized" not in spec.eval.variants or _twin_present(spec):
        return spec, None
    low = [q for q in spec.quantize if q.bits < MIN_SAFE_BITS]
    if not low:
        return spec, None
    group = low[0].group_size if low[0].group_size else DEFAULT_GROUP_SIZE
    twin = QuantizeSpec(bits=TWIN_BITS, group_size=group)
    new = spec.model_copy(update={"quantize": [*spec.quantize, twin]})
    return new, Finding(
        "info",
        QUANTIZATION_SIGNAL_LOSS,
        f"added quantize variant {twin.variant} as the ≥ {MIN_SAFE_BITS}-bit twin of "
        f"{', '.join(q.variant for q in low)}, so a lost adapter shows as a gap between them",
        evidence={"added": twin.variant, "twin_of": [q.variant for q in low]},
    )


def checkpoint_val_iterations(iters: int, steps_per_eval: int) -> list[int]:
    """Iterations mlx-lm reports a val loss for (its callback gets `it - 1`)."""
    its = {1, iters, *range(steps_per_eval, iters + 1, steps_per_eval)}
    return sorted(it - 1 for it in its)


def check_seeds_and_checkpoints(
    spec: ExperimentSpec,
    spec_file: str = "",
    line_of: Callable[[tuple[str | int, ...]], int | None] = lambda _loc: None,
) -> list[Finding]:
    findings: list[Finding] = []
    if len(spec.seeds) < MIN_SEEDS:
        findings.append(
            Finding(
                "info",
                STOCHASTIC_FORMAT_LOCK,
                f"{len(spec.seeds)} seed(s): identical configs scored 82.4%, 38.9% and 22.2% "
                "across seeds in the seeds, and one seed cannot show that spread",
                f"use at least {MIN_SEEDS} seeds",
                spec_file,
                line_of(("seeds",)),
                evidence={"seeds": list(spec.seeds)},
            )
        )
    if spec.eval.checkpoints:
        train = spec.train
        reports = checkpoint_val_iterations(train.iters, train.steps_per_eval)
        ckpts = list(range(train.save_every, train.iters + 1, train.save_every))
        without = [
            k for k in ckpts if not any(abs(r - k) <= VAL_LOSS_TOLERANCE_STEPS for r in reports)
        ]
        if without:
            findings.append(
                Finding(
                    "info",
                    MISLEADING_VAL_LOSS,
                    f"{len(without)} of {len(ckpts)} checkpoints get no val loss "
                    f"(steps_per_eval {train.steps_per_eval}, save_every {train.save_every}), "
                    "so the best-by-val-loss checkpoint is chosen among the others only",
                    f"set train.steps_per_eval to {train.save_every} (or a divisor of it)",
                    spec_file,
                    line_of(("train", "steps_per_eval")),
                    evidence={"checkpoints_without_val_loss": without[:MAX_LISTED]},
                )
            )
    return findings


# --------------------------------------------------------------------------- the edge


def read_examples(dataset: Path) -> list[Example]:
    """Rows of train/valid/test.jsonl with their line numbers, read as mlx-lm reads them
    (rows that do not parse as JSON objects are skipped: spec validation reports them)."""
    examples: list[Example] = []
    for split in ("train", "valid", "test"):
        path = Path(dataset) / f"{split}.jsonl"
        if not path.is_file():
            continue
        with path.open("rb") as fh:
            for line in iter_lines(fh):
                row, error = parse_line(line)
                if error is None and isinstance(row, dict):
                    examples.append(Example(str(path), line.number, split, row))
    return examples


def data_loading_findings(warnings: Sequence[Problem]) -> list[Finding]:
    """The dataset scan's warnings (what mlx-lm will do with the files) as findings."""
    return _capped(
        [
            Finding(
                "warning",
                DATA_LOADING,
                f"{p.field}: {p.message}" if p.field else p.message,
                file=p.file,
                line=p.line,
                evidence={"field": p.field} if p.field else {},
            )
            for p in warnings
        ]
    )


def yaml_locator(text: str) -> Callable[[tuple[str | int, ...]], int | None]:
    """A function from a key path to the line (1-based) where it is in a YAML text."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        root = None

    def line_of(loc: tuple[str | int, ...]) -> int | None:
        node, line = root, None
        for part in loc:
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                match = next(((k, v) for k, v in node.value if k.value == part), None)
                if match is None:
                    break
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    break
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    return line_of


def _json_key_line(path: Path, key: str) -> int | None:
    try:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if f'"{key}"' in line:
                return lineno
    except OSError:
        return None
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_PROBE = "lorafarm-probe-answer"


def load_tokenizer(model_dir: Path) -> Any:
    """The base model's tokenizer, as mlx-lm loads it (transformers), from local files only."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)


def tokenizer_facts(
    tokenizer: Any, model_dir: Path, suite: EvalSuite, model: str
) -> TokenizerFacts:
    """Probe a loaded tokenizer: special tokens, chat template, end of turn, eos ids.

    The eos ids follow mlx-lm (0.32): `eos_token_id` from config.json, replaced by
    generation_config.json's when that has one, plus the tokenizer's eos token."""
    model_dir = Path(model_dir)
    tokenizer_file = next(
        (
            str(model_dir / name)
            for name in ("tokenizer.json", "tokenizer.model", "vocab.json")
            if (model_dir / name).is_file()
        ),
        str(model_dir),
    )
    template_file = str(
        model_dir / "chat_template.jinja"
        if (model_dir / "chat_template.jinja").is_file()
        else model_dir / "tokenizer_config.json"
    )

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    pieces = {
        token: list(tokenizer.convert_ids_to_tokens(encode(token)))
        for token in FORMAT_TOKENS.get(suite.format, ())
    }
    tokenizer_config = _read_json(model_dir / "tokenizer_config.json")
    has_template = bool(getattr(tokenizer, "chat_template", None)) or bool(
        tokenizer_config.get("chat_template_type")
    )

    template_error, turn_end, turn_end_id, turn_end_text = "", None, None, ""
    if has_template:
        # The conversation the eval renders: a system turn only when the suite has one.
        messages = (
            [{"role": "system", "content": suite.system_prompt}] if suite.system_prompt else []
        )
        messages += [
            {"role": "user", "content": "ping"},
            {"role": "assistant", "content": _PROBE},
        ]
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception as exc:  # noqa: BLE001 - any template error is the finding
            template_error = f"{type(exc).__name__}: {exc}"
        else:
            rest = str(text).split(_PROBE, 1)[1] if _PROBE in str(text) else ""
            ids = encode(rest) if rest else []
            special = set(tokenizer.get_added_vocab()) | set(tokenizer.all_special_tokens)
            first = tokenizer.convert_ids_to_tokens(ids[:1])
            if ids and first and first[0] in special:
                turn_end, turn_end_id = first[0], ids[0]
            else:
                turn_end_text = rest[:20]

    config_path = model_dir / "config.json"
    generation_path = model_dir / "generation_config.json"
    config_eos = _read_json(config_path).get("eos_token_id")
    eos_file, eos_source = config_path, "config.json eos_token_id"
    generation_eos = _read_json(generation_path).get("eos_token_id")
    if generation_eos:
        config_eos, eos_file = generation_eos, generation_path
        eos_source = "generation_config.json eos_token_id"
    ids_: list[int] = []
    if isinstance(config_eos, int):
        ids_ = [config_eos]
    elif isinstance(config_eos, list):
        ids_ = [i for i in config_eos if isinstance(i, int)]
    if getattr(tokenizer, "eos_token_id", None) is not None:
        if tokenizer.eos_token_id not in ids_:
            eos_source += f" + tokenizer eos_token {tokenizer.eos_token!r}"
        ids_.append(int(tokenizer.eos_token_id))
    eos_ids = tuple(dict.fromkeys(ids_))
    eos_tokens = dict(zip(eos_ids, tokenizer.convert_ids_to_tokens(list(eos_ids)), strict=True))
    stop_ids: dict[str, int] = {}
    for stop in suite.generation.stop:
        ids = encode(stop)
        if len(ids) == 1:
            stop_ids[stop] = ids[0]
    return TokenizerFacts(
        model=model,
        tokenizer_file=tokenizer_file,
        template_file=template_file,
        pieces=pieces,
        has_chat_template=has_template,
        template_error=template_error,
        turn_end=turn_end,
        turn_end_id=turn_end_id,
        turn_end_text=turn_end_text,
        eos_ids=eos_ids,
        eos_tokens=eos_tokens,
        eos_file=str(eos_file),
        eos_line=_json_key_line(eos_file, "eos_token_id"),
        eos_source=eos_source,
        stop_ids=stop_ids,
    )


def _file_kinds(examples: Sequence[Example]) -> dict[str, str | None]:
    """The dataset class mlx-lm picks for each file: from its first row."""
    kinds: dict[str, str | None] = {}
    for example in examples:
        kinds.setdefault(example.file, loader_kind(example.row))
    return kinds


def _chat_of(row: Mapping[str, Any], kind: str) -> list[Any]:
    # CompletionsDataset turns a row into this two-turn conversation.
    if kind == "completions":
        return [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["completion"]},
        ]
    return row["messages"]


def render_like_mlx_lm(tokenizer: Any, row: Mapping[str, Any], kind: str, mask_prompt: bool) -> str:
    """The text mlx-lm trains on for a row of a `kind` file; raises where mlx-lm raises.

    With mask_prompt mlx-lm also renders the prompt (every message but the last)
    to find where the loss starts, and that render can fail on its own."""
    if kind == "text":
        return str(row["text"])
    messages, tools = _chat_of(row, kind), row.get("tools")
    text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    if mask_prompt:
        last_is_reply = kind == "completions" or messages[-1].get("role") == "assistant"
        tokenizer.apply_chat_template(
            messages[:-1], tools=tools, add_generation_prompt=last_is_reply, tokenize=False
        )
    return str(text)


# Roles nearly every chat template renders; other roles are always checked by
# rendering without them (their content may also appear in another message).
_COMMON_ROLES = ("system", "user", "assistant", "tool")


def dropped_messages(tokenizer: Any, row: Mapping[str, Any], rendered: str) -> list[int]:
    """Indices of the messages whose content the chat template leaves out (an unknown
    role, for one): rendering the conversation without them gives the same text."""
    messages, tools = row["messages"], row.get("tools")
    out: list[int] = []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str) or not content.strip():
            continue  # nothing to lose
        if message.get("role") in _COMMON_ROLES and content.strip() in rendered:
            continue  # the cheap test first: most content appears verbatim
        rest = messages[:i] + messages[i + 1 :]
        try:
            without = tokenizer.apply_chat_template(rest, tools=tools, tokenize=False)
        except Exception:  # noqa: BLE001 - the message matters to the template
            continue
        if str(without) == rendered:
            out.append(i)
    return out


def _dropped_finding(example: Example, indices: list[int]) -> Finding:
    messages = example.row["messages"]
    named = ", ".join(
        f"messages[{i}] (role {messages[i].get('role', 'missing')!r})" for i in indices
    )
    return Finding(
        "warning",
        DATA_LOADING,
        f"the chat template drops {named} — mlx-lm trains on this conversation without "
        + ("it" if len(indices) == 1 else "them"),
        "use a role the model's chat template renders, or remove the message",
        example.file,
        example.line,
        evidence={"field": f"messages[{indices[0]}]", "dropped": indices},
    )


def _failure_finding(failed: list[tuple[Example, str]], message: str, fix: str) -> list[Finding]:
    if not failed:
        return []
    example, error = failed[0]
    return [
        Finding(
            "error",
            TOKENIZER_MISMATCH,
            f"{message}: {error}"
            + f" ({len(failed)} examples fail, e.g. {_locations([e for e, _ in failed])})",
            fix,
            example.file,
            example.line,
            evidence={"examples": len(failed)},
        )
    ]


def measure_examples(
    tokenizer: Any,
    examples: Sequence[Example],
    tool_names: Iterable[str],
    mask_prompt: bool = False,
) -> tuple[list[ExampleLength], list[Finding]]:
    """Token counts of train and valid examples rendered as mlx-lm renders them for
    training (test.jsonl's rows are never rendered by a training run); an error for
    the examples mlx-lm cannot render or that render to nothing, and a warning for
    each conversation whose chat template drops a message."""
    names = list(tool_names)
    kinds = _file_kinds(examples)
    lengths: list[ExampleLength] = []
    failed: list[tuple[Example, str]] = []
    empty: list[tuple[Example, str]] = []
    warnings: list[Finding] = []
    for example in examples:
        kind = kinds.get(example.file)
        if example.split not in ("train", "valid") or kind is None:
            continue
        row = example.row
        try:
            text = render_like_mlx_lm(tokenizer, row, kind, mask_prompt)
        except Exception as exc:  # noqa: BLE001 - reported per example
            failed.append((example, f"{type(exc).__name__}: {exc}"))
            continue
        # TextDataset encodes with the tokenizer's special tokens; chat renders carry theirs.
        ids = (
            tokenizer.encode(text)
            if kind == "text"
            else tokenizer.encode(text, add_special_tokens=False)
        )
        if not ids:
            empty.append((example, "it renders to no tokens"))
            continue
        if kind == "chat" and (dropped := dropped_messages(tokenizer, row, text)):
            warnings.append(_dropped_finding(example, dropped))
        answer: int | None = None
        turns = assistant_turns(row)
        if example.split == "train" and turns and example_calls(example, names):
            answer = len(tokenizer.encode(turns[-1][0], add_special_tokens=False))
        lengths.append(ExampleLength(example.file, example.line, len(ids), answer))
    findings = [
        *_failure_finding(
            failed,
            "the chat template cannot render this example",
            "fix the example or use a model whose template supports its roles and tools",
        ),
        *_failure_finding(
            empty,
            "mlx-lm cannot train on this example",
            "give it text, or messages with roles the chat template renders",
        ),
        *_capped(warnings),
    ]
    return lengths, findings


def model_findings(
    spec: ExperimentSpec,
    suite: EvalSuite,
    model_dir: Path,
    examples: Sequence[Example],
    model: str | None = None,
    max_tokens_at: tuple[str, int | None] = ("", None),
) -> list[Finding]:
    """The checks that need the base model's tokenizer (locally or on the worker);
    `max_tokens_at` is the file and line that set the eval's max_tokens."""
    name = model or spec.base_model
    try:
        tokenizer = load_tokenizer(model_dir)
    except Exception as exc:  # noqa: BLE001 - any load failure is the finding
        return [
            Finding(
                "error",
                TOKENIZER_MISMATCH,
                f"cannot load the tokenizer of {name}: {type(exc).__name__}: {exc}",
                "check the model folder's tokenizer files",
                str(model_dir),
            )
        ]
    facts = tokenizer_facts(tokenizer, model_dir, suite, name)
    findings = [
        *check_special_tokens(facts, suite.format, [e for e in examples if e.split == "train"]),
        *check_chat_template(facts),
        *check_eos(facts),
    ]
    if facts.has_chat_template and not facts.template_error:
        lengths, render_errors = measure_examples(
            tokenizer, examples, suite.tool_names, spec.train.mask_prompt
        )
        max_tokens = spec.eval.max_tokens or suite.generation.max_tokens
        findings += render_errors + check_lengths(
            lengths, spec.train.max_seq_length, max_tokens, max_tokens_at
        )
    return findings


# Files mlx-lm's load_tokenizer reads (no weights): enough for the model checks.
TOKENIZER_PATTERNS = (
    "*.json",
    "tokenizer.model",
    "*.tiktoken",
    "tiktoken.model",
    "*.txt",
    "*.jinja",
)


def cached_model_dir(hf_id: str) -> Path | None:
    """The Hugging Face cache folder of `hf_id` when its tokenizer files are already on
    this machine; None otherwise. Never downloads."""
    try:
        from huggingface_hub import snapshot_download

        path = Path(
            snapshot_download(hf_id, allow_patterns=list(TOKENIZER_PATTERNS), local_files_only=True)
        )
    except Exception:  # noqa: BLE001 - not cached (or no hub library): the worker checks
        return None
    has_tokenizer = any((path / n).is_file() for n in ("tokenizer.json", "tokenizer.model"))
    return path if has_tokenizer and (path / "config.json").is_file() else None


def preflight(spec: ExperimentSpec, spec_path: Path | None = None) -> list[Finding]:
    """All preflight checks for a validated spec."""
    spec_file = str(spec_path) if spec_path else ""
    spec_line = (
        yaml_locator(Path(spec_path).read_text(encoding="utf-8"))
        if spec_path and Path(spec_path).is_file()
        else (lambda _loc: None)
    )
    suite_path = Path(spec.eval.suite)
    try:
        suite = load_suite(suite_path)
    except InputError as exc:
        return [
            Finding(
                "error",
                SUITE_CONSISTENCY,
                p.message,
                "fix the suite",
                p.file,
                p.line,
                evidence={"field": p.field},
            )
            for p in exc.problems
        ]
    suite_line = yaml_locator(suite_path.read_text(encoding="utf-8"))
    examples = read_examples(Path(spec.dataset))

    loading = check_dataset(Path(spec.dataset), spec.train.batch_size, spec.train.mask_prompt)
    findings = [
        *check_suite(suite, str(suite_path), suite_line, spec.eval.checkpoint_prompts),
        *data_loading_findings(loading.warnings),
        *dataset_findings(examples, suite, str(suite_path)),
    ]
    config: dict[str, Any] | None = None
    model_dir: Path | None = None
    if spec.base_model_is_local:
        model_dir = Path(spec.base_model)
        config = _read_json(model_dir / "config.json")
    else:
        model_dir = cached_model_dir(spec.base_model)
        config = _read_json(model_dir / "config.json") if model_dir else None
    findings += check_quantization(
        spec, quantized_bits(spec.base_model, config), spec_file, spec_line
    )
    findings += check_seeds_and_checkpoints(spec, spec_file, spec_line)
    if model_dir is not None:
        max_tokens_at = (
            (spec_file, spec_line(("eval", "max_tokens")))
            if spec.eval.max_tokens
            else (str(suite_path), suite_line(("generation", "max_tokens")))
        )
        findings += model_findings(spec, suite, model_dir, examples, None, max_tokens_at)
    else:
        findings.append(
            Finding(
                "info",
                TOKENIZER_MISMATCH,
                f"{spec.base_model} is a Hugging Face id not on this machine: the tokenizer, "
                "chat-template and eos checks run on the worker before training, and a "
                "failure stops the run before any training time is spent",
                file=spec_file,
                line=spec_line(("base_model",)),
                evidence={"base_model": spec.base_model},
            )
        )
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: order.get(f.severity, 3))


def _capped(findings: list[Finding]) -> list[Finding]:
    if len(findings) <= MAX_LISTED:
        return findings
    rest = findings[MAX_LISTED:]
    summary = Finding(
        rest[0].severity,
        rest[0].pattern,
        f"… and {len(rest)} more problems of this kind",
        evidence={"more": len(rest)},
    )
    return [*findings[:MAX_LISTED], summary]
