"""A retried train stage resumes from its newest complete checkpoint.

Real mlx-lm on the tiny model, real SQLite, the stage run as `python -m
worker.child STAGE ATTEMPT` like a worker runs it. The interrupted attempt
dies by SIGKILL at a fixed iteration (sent by the child to itself from its
progress callback), so the point of death is deterministic.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import psutil
import pytest
from sqlmodel import select

from jobs.db import Artifact, Metric, Stage, session_scope
from tests.support import PROJECT_ROOT
from tests.support.farm import planned_train_stage, small_dataset
from tests.support.processes import Workers, wait_until
from tests.support.spec_files import write_spec
from worker.checkpoint import (
    adapters_file,
    marker_file,
    newest_complete_checkpoint,
    optimizer_file,
    remove_stray_temporaries,
    save_checkpoint,
    saved_checkpoints,
    write_atomically,
)

ITERS, SAVE_EVERY, KILL_AT = 12, 4, 10
TRAIN = {
    "iters": ITERS,
    "save_every": SAVE_EVERY,
    "steps_per_report": 1,  # a Metric row per iteration: the curve is compared point by point
    "steps_per_eval": 3,
    "val_batches": 2,
    "batch_size": 2,
    # The learning rate moves every step, so a resumed run on the wrong step shows.
    "lr_schedule": {"name": "cosine_decay", "arguments": [1e-3, ITERS], "warmup": 2},
    # Dropout draws from mx.random: equal losses need its state restored too.
    "lora": {"rank": 4, "scale": 10.0, "dropout": 0.1},
}

# The child, SIGKILLed by itself once iteration KILL_AT is in the database:
# two iterations past the checkpoint at 8, as a worker dying mid-run would be.
KILLED_CHILD = """
import os, signal, sys
from worker.stages import train

report = train.ProgressToDatabase.on_train_loss_report

def report_then_die(self, info):
    report(self, info)
    if self.start + int(info["iteration"]) >= int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)

train.ProgressToDatabase.on_train_loss_report = report_then_die
from worker.child import main
sys.exit(main(sys.argv))
"""


# --------------------------------------------------------------------------- files


def small_checkpoint(folder: Path, iteration: int, resumable: bool = True) -> None:
    model = nn.Linear(4, 2)
    optimizer = optim.Adam(learning_rate=1e-3)
    optimizer.init(model.trainable_parameters())
    save_checkpoint(folder, iteration, 100, model, optimizer if resumable else None)


def test_a_checkpoint_is_complete_only_with_its_marker(tmp_path: Path) -> None:
    small_checkpoint(tmp_path, 4)
    small_checkpoint(tmp_path, 8)
    assert newest_complete_checkpoint(tmp_path, 100) == 8
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    marker = json.loads(marker_file(tmp_path, 8).read_text())
    assert (marker["iteration"], marker["iters"], len(marker["random"]["mx_key"])) == (8, 100, 2)
    # Only the newest optimizer state is kept; every checkpoint's weights stay.
    assert not optimizer_file(tmp_path, 4).exists() and adapters_file(tmp_path, 4).is_file()
    assert saved_checkpoints(tmp_path, 100) == [4, 8]

    # A stage killed while saving 12: the weights are in place, the optimizer
    # state half written under its temporary name, no marker.
    weights = {"weight": mx.zeros((2, 4))}
    write_atomically(adapters_file(tmp_path, 12), lambda f: mx.save_safetensors(f, weights))
    stray = tmp_path / f".{optimizer_file(tmp_path, 12).name}.tmp-99"
    stray.write_bytes(b"half")
    assert newest_complete_checkpoint(tmp_path, 100) == 8
    assert saved_checkpoints(tmp_path, 100) == [4, 8]  # nor is it an evaluable checkpoint
    assert remove_stray_temporaries(tmp_path) == [stray] and not stray.exists()

    # Beyond the planned iterations: not this run's.
    for path in (adapters_file, optimizer_file, marker_file):
        shutil.copy(path(tmp_path, 8), path(tmp_path, 200))
    assert newest_complete_checkpoint(tmp_path, 100) == 8
    assert newest_complete_checkpoint(tmp_path) == 200
    assert newest_complete_checkpoint(tmp_path / "missing", 100) is None


def test_a_checkpoint_amid_gradient_accumulation_is_evaluable_not_resumable(
    tmp_path: Path,
) -> None:
    small_checkpoint(tmp_path, 8)
    small_checkpoint(tmp_path, 12, resumable=False)
    assert saved_checkpoints(tmp_path, 100) == [8, 12]
    assert newest_complete_checkpoint(tmp_path, 100) == 8
    assert optimizer_file(tmp_path, 8).is_file()  # still the resume point: kept


# --------------------------------------------------------------------------- resume


def train_stage(tmp_path: Path, tiny_model: Path, name: str) -> tuple[int, int]:
    """A planned run's train stage, claimed by attempt 1: (stage id, run id). Its
    12 examples (6 batches) make 12 iterations cross an epoch boundary, with
    validations in between drawing from numpy too."""
    data = small_dataset(tmp_path / f"data-{name}")
    text = write_spec(
        tmp_path / f"{name}.yaml", tiny_model, name=name, dataset=str(data), train=TRAIN
    )
    return planned_train_stage(text)


def claim(stage_id: int, attempt: int) -> None:
    with session_scope() as session:
        stage = session.get(Stage, stage_id)
        assert stage is not None
        stage.status, stage.attempt = "running", attempt
        session.add(stage)


def run_child(stage_id: int, attempt: int, log: Path, kill_at: int | None = None) -> int:
    argv = [sys.executable, "-m", "worker.child", str(stage_id), str(attempt)]
    env = dict(os.environ)
    if kill_at is not None:
        argv = [sys.executable, "-c", KILLED_CHILD, str(stage_id), str(attempt)]
        env["KILL_AT"] = str(kill_at)
    with open(log, "ab") as out:
        done = subprocess.run(
            argv, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=300
        )
    return done.returncode


def curve(stage_id: int) -> tuple[dict[int, Metric], dict[int, Metric]]:
    """(train rows, val rows) by iteration; a duplicate iteration fails."""
    with session_scope() as session:
        rows = session.exec(select(Metric).where(Metric.stage_id == stage_id)).all()
    train = [r for r in rows if r.train_loss is not None]
    val = [r for r in rows if r.val_loss is not None]
    assert len({r.iteration for r in train}) == len(train), "duplicate train iterations"
    assert len({r.iteration for r in val}) == len(val), "duplicate val iterations"
    return {r.iteration: r for r in train}, {r.iteration: r for r in val}


def test_a_killed_train_stage_resumes_where_its_checkpoint_left_off(
    farm_home: Path, tiny_model: Path, tmp_path: Path
) -> None:
    # The reference: one uninterrupted attempt.
    whole, whole_run = train_stage(tmp_path, tiny_model, "whole")
    assert run_child(whole, 1, tmp_path / "whole.log") == 0
    reference_train, reference_val = curve(whole)
    assert sorted(reference_train) == list(range(1, ITERS + 1))

    # The same run, killed two iterations after its checkpoint at 8, then retried.
    stage, run = train_stage(tmp_path, tiny_model, "killed")
    adapter_dir = farm_home / "artifacts" / f"run-{run}" / "adapter"
    log = tmp_path / "killed.log"
    assert run_child(stage, 1, log, kill_at=KILL_AT) == -signal.SIGKILL
    killed_train, _ = curve(stage)
    assert max(killed_train) == KILL_AT  # iterations 9 and 10 were trained, then lost
    assert newest_complete_checkpoint(adapter_dir, ITERS) == 8

    claim(stage, 2)
    assert run_child(stage, 2, log) == 0, log.read_text()
    text = log.read_text()
    assert "resumed from iteration 8" in text
    with session_scope() as session:
        row = session.get(Stage, stage)
        assert row is not None and row.resumed_from == 8 and row.progress == ITERS

    train, val = curve(stage)
    # One curve 1..12: attempt 1 up to its checkpoint, attempt 2 after it; no
    # iteration at or before the checkpoint trained twice.
    assert sorted(train) == list(range(1, ITERS + 1))
    assert {i for i, r in train.items() if r.attempt == 2} == set(range(9, ITERS + 1))
    assert sorted(val) == sorted(reference_val)  # validations at the same iterations
    for i in range(1, ITERS + 1):
        assert train[i].learning_rate == pytest.approx(reference_train[i].learning_rate, rel=1e-6)
        assert train[i].train_loss == pytest.approx(reference_train[i].train_loss, rel=1e-4)
    for i in val:
        assert val[i].val_loss == pytest.approx(reference_val[i].val_loss, rel=1e-4)
    assert train[ITERS].trained_tokens == reference_train[ITERS].trained_tokens

    # Same data order, dropout masks and optimizer moments: the same adapter.
    reference_dir = farm_home / "artifacts" / f"run-{whole_run}" / "adapter"
    final = mx.load(str(adapter_dir / "adapters.safetensors"))
    expected = mx.load(str(reference_dir / "adapters.safetensors"))
    assert final.keys() == expected.keys()
    for key in final:
        assert np.allclose(np.array(final[key]), np.array(expected[key]), rtol=1e-4, atol=1e-6), key

    # Each checkpoint is one Artifact of the run, recorded by the attempt that saved it.
    with session_scope() as session:
        artifacts = session.exec(
            select(Artifact).where(Artifact.run_id == run, Artifact.kind == "checkpoint")
        ).all()
    assert sorted((a.iteration, a.attempt) for a in artifacts) == [(4, 1), (8, 1), (12, 2)]
    assert newest_complete_checkpoint(adapter_dir, ITERS) == ITERS
    assert [p.name for p in adapter_dir.glob("*_optimizer.safetensors")] == [
        f"{ITERS:07d}_optimizer.safetensors"
    ]
    assert not [p for p in adapter_dir.iterdir() if ".tmp-" in p.name]


def test_a_retry_after_the_last_checkpoint_trains_nothing_again(
    farm_home: Path, tiny_model: Path, tmp_path: Path
) -> None:
    stage, run = train_stage(tmp_path, tiny_model, "last")
    log = tmp_path / "last.log"
    # Killed on its last iteration's report, before the checkpoint of 12.
    assert run_child(stage, 1, log, kill_at=ITERS) == -signal.SIGKILL
    adapter_dir = farm_home / "artifacts" / f"run-{run}" / "adapter"
    assert newest_complete_checkpoint(adapter_dir, ITERS) == 8

    # Attempt 2 resumes at 8 and finishes; attempt 3 (say its worker was lost
    # while recording the stage) finds the final checkpoint and trains nothing.
    claim(stage, 2)
    assert run_child(stage, 2, log) == 0, log.read_text()
    claim(stage, 3)
    assert run_child(stage, 3, log) == 0, log.read_text()
    assert f"resumed from iteration {ITERS}" in log.read_text()
    train, _ = curve(stage)
    assert sorted(train) == list(range(1, ITERS + 1))
    assert not [i for i, r in train.items() if r.attempt == 3]
    assert (adapter_dir / "adapters.safetensors").is_file()


# --------------------------------------------------------------------------- on a worker


def is_our_child(process: psutil.Process, farm_home: Path, stage_id: int) -> bool:
    """The stage's child process of this test's farm (others may run alongside)."""
    cmdline = process.info["cmdline"] or []
    # `python -m worker.child STAGE ATTEMPT [--report-fd FD]`
    if "worker.child" not in cmdline or cmdline[cmdline.index("worker.child") + 1 :][:1] != [
        str(stage_id)
    ]:
        return False
    try:
        return process.environ().get("FARM_HOME") == str(farm_home)
    except psutil.Error:
        return False


def test_a_worker_retries_a_sigkilled_train_stage_from_its_checkpoint(
    workers: Workers, tiny_model: Path, tmp_path: Path, farm_home: Path
) -> None:
    from typer.testing import CliRunner

    from tools.cli import app

    train = {"iters": 60, "save_every": 8, "steps_per_report": 1, "steps_per_eval": 20}
    # Nothing after the train stage but one short eval: the test is the retry.
    spec = write_spec(
        tmp_path / "spec.yaml",
        tiny_model,
        train=train,
        fuse=None,
        quantize=[],
        eval={"variants": ["base"]},
    )
    result = CliRunner().invoke(app, ["submit", str(spec)])
    assert result.exit_code == 0, result.output
    with session_scope() as session:
        stage = session.exec(select(Stage).where(Stage.kind == "train")).one()
    stage_id = stage.id or 0
    adapter_dir = farm_home / "artifacts" / f"run-{stage.run_id}" / "adapter"

    workers.start("w1")
    wait_until(marker_file(adapter_dir, 16).exists, timeout=180, what="checkpoint 16")
    child = next(
        p for p in psutil.process_iter(["cmdline"]) if is_our_child(p, farm_home, stage_id)
    )
    child.send_signal(signal.SIGKILL)  # what the out-of-memory killer does

    def finished() -> Stage | None:
        with session_scope() as session:
            row = session.get(Stage, stage_id)
        return row if row is not None and row.status in ("done", "failed") else None

    row = wait_until(finished, timeout=300, what="the retried train stage")
    assert row.status == "done" and row.attempt == 2, row.error
    assert row.resumed_from is not None and 16 <= row.resumed_from < 60
    assert row.resumed_from % 8 == 0
    train_rows, _ = curve(stage_id)
    assert sorted(train_rows) == list(range(1, 61))
    assert {i for i, r in train_rows.items() if r.attempt == 2} == set(
        range(row.resumed_from + 1, 61)
    )
