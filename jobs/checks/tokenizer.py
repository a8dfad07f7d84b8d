"""Tokenizer checks: special tokens, chat template, end of turn and eos, lengths;
and rendering examples the way mlx-lm renders them for training.

The checks are pure functions of `TokenizerFacts` (probed at the edge, in
`jobs.checks.model`) and token counts; the rendering takes a loaded tokenizer
object and reads no files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.checks.examples import Example, assistant_turns, example_calls, locations
from jobs.checks.findings import (
    DATA_LOADING,
    EOS_MISMATCH,
    FORMAT_TOKENS,
    LONG_ANSWER_SHARE,
    SHORT_MAX_TOKENS,
    TOKENIZER_MISMATCH,
    TRUNCATION,
    Finding,
    capped,
)
from jobs.datasets import loader_kind


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
                "token (earlier runs' Qwen2.5 split <tool_response> this way and called 0% of "
                "tools)",
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
                "would be plain text, which cost earlier runs 60 points (88% → 28%)",
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
            f"({facts.eos_source}) — every generation would run to max_tokens (earlier runs' "
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
            + f" ({len(failed)} examples fail, e.g. {locations([e for e, _ in failed])})",
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
        *capped(warnings),
    ]
    return lengths, findings
