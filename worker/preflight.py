"""The tokenizer / chat-template / eos checks on the worker, before training.

A spec whose base model is a Hugging Face id that was not on the submitting
machine could not be checked at submit time (`farm check` says so). The train
stage calls `check_before_training` first: it fetches only the model's config
and tokenizer files (no weights), runs `jobs.checks.model_findings`, stores
the findings as `Diagnostic(scope="preflight")` rows of the run, and raises
`PreflightFailed` on an error, so the run stops before any training time (or
a multi-gigabyte weight download) is spent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from sqlmodel import col, delete

from jobs.checks import (
    TOKENIZER_PATTERNS,
    Finding,
    model_findings,
    read_examples,
)
from jobs.db import Diagnostic, Experiment, Run, session_scope
from jobs.experiment_spec import ExperimentSpec
from jobs.suite import load_suite
from worker.context import StageContext


class PreflightFailed(RuntimeError):
    """The base model failed a preflight check on the worker; the message lists why."""


def fetch_tokenizer_files(hf_id: str) -> Path:
    """Download (or find in the HF cache) only the config and tokenizer files of a model,
    the same files mlx-lm's `load_tokenizer` reads; never the weights."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(hf_id, allow_patterns=list(TOKENIZER_PATTERNS)))


def worker_findings(spec: ExperimentSpec, model_dir: Path) -> list[Finding]:
    """The model checks of `farm check`, for a model folder fetched on the worker."""
    suite = load_suite(Path(spec.eval.suite))
    return model_findings(spec, suite, model_dir, read_examples(Path(spec.dataset)))


def record_preflight(run_id: int, findings: Sequence[Finding]) -> None:
    """Store the findings as the run's preflight diagnostics, replacing earlier ones
    (a retried train stage checks again)."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise ValueError(f"no run {run_id}")
        experiment = session.get(Experiment, run.experiment_id)
        session.exec(  # type: ignore[call-overload]
            delete(Diagnostic).where(
                col(Diagnostic.run_id) == run_id, col(Diagnostic.scope) == "preflight"
            )
        )
        for finding in findings:
            session.add(
                Diagnostic(
                    experiment_id=run.experiment_id,
                    run_id=run_id,
                    fingerprint=experiment.fingerprint if experiment else run.fingerprint,
                    scope="preflight",
                    pattern=finding.pattern,
                    severity=finding.severity,
                    message=finding.render(),
                    evidence={**finding.evidence, "where": "worker"},
                )
            )


def check_before_training(
    ctx: StageContext,
    fetch: Callable[[str], Path] = fetch_tokenizer_files,
    always: bool = False,
) -> list[Finding]:
    """Run the model checks for a Hugging Face base model before training.

    A local base model was checked at submit time and is skipped unless `always`.
    Prints every finding (it lands in the stage log), records them on the run, and
    raises PreflightFailed when one is an error. Returns the findings."""
    spec = ctx.spec
    if spec.base_model_is_local and not always:
        return []
    model_dir = Path(spec.base_model) if spec.base_model_is_local else fetch(spec.base_model)
    findings = worker_findings(spec, model_dir)
    record_preflight(ctx.run_id, findings)
    for finding in findings:
        print(finding.render(), flush=True)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise PreflightFailed(
            f"preflight failed for {spec.base_model} ({len(errors)} errors), no training done:\n"
            + "\n".join(f.render() for f in errors)
        )
    return findings
