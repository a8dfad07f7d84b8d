"""A worker's part in a gang (`worker.gang`) against a real SQLite database:
seating, the dataset check across ranks, and letting go when the gang does
not form."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from jobs import gang, lifecycle
from jobs.db import Run, Stage, StageAttempt, WorkerRow, server_now, session_scope
from jobs.experiment_spec import parse_spec
from jobs.states import AttemptOutcome, StageStatus
from jobs.submit import create_rows
from tests.support.spec_files import write_spec
from worker import gang as gang_worker
from worker.gang import GangRefused


def gang_run(tmp_path: Path, tiny_model: Path) -> tuple[int, int]:
    """A submitted 2-rank run with two live workers: (train stage id, rank stage id)."""
    path = write_spec(tmp_path / "gang.yaml", tiny_model, train={"batch_size": 4, "workers": 2})
    with session_scope() as session:
        experiment = create_rows(session, parse_spec(path.read_text()))
        run = session.exec(select(Run).where(Run.experiment_id == experiment.id)).one()
        lifecycle.queue_train_stages(session, [run])
        for name in ("mac-a", "mac-b"):
            session.add(WorkerRow(name=name, host=name, memory_gb=16,
                                  last_heartbeat=server_now(session)))  # fmt: skip
        stages = session.exec(select(Stage).where(Stage.run_id == run.id)).all()
        train = next(s for s in stages if s.kind == "train")
        rank = next(s for s in stages if s.kind == "rank")
        return train.id or 0, rank.id or 0


def claim(stage_id: int, worker: str) -> int:
    with session_scope() as session:
        attempt = lifecycle.claim(session, stage_id, worker, worker)
    assert attempt is not None
    return attempt


def seat(stage_id: int, worker: str, address: str, dataset_sha256: str) -> None:
    """Another worker claims the stage and takes its seat, as its horse would."""
    claim(stage_id, worker)
    with session_scope() as session:
        stage = session.get(Stage, stage_id)
        assert stage is not None
        gang.take_seat(session, stage, address, dataset_sha256)


def test_a_rank_whose_dataset_differs_from_rank_0s_refuses_the_gang_naming_the_workers(
    farm_home: Path, tiny_model: Path, tmp_path: Path
) -> None:
    train, rank = gang_run(tmp_path, tiny_model)
    seat(train, "mac-a", "127.0.0.1:5001", "0" * 64)  # mac-a's own copy
    attempt = claim(rank, "mac-b")
    with pytest.raises(GangRefused) as refused:
        gang_worker.form(rank, attempt, None)
    assert "worker mac-b's copy of the dataset" in str(refused.value)
    assert "differs from rank 0's (worker mac-a)" in str(refused.value)
    # What the horse does with it: the gang fails for good, with that line.
    with session_scope() as session:
        lifecycle.fail(session, rank, attempt, str(refused.value), retry=False)
    with session_scope() as session:
        failed = session.get(Stage, train)
        assert failed is not None and failed.status == StageStatus.FAILED
        assert "mac-b's copy of the dataset" in (failed.error or "")


def test_a_rank_whose_gang_does_not_form_in_time_lets_its_worker_go(
    farm_home: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FARM_GANG_FORM_S", "1")
    _, rank = gang_run(tmp_path, tiny_model)
    attempt = claim(rank, "mac-b")
    assert gang_worker.form(rank, attempt, None) is None
    with session_scope() as session:
        stage = session.get(Stage, rank)
        assert stage is not None and stage.status == StageStatus.QUEUED
        assert (
            stage.error
            == "released: 1 of 2 ranks joined within 1 s (FARM_GANG_FORM_S); queued again"
        )
        row = session.exec(select(StageAttempt).where(StageAttempt.stage_id == rank)).one()
        assert row.outcome == AttemptOutcome.RELEASED
        assert row.ring_address and row.ring_address.startswith("127.0.0.1:")
        worker = session.exec(select(WorkerRow).where(WorkerRow.name == "mac-b")).one()
        assert worker.current_stage_id is None and worker.status == "idle"


def test_a_formed_gang_gets_one_hostfile_in_rank_order(
    farm_home: Path, tiny_model: Path, tmp_path: Path
) -> None:
    train, rank = gang_run(tmp_path, tiny_model)
    dataset = str(parse_spec((tmp_path / "gang.yaml").read_text()).dataset)
    seat(rank, "mac-b", "10.0.0.2:6002", gang_worker.dataset_sha256(dataset))
    attempt = claim(train, "mac-a")
    start = gang_worker.form(train, attempt, None)
    assert start is not None and (start.rank, start.world) == (0, 2)
    hosts = start.hostfile.read_text()
    assert hosts.startswith('[["127.0.0.1:') and hosts.endswith('"], ["10.0.0.2:6002"]]')


def test_a_worker_advertises_the_address_that_reaches_redis() -> None:
    assert gang_worker.reachable_address("redis://127.0.0.1:6379/13") == "127.0.0.1"
    assert gang_worker.reachable_address("redis://:secret@localhost:6390") in ("127.0.0.1", "::1")
