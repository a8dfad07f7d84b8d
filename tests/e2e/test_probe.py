"""The adherence probe stops a train stage early, in both directions.

Real mlx-lm, real SQLite, the train stage run as a worker runs it (`python -m
worker.child STAGE ATTEMPT`), on models built to answer the same way whatever
the prompt (`tests.support.models.chain_model`): one writes a Code-Mode call
(the format "locks"), one repeats a word forever (it "collapses"). A learning rate
of 1e-7 keeps that behaviour through the probes.

The child records each `mlx_lm` load and each probe generation with its PID,
so the tests see that the probe runs in the train stage's own process, on the
model it loaded once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from sqlmodel import select

from jobs import lifecycle
from jobs.db import Metric, Stage, session_scope
from jobs.suite import EvalSuite, load_suite
from tests.support import PROJECT_ROOT
from tests.support.farm import planned_train_stage, small_dataset
from tests.support.models import SUITE, chain_model
from tests.support.spec_files import write_spec

ITERS, SAVE_EVERY = 12, 3
CALL = '<function=execute_code>\n<parameter=code>typecheck("src")'

# The child, recording every model load and every probe generation with its PID.
WATCHED_CHILD = """
import json, os, sys
import mlx_lm.utils
import worker.probe
import worker.stages.train as train

calls = os.environ["CALLS"]

def note(what):
    with open(calls, "a") as out:
        out.write(json.dumps({"what": what, "pid": os.getpid()}) + "\\n")

def watch(name, function):
    def watched(*args, **kwargs):
        note(name)
        return function(*args, **kwargs)
    return watched

mlx_lm.utils.load = watch("load", mlx_lm.utils.load)
train.load = watch("load", train.load)
worker.probe.generate_suite = watch("probe", worker.probe.generate_suite)
from worker.child import main
sys.exit(main(sys.argv))
"""


@pytest.fixture(scope="module")
def suite() -> EvalSuite:
    return load_suite(SUITE)


def train_stage(tmp_path: Path, model: Path, probe: dict[str, object]) -> tuple[int, int]:
    """A planned run (with checkpoint evals) whose train stage attempt 1 holds."""
    train = {
        "iters": ITERS,
        "save_every": SAVE_EVERY,
        "steps_per_report": 1,
        "steps_per_eval": 100,
        "val_batches": 1,
        "batch_size": 2,
        "learning_rate": 1e-7,
        "lora": {"rank": 4, "scale": 1.0, "dropout": 0.1},
        "adherence_probe": probe,
    }
    text = write_spec(
        tmp_path / "spec.yaml",
        model,
        name="probe",
        dataset=str(small_dataset(tmp_path / "data", valid=4)),
        train=train,
        fuse=None,
        quantize=[],
        eval={"suite": str(SUITE), "variants": ["adapter"], "checkpoints": True},
    )
    return planned_train_stage(text)


def run_child(stage_id: int, attempt: int, log: Path, calls: Path) -> int:
    argv = [sys.executable, "-c", WATCHED_CHILD, str(stage_id), str(attempt)]
    env = {**os.environ, "CALLS": str(calls)}
    with open(log, "ab") as out:
        done = subprocess.run(
            argv, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=300
        )
    return done.returncode


def recorded(calls: Path) -> list[tuple[str, int]]:
    lines = calls.read_text().splitlines() if calls.exists() else []
    return [(c["what"], c["pid"]) for c in map(json.loads, lines)]


def probe_rows(stage_id: int) -> list[Metric]:
    with session_scope() as session:
        rows = session.exec(
            select(Metric).where(Metric.stage_id == stage_id, Metric.probe_adherence.is_not(None))  # type: ignore[union-attr]
        ).all()
    return sorted(rows, key=lambda r: r.iteration)


def trained_iterations(stage_id: int) -> list[int]:
    with session_scope() as session:
        rows = session.exec(
            select(Metric).where(Metric.stage_id == stage_id, Metric.train_loss.is_not(None))  # type: ignore[union-attr]
        ).all()
    return sorted(r.iteration for r in rows)


def finish_and_list(stage_id: int, run_id: int) -> dict[str, Stage]:
    """Record the stage done as the horse would, then every stage of the run by variant."""
    with session_scope() as session:
        lifecycle.finish(session, stage_id, 1)
    with session_scope() as session:
        stages = session.exec(select(Stage).where(Stage.run_id == run_id)).all()
        for s in stages:
            session.expunge(s)
    return {s.variant if s.kind == "eval" else s.kind: s for s in stages}


def test_a_run_whose_format_locks_stops_at_the_second_locked_probe(
    farm_home: Path, tiny_model: Path, tmp_path: Path, suite: EvalSuite
) -> None:
    model = chain_model(tiny_model, tmp_path / "locks", suite, CALL)
    # The first three prompts: typecheck, ruff_check, typecheck -> 1, 0.25, 1.
    probe = {"prompts": 3, "max_tokens": 32, "stop_when_locked": 0.7, "patience": 2}
    stage_id, run_id = train_stage(tmp_path, model, probe)
    log, calls = tmp_path / "train.log", tmp_path / "calls.jsonl"
    assert run_child(stage_id, 1, log, calls) == 0, log.read_text()

    text = log.read_text()
    rows = probe_rows(stage_id)
    assert [(r.iteration, r.probe_adherence) for r in rows] == [(3, 0.75), (6, 0.75)]
    assert rows[0].probe_labels == {"execute_code": 2, "wrong_tool": 1}
    assert trained_iterations(stage_id) == list(range(1, 7))  # nothing after the stop
    reason = "locked: adherence ≥ 0.70 on the probes at 3 and 6"
    assert f"stopping early after iteration 6: {reason}" in text
    assert "probe 3: adherence 0.750 over 3 prompts" in text

    # One process, one load: the probes ran on the model the stage trains.
    seen = recorded(calls)
    assert [w for w, _ in seen] == ["load", "probe", "probe"]
    assert len({pid for _, pid in seen}) == 1

    # The adapter is the checkpoint of 6, and the run goes on from it.
    adapter_dir = farm_home / "artifacts" / f"run-{run_id}" / "adapter"
    final = mx.load(str(adapter_dir / "adapters.safetensors"))
    saved = mx.load(str(adapter_dir / "0000006_adapters.safetensors"))
    assert final.keys() == saved.keys()
    assert all(np.array_equal(np.array(final[k]), np.array(saved[k])) for k in final)
    assert not (adapter_dir / "0000009_checkpoint.json").exists()

    stages = finish_and_list(stage_id, run_id)
    train = stages["train"]
    assert train.status == "done" and train.early_stop == reason
    assert (train.progress, train.total) == (6, ITERS)
    assert train.params["probe_s"] > 0 and "probe_share" in train.params
    for late in ("ckpt-0000009", "ckpt-0000012"):
        assert stages[late].status == "skipped", late
        assert stages[late].error == f"skipped: training stopped early at iteration 6 ({reason})"
    for kept in ("ckpt-0000003", "ckpt-0000006", "adapter"):
        assert stages[kept].status == "queued", kept
    assert stages["best"].status == "waiting"  # chosen among 3 and 6 once they are scored

    # A new attempt (say the worker died before recording the stage) resumes at
    # the stop: it decides the same from the stored probes and trains nothing.
    with session_scope() as session:
        row = session.get(Stage, stage_id)
        assert row is not None
        row.status, row.attempt, row.early_stop = "running", 2, None
        session.add(row)
    assert run_child(stage_id, 2, log, calls) == 0, log.read_text()
    assert "resumed from iteration 6" in log.read_text()
    assert trained_iterations(stage_id) == list(range(1, 7))
    assert [r.iteration for r in probe_rows(stage_id)] == [3, 6]
    with session_scope() as session:
        row = session.get(Stage, stage_id)
        assert row is not None and row.progress == 6


def test_a_run_that_collapses_into_loops_stops_early(
    farm_home: Path, tiny_model: Path, tmp_path: Path, suite: EvalSuite
) -> None:
    model = chain_model(tiny_model, tmp_path / "loops", suite, " result", loop=True)
    probe = {"prompts": 3, "max_tokens": 40, "stop_when_collapsed": True, "patience": 2}
    stage_id, run_id = train_stage(tmp_path, model, probe)
    log, calls = tmp_path / "train.log", tmp_path / "calls.jsonl"
    assert run_child(stage_id, 1, log, calls) == 0, log.read_text()

    rows = probe_rows(stage_id)
    assert [(r.iteration, r.probe_adherence, r.probe_labels) for r in rows] == [
        (3, 0.0, {"degenerate": 3}),
        (6, 0.0, {"degenerate": 3}),
    ]
    assert trained_iterations(stage_id) == list(range(1, 7))
    assert [w for w, _ in recorded(calls)] == ["load", "probe", "probe"]

    stages = finish_and_list(stage_id, run_id)
    reason = "collapsed: every probe response looped or was empty at 3 and 6"
    assert stages["train"].early_stop == reason and stages["train"].status == "done"
    assert stages["ckpt-0000009"].status == "skipped"
    assert stages["ckpt-0000006"].status == "queued"
