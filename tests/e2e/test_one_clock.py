"""One clock for the farm: a Mac whose clock is off is neither lost nor a judge.

The worker runs under libfaketime ten minutes behind, and a reconciler ten
minutes ahead stands for the farm's other Macs. Heartbeats and the lost cutoff
both read the PostgreSQL server's clock (`jobs.db.server_now`), so the run
trains to the end in one attempt. With each process's own clock, the
reconciler would see the worker's heartbeats twenty minutes old and take its
run away while it works.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlmodel import select

from jobs.db import WorkerRow, session_scope
from tests.support import PROJECT_ROOT
from tests.support.farm import attempts_of, stages_of, submit
from tests.support.processes import Workers, wait_until
from tests.support.spec_files import write_spec

TRAIN = {"iters": 30, "save_every": 10, "steps_per_report": 1, "steps_per_eval": 1000,
         "val_batches": 1}  # fmt: skip
ONLY_ADAPTER = {"quantize": [], "fuse": None, "eval": {"variants": ["adapter"]}}


def clock_off_by(seconds: int) -> dict[str, str]:
    """The environment that shifts a process tree's wall clock (libfaketime,
    Debian's `faketime` package); monotonic clocks keep running true."""
    found = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    assert found, "libfaketime is missing: apt-get install faketime (.ci/run does)"
    return {
        "LD_PRELOAD": found[0],
        "FAKETIME": f"{seconds:+d}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_RESET": "1",
    }


def test_a_worker_ten_minutes_behind_trains_to_the_end_without_being_lost(
    postgres_farm_home: Path,
    redis_url: str,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("FARM_LOST_AFTER_S", "6")
    monkeypatch.setenv("FARM_RECONCILE_EVERY_S", "2")
    experiment_id = submit(write_spec(tmp_path / "s.yaml", tiny_model, train=TRAIN, **ONLY_ADAPTER))
    pool = Workers(postgres_farm_home)
    judge_log = open(postgres_farm_home / "reconciler.log", "wb")
    judge = subprocess.Popen(
        [sys.executable, "-m", "jobs.reconcile", "--every", "1", "--parent", str(os.getpid())],
        env={**os.environ, **clock_off_by(+600)},
        stdout=judge_log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
    )  # fmt: skip
    try:
        pool.start("mac-behind", env=clock_off_by(-600))
        wait_until(
            lambda: all(s.status in ("done", "failed") for s in stages_of(experiment_id)),
            timeout=300, what="the run to end",
        )  # fmt: skip
        # The ahead reconciler had many passes while the worker trained.
        time.sleep(3)
    finally:
        judge.kill()
        judge.wait()
        pool.stop_all()

    stages = stages_of(experiment_id)
    assert [s.status for s in stages] == ["done"] * len(stages), [(s.kind, s.error) for s in stages]
    for stage in stages:
        outcomes = [a.outcome for a in attempts_of(stage.id or 0)]
        assert outcomes == ["done"], (stage.kind, outcomes)
    with session_scope() as session:
        worker = session.exec(select(WorkerRow).where(WorkerRow.name == "mac-behind")).one()
        assert worker.status != "lost"
    reconciler_said = (postgres_farm_home / "reconciler.log").read_text()
    assert "lost" not in reconciler_said, reconciler_said

    # The worker really ran ten minutes behind: its checkpoints carry its own clock.
    markers = list(postgres_farm_home.rglob("*_checkpoint.json"))
    assert markers
    saved_at = json.loads(markers[0].read_text())["saved_at"]
    assert time.time() - saved_at > 500
