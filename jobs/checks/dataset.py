"""Dataset checks: call formats, tool-call share, duplicates, eval prompts in the
training data, the system prompt, and what mlx-lm will do with the files.

Pure functions over `Example`s and the suite; the API usage of the calls is
checked in `jobs.checks.api`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jobs.checks.api import check_api_usage
from jobs.checks.examples import (
    CALL_FAMILIES,
    TARGET_FAMILIES,
    Example,
    ExampleCall,
    example_calls,
    locations,
)
from jobs.checks.findings import (
    CONFLICTING_FORMATS,
    DATA_LOADING,
    DISTRIBUTION_GAPS,
    DUPLICATE_EXAMPLES,
    EVAL_LEAKAGE,
    MISLEADING_VAL_LOSS,
    SYSTEM_PROMPT_MISMATCH_SHARE,
    TOKENIZER_MISMATCH,
    TOOL_SHARE_RANGE,
    Finding,
    capped,
)
from jobs.formats import WRAPPER, called_names, parse_code
from jobs.problems import Problem
from jobs.suite import EvalSuite

# --------------------------------------------------------------------------- dataset checks


def check_call_formats(
    examples: Sequence[Example], suite: EvalSuite, calls: Mapping[int, list[ExampleCall]]
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
            f"{len(rows)} use {CALL_FAMILIES[f]} (e.g. {locations(rows)})" for f, rows in ranked
        )
        n_other = sum(len(rows) for _, rows in others)
        findings.append(
            Finding(
                "error",
                CONFLICTING_FORMATS,
                f"the dataset mixes {len(ranked)} tool-call formats: {parts} — each format "
                "reinforces a different pattern (earlier runs: 419 XML vs 62 bare-code examples)",
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
                f"{len(rows)} examples use {CALL_FAMILIES[family]} (e.g. {locations(rows)}) — "
                "the model would learn calls the suite scores 0.5 at best",
                f"convert the examples to {CALL_FAMILIES[sorted(target)[0]]}, or use a suite "
                "whose format matches the data",
                rows[0].file,
                rows[0].line,
                evidence=evidence,
            )
        )
    return findings


def check_tool_share(
    examples: Sequence[Example], suite: EvalSuite, calls: Mapping[int, list[ExampleCall]]
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
                f"aim for {low:.0%}–{high:.0%} tool calls (earlier runs settled on 70/30)",
                file,
                evidence=evidence,
            )
        )
    expected = {t for p in suite.prompts for t in p.expected_tools}
    called: set[str] = set()
    for i in train:
        for call in calls.get(i, []):
            if call.name and call.name != WRAPPER:
                called.add(call.name)
            if call.code:
                tree = parse_code(call.code)
                called |= called_names(tree, frozenset(expected)) if tree else set()
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
            "the prompt the model learned (earlier runs lost 60 points to a prompt format change)",
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


def data_loading_findings(warnings: Sequence[Problem]) -> list[Finding]:
    """The dataset scan's warnings (what mlx-lm will do with the files) as findings."""
    return capped(
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
