"""Preflight checks: what can be refused or warned about before a job is queued.

Each check is a pure function over data (tokenizer facts, dataset rows, suite,
spec) that returns Findings; `preflight` gathers the inputs at the edge (reads
the spec, suite and dataset files, finds the base model) and runs them all.
`model_findings` is the part that needs the base model's tokenizer: `preflight`
runs it for a local model folder (or one already in the Hugging Face cache),
and `worker.preflight` runs it on the worker, before training, for a Hugging
Face id that is not on the submitting machine.

Every finding names the failure pattern it guards against (the names of the
table "Failures the farm must catch" in docs/architecture.md), the evidence
(file, line, token, figures) and what to do about it. Errors refuse the
submission.

The checks, one module each:

* `findings`     — Finding, the failure patterns, the thresholds
* `examples`     — dataset rows and the tool calls they make (via `jobs.formats`)
* `tokenizer`    — special tokens, chat template, eos, lengths; rendering like mlx-lm
* `dataset`      — call formats, tool share, duplicates, leakage, system prompt
* `api`          — the code's use of the suite's tool API
* `suite`        — the suite's own consistency
* `quantization` — quantization and its twin, seeds, checkpoints' val loss
* `model`        — the edge: load the tokenizer, read the model's files, model checks
* `sample`       — the rows the content checks read: all of a small file, a sample of a big one
* `bounded`      — the tokenizer checks in a child process, stopped at a time limit
* `hf_cache`     — the edge: models already in the Hugging Face cache
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from jobs import settings
from jobs.checks.api import (
    ApiProblem,
    call_api_problems,
    check_api_usage,
    code_api_problems,
    suggest_attribute,
)
from jobs.checks.bounded import call_with_time_limit
from jobs.checks.dataset import (
    check_call_formats,
    check_duplicates,
    check_eval_leakage,
    check_system_prompt,
    check_tool_share,
    data_loading_findings,
    dataset_findings,
)
from jobs.checks.examples import (
    CALL_FAMILIES,
    TARGET_FAMILIES,
    Example,
    ExampleCall,
    assistant_turns,
    example_calls,
    find_calls,
)
from jobs.checks.findings import (
    CONFLICTING_FORMATS,
    DATA_LOADING,
    DISTRIBUTION_GAPS,
    DUPLICATE_EXAMPLES,
    EOS_MISMATCH,
    EVAL_LEAKAGE,
    FORMAT_TOKENS,
    LONG_ANSWER_SHARE,
    MAX_LISTED,
    MIN_SAFE_BITS,
    MIN_SEEDS,
    MISLEADING_VAL_LOSS,
    MODE_COLLAPSE,
    PROSE_DRIFT,
    QUANTIZATION_SIGNAL_LOSS,
    SHORT_MAX_TOKENS,
    STOCHASTIC_FORMAT_LOCK,
    SUITE_CONSISTENCY,
    SYSTEM_PROMPT_MISMATCH_SHARE,
    THINK_INTERFERENCE,
    TOKENIZER_MISMATCH,
    TOOL_SHARE_RANGE,
    TRUNCATION,
    TWIN_BITS,
    VAL_LOSS_TOLERANCE_STEPS,
    WRAPPER_NOT_LEARNED,
    Finding,
)
from jobs.checks.hf_cache import TOKENIZER_PATTERNS, cached_model_dir
from jobs.checks.model import load_tokenizer, model_findings, read_json, tokenizer_facts
from jobs.checks.quantization import (
    check_quantization,
    check_seeds_and_checkpoints,
    checkpoint_val_iterations,
    ensure_quant_twin,
    quantized_bits,
)
from jobs.checks.sample import SampledFile, read_sample
from jobs.checks.suite import check_suite
from jobs.checks.tokenizer import (
    ExampleLength,
    TokenizerFacts,
    check_chat_template,
    check_eos,
    check_lengths,
    check_special_tokens,
    dropped_messages,
    measure_examples,
    render_like_mlx_lm,
)
from jobs.dataset_memo import checked_dataset
from jobs.datasets import iter_lines, parse_line
from jobs.experiment_spec import ExperimentSpec
from jobs.experiment_spec.yaml_source import yaml_locator
from jobs.problems import InputError
from jobs.suite import load_suite

__all__ = [
    "CALL_FAMILIES",
    "CONFLICTING_FORMATS",
    "DATA_LOADING",
    "DISTRIBUTION_GAPS",
    "DUPLICATE_EXAMPLES",
    "EOS_MISMATCH",
    "EVAL_LEAKAGE",
    "FORMAT_TOKENS",
    "LONG_ANSWER_SHARE",
    "MAX_LISTED",
    "MIN_SAFE_BITS",
    "MIN_SEEDS",
    "MISLEADING_VAL_LOSS",
    "MODE_COLLAPSE",
    "PROSE_DRIFT",
    "QUANTIZATION_SIGNAL_LOSS",
    "SHORT_MAX_TOKENS",
    "STOCHASTIC_FORMAT_LOCK",
    "SUITE_CONSISTENCY",
    "SYSTEM_PROMPT_MISMATCH_SHARE",
    "TARGET_FAMILIES",
    "THINK_INTERFERENCE",
    "TOKENIZER_MISMATCH",
    "TOKENIZER_PATTERNS",
    "TOOL_SHARE_RANGE",
    "TRUNCATION",
    "TWIN_BITS",
    "VAL_LOSS_TOLERANCE_STEPS",
    "WRAPPER_NOT_LEARNED",
    "ApiProblem",
    "Example",
    "ExampleCall",
    "ExampleLength",
    "Finding",
    "TokenizerFacts",
    "assistant_turns",
    "cached_model_dir",
    "call_api_problems",
    "check_api_usage",
    "check_call_formats",
    "check_chat_template",
    "check_duplicates",
    "check_eos",
    "check_eval_leakage",
    "check_lengths",
    "check_quantization",
    "check_seeds_and_checkpoints",
    "check_special_tokens",
    "check_suite",
    "check_system_prompt",
    "check_tool_share",
    "checkpoint_val_iterations",
    "code_api_problems",
    "data_loading_findings",
    "dataset_findings",
    "dropped_messages",
    "ensure_quant_twin",
    "example_calls",
    "find_calls",
    "load_tokenizer",
    "measure_examples",
    "model_findings",
    "preflight",
    "quantized_bits",
    "read_examples",
    "render_like_mlx_lm",
    "suggest_attribute",
    "tokenizer_facts",
]


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
    loading = checked_dataset(Path(spec.dataset), spec.train.batch_size, spec.train.mask_prompt)
    examples, sampled = read_sample(Path(spec.dataset), loading.reports)
    findings = [
        *check_suite(suite, str(suite_path), suite_line, spec.eval.checkpoint_prompts),
        *data_loading_findings(loading.warnings),
        *noted(dataset_findings(examples, suite, str(suite_path)), sampled),
    ]
    config: dict[str, Any] | None = None
    model_dir: Path | None = None
    if spec.base_model_is_local:
        model_dir = Path(spec.base_model)
        config = read_json(model_dir / "config.json")
    else:
        model_dir = cached_model_dir(spec.base_model)
        config = read_json(model_dir / "config.json") if model_dir else None
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
        findings += noted(
            bounded_model_findings(spec, suite, model_dir, examples, max_tokens_at), sampled
        )
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
    findings += sample_findings(sampled)
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: order.get(f.severity, 3))


def noted(findings: Sequence[Finding], sampled: Sequence[SampledFile]) -> list[Finding]:
    """Findings drawn from a sampled file say so, in the message and the evidence."""
    samples = {s.file: s for s in sampled if s.is_sample}
    out: list[Finding] = []
    for finding in findings:
        sample = samples.get(finding.file)
        if sample is None:
            out.append(finding)
            continue
        evidence = {
            **finding.evidence,
            "sample": {"checked": sample.checked, "lines": sample.lines},
        }
        message = f"{finding.message} (checked on {sample.note()})"
        out.append(replace(finding, message=message, evidence=evidence))
    return out


def sample_findings(sampled: Sequence[SampledFile]) -> list[Finding]:
    """One note per sampled file: the loading check read every line, the content
    checks a sample."""
    return [
        Finding(
            "info",
            DATA_LOADING,
            f"every line was checked for loading; the content and token-length checks read "
            f"{s.note()}",
            file=s.file,
            evidence={"checked": s.checked, "lines": s.lines},
        )
        for s in sampled
        if s.is_sample
    ]


def bounded_model_findings(
    spec: ExperimentSpec,
    suite: Any,
    model_dir: Path,
    examples: Sequence[Example],
    max_tokens_at: tuple[str, int | None],
) -> list[Finding]:
    """`model_findings` in a child process stopped after FARM_CHECK_TEMPLATE_S: a
    chat template that renders without end is a finding, not a hang."""
    limit = settings.check_template_s()
    args = (spec, suite, model_dir, list(examples), None, max_tokens_at)
    outcome = call_with_time_limit(model_findings, args, limit)
    if outcome.ok:
        return list(outcome.value)
    if outcome.timed_out:
        message = (
            f"loading the tokenizer of {spec.base_model} and rendering {len(examples)} examples "
            f"with its chat template did not finish within {limit:g} s and was stopped — a "
            "template with nested loops over the messages can render for hours, and mlx-lm "
            "renders every training example with it"
        )
        fix = "simplify the chat template, or raise FARM_CHECK_TEMPLATE_S on a slow machine"
    else:
        message = f"the tokenizer checks of {spec.base_model} failed: {outcome.error}"
        fix = "check the model folder's tokenizer files and chat template"
    evidence = {"time_limit_s": limit, "timed_out": outcome.timed_out}
    return [Finding("error", TOKENIZER_MISMATCH, message, fix, str(model_dir), evidence=evidence)]
