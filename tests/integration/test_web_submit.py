"""The submit page in Streamlit's AppTest, against real SQLite and Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from sqlmodel import select

from jobs.dag import plan_run
from jobs.db import Experiment, Run, Stage, session_scope
from jobs.experiment_spec import config_fingerprint, parse_spec
from jobs.queue import stage_job_id
from tests.support.web import (
    PROJECT_ROOT,
    flatten,
    install_model,
    messages_after,
    open_page,
    texts,
)
from web import form_bounds, forms

SUBMIT = "views/submit.py"


@pytest.fixture
def app_env(farm_home: Path, redis_url: str, tiny_model: Path) -> Path:
    """FARM_HOME with the tiny model where the form's model picker finds it."""
    return install_model(farm_home, tiny_model)


def widget(at: Any, field: str) -> Any:
    return next(e for e in flatten(at.main) if getattr(e, "key", None) == "f:" + field)


def fill(at: Any, **values: Any) -> None:
    for field, value in values.items():
        widget(at, field.replace("__", ".")).set_value(value)


def press(at: Any, label: str) -> None:
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, [e.value for e in at.exception]


def nothing_written(redis_url: str) -> bool:
    with session_scope() as session:
        experiments = session.exec(select(Experiment)).all()
    return not experiments and not Redis.from_url(redis_url).keys("rq:*")


def test_validate_shows_each_problem_under_its_field(app_env: Path, redis_url: str) -> None:
    at = open_page(SUBMIT)
    assert widget(at, "base_model").value == str(app_env)  # found under FARM_HOME/models
    fill(at, name="bad name", seeds="1-3, x", train__iters=0, train__lora__dropout=1.5)
    press(at, "Validate")

    assert "may only contain letters" in " ".join(messages_after(at, "f:name"))
    assert "'x' is not a seed" in " ".join(messages_after(at, "f:seeds"))
    assert "must be ≥ 1, got 0" in " ".join(messages_after(at, "f:train.iters"))
    assert "must be < 1" in " ".join(messages_after(at, "f:train.lora.dropout"))
    # The default of 16 layers is more than the tiny model has: caught from its config.json.
    layers = json.loads((app_env / "config.json").read_text())["num_hidden_layers"]
    assert layers < 16
    assert f"more than the model's {layers} layers" in " ".join(
        messages_after(at, "f:train.num_layers")
    )
    assert messages_after(at, "f:train.batch_size") == []
    assert messages_after(at, "f:dataset") == []
    assert "5 problem(s)" in texts(at)

    press(at, "Submit")  # the same problems refuse the submission
    assert "Nothing was queued" in texts(at)
    assert nothing_written(redis_url)


def test_file_problems_land_on_the_path_field(
    app_env: Path, redis_url: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.jsonl").write_text('{"text": "ok"}\nnot json\n')
    (broken / "valid.jsonl").write_text('{"text": "ok"}\n')
    values = forms.default_form(str(app_env))
    values.update({"dataset": str(broken), "train.num_layers": -1, "train.batch_size": 1})
    result = form_bounds.validate_form(values)
    assert any("invalid JSON" in m and ":2" in m for m in result.messages("dataset"))
    assert not result.ok


def test_valid_submission_creates_rows_and_rq_jobs(app_env: Path, redis_url: str) -> None:
    at = open_page(SUBMIT)
    fill(at, name="web-test", seeds="1-2, 5", train__iters=8, train__num_layers=-1,
         train__batch_size=2, quantize=["q8"])  # fmt: skip
    press(at, "Validate")
    assert "Valid: 3 runs" in texts(at)
    assert nothing_written(redis_url)  # validating queues nothing

    press(at, "Submit")
    assert "Submitted experiment" in texts(at)
    with session_scope() as session:
        experiment = session.exec(select(Experiment)).one()
        runs = session.exec(select(Run).order_by(Run.seed)).all()
        stages = session.exec(select(Stage)).all()
    assert experiment.name == "web-test"
    assert [r.seed for r in runs] == [1, 2, 5]
    spec = parse_spec(experiment.spec_yaml, base_dir=PROJECT_ROOT)
    assert len(stages) == 3 * len(plan_run(spec))
    assert spec.quantize_variants == ["q8"] and spec.train.iters == 8
    trains = sorted((s for s in stages if s.kind == "train"), key=lambda s: s.id or 0)
    assert {s.status for s in trains} == {"queued"}
    queue = Queue("farm:mem:0", connection=Redis.from_url(redis_url), serializer=JSONSerializer)
    assert queue.job_ids == [stage_job_id(s.id or 0) for s in trains]
    assert queue.jobs[0].func_name == "worker.stage_job.run_stage"

    # The YAML the page shows is the spec that was queued.
    shown = next(c.value for c in at.code if "name: web-test" in c.value)
    assert config_fingerprint(parse_spec(shown, base_dir=PROJECT_ROOT)) == experiment.fingerprint


def test_clone_prefills_the_form_from_a_run(app_env: Path, redis_url: str) -> None:
    values = forms.default_form(str(app_env))
    values.update({
        "name": "sweep-r16", "seeds": "4-6", "train.num_layers": -1, "train.batch_size": 2,
        "train.lora.rank": 16, "train.optimizer": "adamw",
        "train.optimizer_config": "{weight_decay: 0.01}", "quantize": ["q6", "q4g32"],
    })  # fmt: skip
    submitted = form_bounds.submit_form(values, Redis.from_url(redis_url))
    assert submitted.experiment_id is not None, submitted.problems
    with session_scope() as session:
        run = session.exec(select(Run).where(Run.seed == 5)).one()
        original = session.exec(select(Experiment)).one()

    at = open_page(SUBMIT, clone=str(run.id))
    assert f"Prefilled from run {run.id} (seed 5)" in texts(at)
    assert widget(at, "name").value == "sweep-r16"
    assert widget(at, "seeds").value == "4-6"
    assert widget(at, "train.lora.rank").value == 16
    assert widget(at, "train.optimizer").value == "adamw"
    assert widget(at, "train.optimizer_config").value == "{weight_decay: 0.01}"
    assert widget(at, "quantize").value == ["q6", "q4g32"]
    # Unchanged, the clone is the same configuration.
    shown = next(c.value for c in at.code if "name: sweep-r16" in c.value)
    assert config_fingerprint(parse_spec(shown, base_dir=PROJECT_ROOT)) == original.fingerprint

    fill(at, train__lora__rank=32)
    press(at, "Submit")
    with session_scope() as session:
        fingerprints = {e.fingerprint for e in session.exec(select(Experiment))}
    assert len(fingerprints) == 2  # the changed knob is a new configuration


def test_upload_spec_yaml_fills_the_form(app_env: Path, redis_url: str) -> None:
    spec = {
        "name": "uploaded", "base_model": str(app_env), "dataset": "data/datasets/code_mode",
        "seeds": [7, 8], "train": {"iters": 30, "num_layers": 2, "lora": {"rank": 4}},
        "fuse": None, "eval": {"suite": "data/evals/code_mode.yaml", "variants": ["adapter"]},
        "mystery": 1,
    }  # fmt: skip
    at = open_page(SUBMIT)
    at.file_uploader(key="upload").upload("spec.yaml", yaml.safe_dump(spec).encode())
    at.run()
    assert widget(at, "name").value == "uploaded"
    assert widget(at, "seeds").value == "7, 8"
    assert widget(at, "train.iters").value == 30
    assert widget(at, "fuse.enabled").value is False
    assert widget(at, "eval.variants").value == ["adapter"]
    assert "'mystery' is not a field of the form" in texts(at)
    press(at, "Validate")
    assert "Valid: 2 runs" in texts(at)


def test_uploading_something_that_is_not_a_spec_says_so(app_env: Path, redis_url: str) -> None:
    at = open_page(SUBMIT)
    at.file_uploader(key="upload").upload("spec.yaml", b"- just\n- a list\n")
    at.run()
    assert "a spec must be a YAML mapping" in texts(at)
    assert widget(at, "name").value == "my-experiment"


def test_the_form_submits_the_adherence_probe(app_env: Path, redis_url: str) -> None:
    at = open_page(SUBMIT)
    assert "Adherence probe" in texts(at)
    fill(at, name="probed", seeds="1", train__iters=16, train__save_every=4, train__num_layers=-1,
         train__adherence_probe__enabled=True, train__adherence_probe__prompts="3",
         train__adherence_probe__stop_when_locked=0.9)  # fmt: skip
    press(at, "Submit")
    assert "Submitted experiment" in texts(at)
    with session_scope() as session:
        experiment = session.exec(select(Experiment)).one()
    probe = parse_spec(experiment.spec_yaml, base_dir=PROJECT_ROOT).train.adherence_probe
    assert probe is not None and (probe.prompts, probe.stop_when_locked) == (3, 0.9)


def test_a_batch_that_does_not_divide_among_the_workers_is_refused_alike_by_form_and_cli(
    app_env: Path, redis_url: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from tests.support.spec_files import write_spec
    from tools.cli import app

    why = (
        "batch_size 4 does not divide among 3 workers: each takes batch_size / workers "
        "examples of every batch — use a batch_size that is a multiple of 3 (e.g. 3) or "
        "fewer workers"
    )
    values = forms.default_form(str(app_env))
    values.update({"train.num_layers": -1, "train.batch_size": 4, "train.workers": 3})
    assert forms.FIELDS_BY_KEY["train.workers"].section == "Resources"
    assert form_bounds.validate_form(values, run_preflight=False).messages("train.workers") == [why]

    spec = write_spec(tmp_path / "gang.yaml", app_env, train={"batch_size": 4, "workers": 3})
    refused = CliRunner().invoke(app, ["submit", str(spec)])
    assert refused.exit_code == 2
    line = next(n for n, text in enumerate(spec.read_text().splitlines(), 1) if "workers" in text)
    assert f"{spec}:{line}: train.workers: {why}" in " ".join(refused.output.split())
    assert nothing_written(redis_url)
