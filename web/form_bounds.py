"""The submit form's Validate and Submit without tying up the UI server.

Streamlit serves every browser session from one process; a validation that reads
a dataset of a million lines there holds it for seconds. A form whose dataset
files are small is checked in this process (`web.forms.check_form`: a fraction of
a second); a bigger one is checked in a child process (`jobs.checks.bounded`),
which the session waits for without holding the server, stopped after
FARM_VALIDATE_TIMEOUT_S with a line that says so. A submission over a queue
quota is refused with the line `farm submit` prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis import Redis

from jobs import settings
from jobs.checks.bounded import call_with_time_limit
from jobs.datasets import SPLITS
from jobs.experiment_spec.files import resolve_path
from jobs.problems import InputError
from web import forms

# Who the queue quota counts form submissions against: the UI has one password and
# no user names, so everyone signed in to it is one submitter.
WEB_SUBMITTER = "web"
# Dataset files up to this size are checked in the server's own process (a scan
# of 50 MB takes about a second).
IN_PROCESS_BYTES = 50_000_000


def dataset_bytes(values: Mapping[str, Any]) -> int:
    """Bytes of the split files of the form's dataset (0 when there is none)."""
    value = values.get("dataset")
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        return 0
    folder = resolve_path(value, forms.PROJECT_ROOT)
    total = 0
    for split in SPLITS:
        try:
            total += (folder / f"{split}.jsonl").stat().st_size
        except OSError:
            continue
    return total


def validate_form(values: Mapping[str, Any], run_preflight: bool = True) -> forms.FormResult:
    """Everything `farm submit` checks, with each problem filed under its form field
    (`forms.check_form`), in a child process stopped at FARM_VALIDATE_TIMEOUT_S when
    the dataset is big."""
    if dataset_bytes(values) <= IN_PROCESS_BYTES:
        return forms.check_form(values, run_preflight)
    limit = settings.validate_timeout_s()
    outcome = call_with_time_limit(forms.check_form, (dict(values), run_preflight), limit)
    if outcome.ok:
        return outcome.value  # type: ignore[no-any-return]
    result = forms.FormResult(yaml=forms.form_to_yaml(values))
    if outcome.timed_out:
        message = (
            f"checking the spec and its {dataset_bytes(values)}-byte dataset took longer than "
            f"{limit:g} s and was stopped — run `farm check spec.yaml` from a terminal, or "
            "raise FARM_VALIDATE_TIMEOUT_S"
        )
    else:
        message = f"checking the spec failed: {outcome.error}"
    result.problems[forms.GENERAL] = [message]
    return result


def submit_valid(result: forms.FormResult, redis: Redis) -> forms.FormResult:
    """Write a validated form's experiment (or sweep) and enqueue it; a queue quota's
    refusal becomes the form's general problem, nothing written."""
    from jobs.submit import submit_experiment, submit_sweep

    try:
        if result.ok and result.plan is not None:
            result.sweep_id = submit_sweep(result.plan, redis, result.findings, WEB_SUBMITTER)
        elif result.ok and result.spec is not None:
            result.experiment_id = submit_experiment(
                result.spec, redis, result.yaml, result.findings, WEB_SUBMITTER
            )
    except InputError as exc:  # a queue quota, in the words `farm submit` uses
        result.problems.setdefault(forms.GENERAL, []).extend(str(p) for p in exc.problems)
    return result


def submit_form(values: Mapping[str, Any], redis: Redis) -> forms.FormResult:
    """Validate and, when nothing is wrong, write the experiment and enqueue it."""
    return submit_valid(validate_form(values), redis)
