"""The input limits (docs/architecture.md, "Limits"): refused once, in the spec
layer, the same way everywhere.

Every case is run through `farm check` and `farm submit` (exit 2, one
`file:line: field: message` line) and through the web form's validation (the
same message on the field). The YAML attacks (alias bomb, deep nesting, an
oversized file) are also timed and their memory measured in a fresh process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis import Redis
from sqlmodel import select
from typer.testing import CliRunner

from jobs import limits
from jobs.db import Experiment, Run, session_scope
from jobs.experiment_spec import ExperimentSpec, load_spec, parse_spec
from jobs.problems import InputError, Problem
from tests.support import PROJECT_ROOT
from tests.support.spec_files import write_spec
from tools.cli import app
from web import form_bounds, forms

runner = CliRunner()

# (overrides of the base spec, field in the CLI line, form field, message)
CASES: dict[str, tuple[dict[str, Any], str, str, str]] = {
    "seeds": ({"seeds": list(range(1001))}, "seeds", "seeds", "1001 seeds, at most 1000 allowed"),
    "seed range": (
        {"seeds": [1, 2**32]},
        "seeds[1]",
        "seeds",
        "must be ≤ 4294967295, got 4294967296",
    ),
    "iters": (
        {"train": {"iters": 10_000_001}},
        "train.iters",
        "train.iters",
        "must be ≤ 10000000, got 10000001",
    ),
    "checkpoints": (
        {"train": {"iters": 1_000_000, "save_every": 10}},
        "train.save_every",
        "train.save_every",
        "100000 saved checkpoints per run, at most 10000 allowed (iters 1000000 // "
        "save_every 10) — set save_every to at least 100",
    ),
    "timeout too long": (
        {"resources": {"timeout_hours": 1e300}},
        "resources.timeout_hours",
        "resources.timeout_hours",
        "must be ≤ 720, got 1e+300",
    ),
    "timeout too short": (
        {"resources": {"timeout_hours": 0.001}},
        "resources.timeout_hours",
        "resources.timeout_hours",
        "must be ≥ 1/60 (a minute), got 0.001",
    ),
    "memory": (
        {"resources": {"min_memory_gb": 4096}},
        "resources.min_memory_gb",
        "resources.min_memory_gb",
        "must be ≤ 1024, got 4096",
    ),
    "name": (
        {"name": "n" * 201},
        "name",
        "name",
        f"201 characters, at most 200 allowed ('{'n' * 56}...)",
    ),
}


def alias_bomb(levels: int = 9) -> str:
    """The classic "billion laughs": each level is nine aliases of the one before."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def nested(levels: int) -> str:
    return "deep: " + "[" * levels + "]" * levels + "\n"


def one_line(output: str, path: Path, field: str, message: str) -> str:
    """The single output line `path:N: field: message` (fails when there is none)."""
    pattern = re.compile(rf"{re.escape(str(path))}:\d+: {re.escape(field)}: {re.escape(message)}")
    hits = [line for line in output.splitlines() if pattern.fullmatch(line)]
    assert len(hits) == 1, f"no line '{path}:N: {field}: {message}' in:\n{output}"
    return hits[0]


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stderr


def form_values(spec_file: Path) -> dict[str, Any]:
    values, notes = forms.spec_dict_to_form(yaml.safe_load(spec_file.read_text()))
    assert notes == []
    return values


@pytest.fixture
def base(tmp_path: Path, tiny_model: Path) -> Path:
    """A valid spec (refused cases change one thing in it)."""
    spec = write_spec(tmp_path / "base.yaml", tiny_model)
    load_spec(spec)
    return spec


@pytest.mark.parametrize("case", list(CASES))
def test_each_limit_is_refused_alike_by_the_cli_and_the_form(
    case: str, base: Path, tiny_model: Path, tmp_path: Path
) -> None:
    overrides, field, form_key, message = CASES[case]
    spec = write_spec(tmp_path / "spec.yaml", tiny_model, **overrides)
    for command in ("check", "submit"):
        code, stderr = cli(command, str(spec))
        assert code == 2, stderr
        one_line(stderr, spec, field, message)
    result = form_bounds.validate_form(form_values(spec), run_preflight=False)
    assert message in result.messages(form_key), result.problems
    assert result.spec is None and not result.ok
    # The base spec is accepted by the form: the refusal is this limit's alone.
    assert form_bounds.validate_form(form_values(base), run_preflight=False).ok


def test_values_at_the_limits_are_accepted(tiny_model: Path, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml",
        tiny_model,
        name="n" * 200,
        seeds=[0, *range(2, 1000), 2**32 - 1],
        train={"iters": 10_000_000, "save_every": 1000},
        resources={"timeout_hours": 1 / 60, "min_memory_gb": 1024},
    )
    loaded = load_spec(spec)
    assert len(loaded.seeds) == 1000 and loaded.train.iters == 10_000_000
    assert form_bounds.validate_form(form_values(spec), run_preflight=False).ok


def test_the_spec_model_itself_refuses_too_many_checkpoints(
    tiny_model: Path, tmp_path: Path
) -> None:
    # plan_run takes spec objects, some built from stored mappings without parse_spec.
    data = yaml.safe_load(write_spec(tmp_path / "spec.yaml", tiny_model).read_text())
    data["train"] |= {"iters": 10_000_000, "save_every": 1}
    data["eval"]["checkpoints"] = True
    with pytest.raises(ValueError, match="10000000 saved checkpoints per run, at most 10000"):
        ExperimentSpec.model_validate(data)


def test_runs_are_counted_over_seeds_and_grid_points() -> None:
    assert limits.runs_problem(1000) is None
    assert limits.runs_problem(10, grid_points=100) is None
    assert limits.runs_problem(10, grid_points=101) == (
        "1010 runs (10 seeds × 101 grid points), at most 1000 per submission"
    )


def test_form_seed_ranges_are_counted_not_built() -> None:
    with pytest.raises(ValueError, match="^99999999999 seeds, at most 1000 allowed$"):
        forms.parse_seeds("1-99999999999")
    with pytest.raises(ValueError, match="a number of 5000 characters"):
        forms.parse_seeds("1" * 5000)
    assert forms.MAX_SEEDS == limits.MAX_SEEDS


# --------------------------------------------------------------- YAML attacks

ATTACKS: dict[str, tuple[str, str, str]] = {
    # name: (spec text appended to a valid spec, field, message)
    "alias bomb": (
        alias_bomb(),
        "l4[1]",
        "more than 20000 YAML values (alias *l3 expands them), at most 20000 allowed in a spec",
    ),
    "1000 levels": (nested(1000), "deep" + "[0]" * 7 + "…", "nested more than 64 levels deep"),
    "recursive alias": ("loop: &loop [*loop]\n", "loop[0]", "alias *loop refers to a value"),
    "huge number": (f"big: {'9' * 5000}\n", "big", "a number of 5000 characters"),
}

MEASURE = """
import json, resource, sys, time, tracemalloc
from pathlib import Path
from jobs.problems import InputError
from jobs.experiment_spec import load_spec

def refuse():
    try:
        load_spec(Path(sys.argv[1]))
    except InputError as exc:
        return [str(p) for p in exc.problems]
    raise SystemExit("accepted")

rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
problems = refuse()
seconds = time.perf_counter() - start
rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
tracemalloc.start()
refuse()
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"seconds": seconds, "rss_growth_mb": rss_growth / 1024,
                  "peak_mb": peak / 2**20, "problems": problems}))
"""


def measure_refusal(spec: Path) -> dict[str, Any]:
    """Time and memory of refusing `spec`, in a fresh process (so an earlier test's
    allocations cannot hide this one's)."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(spec)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_cheap(figures: dict[str, Any]) -> None:
    # Bounded, not fast: an unbounded parser takes minutes and gigabytes on these
    # inputs; the refusal's own speed is `farm bench`'s to measure. 3 s leaves
    # room for a loaded 2-core machine running the suite in parallel.
    assert figures["seconds"] < 3.0, figures
    assert figures["rss_growth_mb"] < 200 and figures["peak_mb"] < 200, figures


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_yaml_attacks_are_refused_quickly_and_alike(
    attack: str, base: Path, tmp_path: Path
) -> None:
    text, field, message = ATTACKS[attack]
    spec = tmp_path / "spec.yaml"
    spec.write_text(base.read_text() + text)
    figures = measure_refusal(spec)
    assert_cheap(figures)
    code, stderr = cli("check", str(spec))
    assert code == 2
    line = next(line for line in stderr.splitlines() if message in line)
    assert line.startswith(f"{spec}:") and f": {field}" in line, stderr
    assert figures["problems"] == [line]
    # The form reads uploads through the same loader: same line, field and words.
    with pytest.raises(InputError) as refused:
        forms.yaml_to_form(spec.read_text())
    (problem,) = refused.value.problems
    assert str(problem) == line.replace(str(spec), "upload", 1)


def test_a_spec_over_1_mb_is_refused_before_parsing(base: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    # Parsed, this would be a 2 MB comment and then a bomb.
    spec.write_text(base.read_text() + "#" + "x" * 2_000_000 + "\n" + alias_bomb())
    size = spec.stat().st_size
    message = f"the spec is {size} bytes, at most 1000000 (1 MB) allowed"
    figures = measure_refusal(spec)
    assert_cheap(figures)
    assert figures["problems"] == [f"{spec}: {message}"]
    code, stderr = cli("submit", str(spec))
    assert (code, stderr.strip()) == (2, f"{spec}: {message}")
    with pytest.raises(InputError) as refused:
        forms.yaml_to_form(spec.read_text())
    assert refused.value.problems == [Problem("upload", message)]
    with pytest.raises(InputError) as refused:
        parse_spec(spec.read_text(), source="text")
    assert refused.value.problems == [Problem("text", message)]
    # Bytes are counted, not characters: 600,000 'é' are 1.2 MB of UTF-8.
    with pytest.raises(InputError) as refused:
        parse_spec("# " + "é" * 600_000, source="text")
    assert "the spec is 1200002 bytes" in str(refused.value)


def test_absurd_checkpoint_evals_are_refused_before_any_list_is_built(
    tiny_model: Path, tmp_path: Path
) -> None:
    # Ten million checkpoint iterations would be a list of hundreds of MB in plan_run.
    spec = write_spec(
        tmp_path / "spec.yaml",
        tiny_model,
        train={"iters": 10_000_000, "save_every": 1},
        eval={"checkpoints": True},
    )
    figures = measure_refusal(spec)
    assert_cheap(figures)
    assert [p.split(": ", 2)[1] for p in figures["problems"]] == ["train.save_every"]


def test_a_form_mapping_field_reads_through_the_bounded_loader(base: Path) -> None:
    values = form_values(base) | {"train.optimizer_config": "{" + alias_bomb().replace("\n", ", ")}
    values["train.optimizer_config"] = values["train.optimizer_config"].rstrip(", ") + "}"
    result = form_bounds.validate_form(values, run_preflight=False)
    (message,) = result.messages("train.optimizer_config")
    assert "more than 20000 YAML values (alias *l3 expands them)" in message


# ------------------------------------------------------------- nothing written


def assert_nothing_written(redis_url: str) -> None:
    with session_scope() as session:
        assert session.exec(select(Experiment)).all() == []
        assert session.exec(select(Run)).all() == []
    assert Redis.from_url(redis_url).dbsize() == 0


def test_a_refused_farm_submit_writes_nothing(
    farm_home: Path, redis_url: str, tiny_model: Path, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tiny_model, seeds=list(range(5000)))
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "submit", str(spec)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    one_line(done.stderr, spec, "seeds", "5000 seeds, at most 1000 allowed")
    assert_nothing_written(redis_url)


def test_a_refused_form_submission_writes_nothing(
    farm_home: Path, redis_url: str, base: Path
) -> None:
    values = form_values(base) | {"seeds": "1-5000", "train.iters": 10**12}
    result = form_bounds.submit_form(values, Redis.from_url(redis_url))
    assert result.experiment_id is None
    assert result.messages("seeds") == ["5000 seeds, at most 1000 allowed"]
    assert result.messages("train.iters") == ["must be ≤ 10000000, got 1000000000000"]
    assert_nothing_written(redis_url)
