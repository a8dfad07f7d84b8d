"""Preflight is bounded (docs/architecture.md, "Limits"): suite and dataset files
over their caps are refused before they are parsed (exit 2, the file and the
limit named); a chat template that renders without end is stopped at
FARM_CHECK_TEMPLATE_S with a finding that says so; a big dataset's content
checks read a fixed sample and say so. The real tiny model and `farm check`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from jobs import checks
from jobs.experiment_spec import load_spec
from jobs.limits import MAX_DATASET_FILE_BYTES, MAX_SUITE_BYTES
from jobs.row_sample import HEAD_ROWS, SPREAD_ROWS, RowSample
from tests.support import PROJECT_ROOT
from tests.support.spec_files import write_spec

DATA = PROJECT_ROOT / "data" / "datasets" / "code_mode"
SUITE = PROJECT_ROOT / "data" / "evals" / "code_mode.yaml"
# Two nested loops of the sandbox's largest range: 10^10 steps, hours of rendering.
RUNAWAY = (
    "{% for a in range(100000) %}{% for b in range(100000) %}{{ '' }}{% endfor %}{% endfor %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
)


def farm_check(spec: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "check", str(spec)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
        env=os.environ | env,
    )


def test_an_oversized_suite_is_refused_before_it_is_parsed(
    tiny_model: Path, tmp_path: Path
) -> None:
    suite = tmp_path / "huge.yaml"
    # Not YAML at all: a parse would report that instead of the size.
    suite.write_text("prompts: [" + "{" * (MAX_SUITE_BYTES + 10))
    spec = write_spec(tmp_path / "spec.yaml", tiny_model, eval={"suite": str(suite)})
    started = time.monotonic()
    done = farm_check(spec)
    assert done.returncode == 2, done.stdout + done.stderr
    assert time.monotonic() - started < 60
    line = (
        f"eval.suite: {suite}: the suite file is {MAX_SUITE_BYTES + 20} bytes, "
        f"at most {MAX_SUITE_BYTES} (4 MB) allowed — split the suite"
    )
    assert line in done.stderr, done.stderr
    assert "invalid YAML" not in done.stderr and "Traceback" not in done.stderr


def test_an_oversized_dataset_file_is_refused_before_a_line_is_read(
    tiny_model: Path, tmp_path: Path
) -> None:
    dataset = tmp_path / "data"
    dataset.mkdir()
    shutil.copy(DATA / "valid.jsonl", dataset / "valid.jsonl")
    with (dataset / "train.jsonl").open("wb") as fh:
        fh.truncate(MAX_DATASET_FILE_BYTES + 1)  # sparse: NUL bytes a scan would choke on
    spec = write_spec(tmp_path / "spec.yaml", tiny_model, dataset=str(dataset))
    started = time.monotonic()
    done = farm_check(spec)
    assert done.returncode == 2, done.stdout + done.stderr
    assert time.monotonic() - started < 60
    line = (
        f"{dataset / 'train.jsonl'}: train.jsonl is too big to check: the file is "
        f"{MAX_DATASET_FILE_BYTES + 1} bytes, at most {MAX_DATASET_FILE_BYTES} (1 GB) allowed "
        "— split the data or train on a subset"
    )
    assert line in done.stderr.splitlines(), done.stderr
    assert "Traceback" not in done.stderr


def test_a_runaway_chat_template_is_stopped_at_the_time_limit(
    tiny_model: Path, tmp_path: Path
) -> None:
    model = tmp_path / "runaway-model"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = RUNAWAY
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    spec = write_spec(tmp_path / "spec.yaml", model)

    started = time.monotonic()
    done = farm_check(spec, FARM_CHECK_TEMPLATE_S="8")
    took = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    assert took < 60, took
    [line] = [line for line in done.stdout.splitlines() if "did not finish" in line]
    assert line.startswith(f"error: {model}: [tokenizer / format mismatch] loading the tokenizer")
    assert "did not finish within 8 s and was stopped" in line
    assert "raise FARM_CHECK_TEMPLATE_S" in line
    # Nothing is left rendering.
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(model) in " ".join(p.info["cmdline"] or [])
    ]


def sampled(lines: int, size: int = 466, **kwargs: int) -> RowSample:
    sample = RowSample(**kwargs)
    for number in range(1, lines + 1):
        sample.offer(number, {"n": number}, size)
    return sample


def test_the_sample_is_fixed_and_spread_over_the_file() -> None:
    sample = sampled(1_000_000)
    kept = set(sample.rows)
    head = set(range(1, HEAD_ROWS + 1))
    assert head <= kept and SPREAD_ROWS <= len(kept - head) < 2 * SPREAD_ROWS
    spread = sorted(kept - head)
    assert {b - a for a, b in zip(spread, spread[1:], strict=False)} == {sample.stride}
    assert spread[0] == HEAD_ROWS + 1 and spread[-1] > 1_000_000 - sample.stride
    assert kept == set(sampled(1_000_000).rows)  # the same rows every time
    assert set(sampled(1234).rows) == set(range(1, 1235))  # a small file is read whole


def test_the_sample_holds_a_bounded_number_of_bytes() -> None:
    # Long lines: the head keeps at most half the budget, the spaced rows the rest.
    sample = sampled(20_000, size=1_000_000, budget=50_000_000)
    assert sum(sample.sizes.values()) <= 50_000_000
    assert len([n for n in sample.rows if n <= HEAD_ROWS]) == 25
    assert len([n for n in sample.rows if n > HEAD_ROWS]) >= 12


def test_a_big_dataset_is_checked_on_a_sample_and_the_findings_say_so(
    tiny_model: Path, tmp_path: Path
) -> None:
    dataset = tmp_path / "data"
    dataset.mkdir()
    rows = (DATA / "train.jsonl").read_text().splitlines()
    total = 5_000
    with (dataset / "train.jsonl").open("w") as fh:
        for n in range(total):
            fh.write(rows[n % len(rows)] + "\n")
    shutil.copy(DATA / "valid.jsonl", dataset / "valid.jsonl")
    spec_path = write_spec(tmp_path / "spec.yaml", tiny_model, dataset=str(dataset))
    findings = checks.preflight(load_spec(spec_path), spec_path)

    train = str(dataset / "train.jsonl")
    checked = HEAD_ROWS + (total - HEAD_ROWS) // 2  # every other line after the head
    note = (
        f"a sample of {checked} of {total} lines of train.jsonl, "
        "the first lines and lines evenly spaced over the rest"
    )
    [info] = [f for f in findings if f.file == train and f.message.startswith("every line")]
    assert info.severity == "info" and note in info.message
    assert info.evidence == {"checked": checked, "lines": total}
    share = next(f for f in findings if "training examples are tool calls" in f.message)
    assert share.message.endswith(f"(checked on {note})")
    assert share.evidence["sample"] == {"checked": checked, "lines": total}
    assert f"of the {checked} training examples" in share.message
    dupes = next(f for f in findings if f.pattern == checks.DUPLICATE_EXAMPLES)
    assert note in dupes.message
    # valid.jsonl is small: read whole, no note.
    assert not any("valid.jsonl" in f.message and "sample" in f.message for f in findings)


@pytest.mark.parametrize("field", ["dataset", "base_model", "eval.suite"])
def test_a_nul_byte_in_a_path_is_a_problem_of_its_field(
    field: str, tiny_model: Path, tmp_path: Path
) -> None:
    overrides: dict[str, object] = {
        "dataset": {"dataset": f"{DATA}\0x"},
        "base_model": {"base_model": f"{tiny_model}\0x"},
        "eval.suite": {"eval": {"suite": f"{SUITE}\0x"}},
    }[field]
    spec = write_spec(tmp_path / "spec.yaml", tiny_model, **overrides)
    done = farm_check(spec)
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"{spec}:") and f": {field}: contains a NUL byte (\\0)" in line, line
    assert "a path cannot hold one" in line and "Traceback" not in done.stderr


def environment_value(name: str) -> str | None:
    return os.environ.get(name)


def test_a_bounded_check_runs_with_the_callers_environment_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checks fork from a server started at the first check; each must still see
    the settings and folder of the call that asked for it, not the server's."""
    from jobs.checks.bounded import call_with_time_limit

    monkeypatch.delenv("FARM_PROBE_SETTING", raising=False)
    assert call_with_time_limit(environment_value, ("FARM_PROBE_SETTING",), 60).value is None
    monkeypatch.setenv("FARM_PROBE_SETTING", "changed since the first check")
    monkeypatch.chdir(tmp_path)
    seen = call_with_time_limit(environment_value, ("FARM_PROBE_SETTING",), 60)
    assert seen.value == "changed since the first check", seen
    assert call_with_time_limit(os.getcwd, (), 60).value == str(tmp_path)
