"""The base model at the edge: load its tokenizer from local files, read its config
files, probe the facts the tokenizer checks need, and run those checks.

`model_findings` is what `preflight` runs for a model on this machine and what
`worker.preflight` runs on the worker for a Hugging Face id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobs.checks.examples import Example
from jobs.checks.findings import FORMAT_TOKENS, TOKENIZER_MISMATCH, Finding
from jobs.checks.tokenizer import (
    TokenizerFacts,
    check_chat_template,
    check_eos,
    check_lengths,
    check_special_tokens,
    measure_examples,
)
from jobs.experiment_spec import ExperimentSpec
from jobs.suite import EvalSuite


def json_key_line(path: Path, key: str) -> int | None:
    try:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if f'"{key}"' in line:
                return lineno
    except OSError:
        return None
    return None


def read_json(path: Path) -> dict[str, Any]:
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
    tokenizer_config = read_json(model_dir / "tokenizer_config.json")
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
    config_eos = read_json(config_path).get("eos_token_id")
    eos_file, eos_source = config_path, "config.json eos_token_id"
    generation_eos = read_json(generation_path).get("eos_token_id")
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
        eos_line=json_key_line(eos_file, "eos_token_id"),
        eos_source=eos_source,
        stop_ids=stop_ids,
    )


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
