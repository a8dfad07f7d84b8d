"""One run on several workers: a gang of ranks on MLX's ring backend, formed,
started and ended together by the farm (`jobs.gang`, `worker.gang`). The
gang across hosts in network namespaces, with its loss curve against one
rank's, is in `test_gang_lan.py`.

Real `farm worker` processes on loopback addresses, real mlx-lm training on
the tiny model, Redis and SQLite; faults are real (`kill -9` by PID).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlmodel import col, select
from typer.testing import CliRunner

from jobs.db import Metric, Stage, WorkerRow, as_utc, session_scope
from tests.support.farm import attempts_of, stage_children, stages_of, submit, train_losses
from tests.support.faults import kill_tree, record_timing
from tests.support.processes import Workers, wait_until
from tests.support.spec_files import write_spec
from tests.support.web import RUN, open_page, texts
from tools.cli import app

runner = CliRunner()

# Two ranks each take half of every batch of 4; a checkpoint every 4 iterations.
GANG_TRAIN = {"iters": 8, "batch_size": 4, "steps_per_report": 1, "steps_per_eval": 100,
              "val_batches": 1, "save_every": 4, "workers": 2}  # fmt: skip
ONLY_ADAPTER = {"quantize": [], "fuse": None, "eval": {"variants": ["adapter"]}}

LOST_AFTER_S = 6


@pytest.fixture
def fast_gangs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARM_LOST_AFTER_S", str(LOST_AFTER_S))
    monkeypatch.setenv("FARM_RECONCILE_EVERY_S", "2")
    monkeypatch.setenv("FARM_GANG_FORM_S", "20")


def stage_of(experiment_id: int, kind: str, variant: str | None = None) -> Stage:
    return next(
        s
        for s in stages_of(experiment_id)
        if s.kind == kind and (variant is None or s.variant == variant)
    )


def recovery(experiment_id: int, train: Stage, fault_at: float) -> tuple[float, float]:
    """Seconds from a fault to rank 0's attempt ending, and to the run finishing."""
    wait_until(lambda: attempts_of(train.id or 0)[0].outcome != "running", timeout=60,
               what="rank 0's attempt to end")  # fmt: skip
    detected = time.monotonic() - fault_at
    wait_until(lambda: all(s.status == "done" for s in stages_of(experiment_id)), timeout=300,
               what="the run to finish")  # fmt: skip
    return detected, time.monotonic() - fault_at


# --- a rank's Mac dies mid-training ---------------------------------------------------------


def test_a_killed_rank_ends_the_gangs_attempt_and_the_gang_resumes_from_rank_0s_checkpoint(
    fast_gangs: None, workers: Workers, tiny_model: Path, tmp_path: Path
) -> None:
    train_spec = {**GANG_TRAIN, "iters": 30, "save_every": 10}
    experiment_id = submit(
        write_spec(tmp_path / "gang.yaml", tiny_model, train=train_spec, **ONLY_ADAPTER)
    )
    pids = {name: workers.start(name).pid for name in ("mac-a", "mac-b", "mac-c")}
    train = stage_of(experiment_id, "train")
    # Mid-way between the checkpoints at 10 and 20: the iterations after 10 are lost.
    wait_until(lambda: max(train_losses(train.id or 0), default=0) >= 15, timeout=240,
               what="iteration 15")  # fmt: skip
    rank = stage_of(experiment_id, "rank")
    assert rank.status == "running" and rank.worker in pids

    fault_at = time.monotonic()
    kill_tree(pids[rank.worker or ""])  # the worker, its horse and its rank's MLX child
    before = train_losses(train.id or 0)
    reached = max(before)
    detected, finished = recovery(experiment_id, train, fault_at)

    first, second = attempts_of(train.id or 0)[:2]
    assert first.outcome in ("died", "released"), first  # its peer's loss ended it
    assert second.outcome == "done" and second.resumed_from == 10
    lost_rank = attempts_of(rank.id or 0)
    assert lost_rank[0].worker == rank.worker and lost_rank[0].outcome in ("lost", "released")
    assert lost_rank[-1].outcome == "done" and lost_rank[-1].worker != rank.worker
    # The gang formed again on the two live workers and trained only after 10.
    with session_scope() as session:
        again = session.exec(
            select(Metric.iteration).where(
                Metric.stage_id == train.id,
                Metric.attempt == second.attempt,
                col(Metric.train_loss).is_not(None),
            )
        ).all()
    assert min(again) == 11 and max(again) == train_spec["iters"]
    # Rank 0 sent its checkpoint's weights and optimizer state to the new rank 1:
    # the iterations trained twice give the losses they gave the first time.
    after = train_losses(train.id or 0)
    redone = [i for i in before if i > 10]
    assert redone and all(abs(after[i] - before[i]) <= 1e-5 * before[i] for i in redone), {
        i: (before[i], after[i]) for i in redone
    }
    lost = reached - 10
    assert lost <= train_spec["save_every"]
    record_timing("gang rank killed (kill -9)", detect_s=round(detected, 1),
                  finish_s=round(finished, 1), resumed_from=10,
                  iterations_lost=lost)  # fmt: skip


# --- a gang that cannot form ------------------------------------------------------------------


def test_a_gang_too_big_for_the_farm_waits_with_its_reason_holds_nobody_and_can_be_cancelled(
    fast_gangs: None, workers: Workers, tiny_model: Path, tmp_path: Path
) -> None:
    too_big = submit(
        write_spec(
            tmp_path / "big.yaml",
            tiny_model,
            train={**GANG_TRAIN, "batch_size": 6, "workers": 3},
            **ONLY_ADAPTER,
        )
    )
    workers.start("mac-a")
    workers.start("mac-b")
    reason = "waiting for 3 workers with ≥ 0 GB to train together: 2 are live"
    wait_until(lambda: stage_of(too_big, "train").error == reason, timeout=60, what=reason)
    # It holds no worker: a run submitted after it trains and finishes meanwhile.
    after = submit(write_spec(tmp_path / "small.yaml", tiny_model, name="small", **ONLY_ADAPTER))
    wait_until(lambda: all(s.status == "done" for s in stages_of(after)), timeout=120,
               what="the single-worker run")  # fmt: skip
    assert {s.status for s in stages_of(too_big)} == {"queued", "waiting"}
    assert all(attempts_of(s.id or 0) == [] for s in stages_of(too_big))

    page = open_page(RUN, run=str(stage_of(too_big, "train").run_id))
    assert "Trained by a gang of 3 workers" in texts(page)
    assert reason in texts(page)
    shown = runner.invoke(app, ["status", str(too_big)])
    assert shown.exit_code == 0, shown.output
    assert f"gang of 3 workers: {reason}" in " ".join(shown.output.split())
    cancelled = runner.invoke(app, ["cancel", str(too_big)])
    assert cancelled.exit_code == 0, cancelled.output
    assert {s.status for s in stages_of(too_big)} == {"cancelled"}


# --- gangs and single-worker runs share the farm ------------------------------------------------


class Schedule:
    """Samples the farm while it works: when a gang has claimed some ranks but
    not all (it is forming) while a live worker sits idle, that worker could
    have completed it."""

    def __init__(self) -> None:
        self.idle_while_forming: list[float] = []  # streaks, seconds
        self._streak_from: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Schedule:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with session_scope() as session:
                gangs: dict[int, list[str]] = {}
                for stage in session.exec(
                    select(Stage).where(col(Stage.kind).in_(["train", "rank"]))
                ):
                    if stage.params.get("world", 1) > 1:
                        gangs.setdefault(stage.run_id, []).append(stage.status)
                idle = session.exec(select(WorkerRow).where(WorkerRow.status == "idle")).all()
            forming = any("running" in s and "queued" in s for s in gangs.values())
            now = time.monotonic()
            if forming and idle:
                self._streak_from = self._streak_from or now
            elif self._streak_from is not None:
                self.idle_while_forming.append(now - self._streak_from)
                self._streak_from = None


def test_two_gangs_and_a_stream_of_single_runs_on_three_workers_all_finish_without_idling(
    fast_gangs: None, workers: Workers, tiny_model: Path, tmp_path: Path
) -> None:
    gang_train = {**GANG_TRAIN, "iters": 12, "save_every": 6}
    ids = [
        submit(write_spec(tmp_path / "s1.yaml", tiny_model, name="single-a", seeds=[1, 2],
                          **ONLY_ADAPTER)),
        submit(write_spec(tmp_path / "g1.yaml", tiny_model, name="gang-a", train=gang_train,
                          **ONLY_ADAPTER)),
        submit(write_spec(tmp_path / "s2.yaml", tiny_model, name="single-b", seeds=[3, 4],
                          **ONLY_ADAPTER)),
        submit(write_spec(tmp_path / "g2.yaml", tiny_model, name="gang-b", train=gang_train,
                          **ONLY_ADAPTER)),
    ]  # fmt: skip
    started = time.monotonic()
    with Schedule() as schedule:
        for name in ("mac-a", "mac-b", "mac-c"):
            workers.start(name)
        wait_until(lambda: all(s.status == "done" for i in ids for s in stages_of(i)),
                   timeout=400, what="every run")  # fmt: skip
    took = time.monotonic() - started

    formed_in = []
    for experiment_id in (ids[1], ids[3]):
        ranks = [stage_of(experiment_id, "train"), stage_of(experiment_id, "rank")]
        seats = [attempts_of(s.id or 0)[-1] for s in ranks]
        assert len({seat.worker for seat in seats}) == 2 and all(s.outcome == "done" for s in seats)
        starts = sorted(as_utc(seat.started_at).timestamp() for seat in seats)  # type: ignore[union-attr]
        formed_in.append(round(starts[-1] - starts[0], 1))
    longest_idle = max(schedule.idle_while_forming, default=0.0)
    # An idle worker takes a forming gang's rank at once (gang queues come
    # before the tier queues); the moment between two jobs is all it idles.
    assert longest_idle < 3.0, schedule.idle_while_forming
    record_timing("two gangs and four single runs on three workers", finish_s=round(took, 1),
                  gang_formed_in_s=formed_in,
                  longest_idle_while_a_gang_formed_s=round(longest_idle, 1))  # fmt: skip


# --- a wedged collective ----------------------------------------------------------------------


def test_a_frozen_rank_wedges_the_collective_and_the_stall_ends_the_gangs_attempt(
    fast_gangs: None,
    workers: Workers,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGSTOP of rank 1's MLX process: every horse still beats, but rank 0 waits
    in the ring's all_sum for ever. No progress for FARM_GANG_STALL_S ends the
    gang's attempt; the gang forms again and resumes from the checkpoint."""
    monkeypatch.setenv("FARM_GANG_STALL_S", "5")
    train_spec = {**GANG_TRAIN, "iters": 30, "save_every": 10}
    experiment_id = submit(
        write_spec(tmp_path / "gang.yaml", tiny_model, train=train_spec, **ONLY_ADAPTER)
    )
    workers.start("mac-a")
    workers.start("mac-b")
    train = stage_of(experiment_id, "train")
    wait_until(lambda: max(train_losses(train.id or 0), default=0) >= 15, timeout=240,
               what="iteration 15")  # fmt: skip
    rank = stage_of(experiment_id, "rank")
    (frozen,) = stage_children(rank.id or 0)
    frozen.suspend()  # SIGSTOP: alive, beating through its horse, never answering the ring
    detected, finished = recovery(experiment_id, train, time.monotonic())

    ended = [attempts_of(train.id or 0)[0], attempts_of(rank.id or 0)[0]]
    reasons = " ".join(a.reason or "" for a in ended)
    assert "a collective is wedged" in reasons, ended
    assert not frozen.is_running()  # its horse killed the frozen process
    assert attempts_of(train.id or 0)[-1].resumed_from == 10
    record_timing("gang rank frozen (SIGSTOP)", detect_s=round(detected, 1),
                  finish_s=round(finished, 1), resumed_from=10)  # fmt: skip
