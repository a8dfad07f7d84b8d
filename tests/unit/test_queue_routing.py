"""Queue routing (`jobs.queue`): which RQ queue a stage's job goes to. Pure: no Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.queue import (
    MEMORY_TIERS_GB,
    Ticket,
    gang_queue_name,
    host_queue_name,
    pinned_queue_name,
    push_all,
    queues_for_worker,
    stage_job_id,
    tier_for,
    tier_queue_name,
)


@pytest.fixture(autouse=True)
def no_shared_artifacts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FARM_SHARED_ARTIFACTS", raising=False)


@pytest.mark.parametrize(
    ("need_gb", "tier"),
    [(0, 0), (0.5, 8), (8, 8), (8.1, 16), (20, 24), (64, 64), (500, 512), (4096, 512)],
)
def test_a_memory_need_goes_to_the_smallest_tier_that_holds_it(need_gb: float, tier: int) -> None:
    assert tier_for(need_gb) == tier
    assert tier_queue_name(need_gb) == f"farm:mem:{tier}"


def test_a_worker_listens_to_its_macs_queue_first_then_gangs_then_its_tiers_largest_first() -> None:
    assert queues_for_worker("studio-1", 20) == [
        "farm:host:studio-1:mem:16",
        "farm:host:studio-1:mem:8",
        "farm:host:studio-1:mem:0",
        "farm:gang:mem:16",
        "farm:gang:mem:8",
        "farm:gang:mem:0",
        "farm:mem:16",
        "farm:mem:8",
        "farm:mem:0",
    ]
    assert queues_for_worker("tiny", 4) == [
        "farm:host:tiny:mem:0",
        "farm:gang:mem:0",
        "farm:mem:0",
    ]


@pytest.mark.parametrize("memory_gb", [0, 4, 8, 20, 64, 100, 1000])
@pytest.mark.parametrize("need_gb", [0, 1, 8, 12, 24, 33, 96, 200])
def test_a_job_never_lands_on_a_worker_too_small_for_it(memory_gb: float, need_gb: float) -> None:
    listens = queues_for_worker("w", memory_gb)
    assert (tier_queue_name(need_gb) in listens) == (tier_for(need_gb) <= memory_gb)
    # Pinned to its Mac too: another worker on the same Mac with less memory never takes it.
    assert (host_queue_name("w", need_gb) in listens) == (tier_for(need_gb) <= memory_gb)
    # A rank of a gang neither.
    assert (gang_queue_name(need_gb) in listens) == (tier_for(need_gb) <= memory_gb)


def test_every_tier_queue_is_one_some_worker_listens_to() -> None:
    biggest = queues_for_worker("w", MEMORY_TIERS_GB[-1])
    assert {f"farm:mem:{t}" for t in MEMORY_TIERS_GB} <= set(biggest)


def test_later_stages_are_pinned_to_the_mac_holding_the_artifacts() -> None:
    assert pinned_queue_name("studio-1-0a1b2c3d", 20) == host_queue_name("studio-1-0a1b2c3d", 20)
    assert host_queue_name("studio-1-0a1b2c3d", 20) == "farm:host:studio-1-0a1b2c3d:mem:24"
    # Nobody holds them yet (the run has not trained): any suitable worker.
    assert pinned_queue_name(None, 20) == "farm:mem:24"
    assert pinned_queue_name("", 20) == "farm:mem:24"


def test_a_shared_artifacts_folder_lifts_the_pinning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FARM_SHARED_ARTIFACTS", str(tmp_path))
    assert pinned_queue_name("studio-1", 20) == "farm:mem:24"


def test_each_attempt_has_its_own_job_id() -> None:
    assert stage_job_id(7) == "stage-7-a1"
    assert stage_job_id(7, 3) == "stage-7-a3"
    assert len({stage_job_id(7, a) for a in range(1, 5)}) == 4


def test_without_redis_nothing_is_pushed_and_nothing_raises() -> None:
    # The stages stay queued in the DB; the reconciler pushes them later.
    tickets = [Ticket(1, "farm:mem:0", stage_job_id(1), 60)]
    assert push_all(None, tickets) == []
