"""A gang's stages through the lifecycle (`jobs.lifecycle`, `jobs.gang`) on a
fresh SQLite database, no Redis: who may claim, and ending together."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs import gang, lifecycle, replan
from jobs.dag import plan_run
from jobs.db import Run, Stage, WorkerRow, server_now, session_scope
from jobs.experiment_spec import parse_spec
from jobs.problems import InputError
from jobs.states import AttemptOutcome, StageStatus, WorkerStatus
from tests.unit.test_lifecycle import attempts, claim, fail, finish, make_run, stage

# A 3-rank gang's train with its two ranks, and the adapter eval after it.
GANG = (
    ("train", "adapter", None),
    ("rank", "rank-1", "train"),
    ("rank", "rank-2", "train"),
    ("eval", "adapter", "train"),
)
PARAMS = {
    "train adapter": {"world": 3},
    "rank rank-1": {"rank": 1, "world": 3},
    "rank rank-2": {"rank": 2, "world": 3},
}
SPEC = {"resources": {"min_memory_gb": 0, "retries": 1}}


def make_gang(**spec: object) -> dict[str, int]:
    return make_run(GANG, spec={**SPEC, **spec}, params=PARAMS)


def add_workers(*names: str, memory_gb: float = 16) -> None:
    with session_scope() as session:
        for name in names:
            session.add(WorkerRow(name=name, host="mac", memory_gb=memory_gb,
                                  status=WorkerStatus.IDLE,
                                  last_heartbeat=server_now(session)))  # fmt: skip


def refusal(stage_id: int) -> str | None:
    with session_scope() as session:
        found = session.get(Stage, stage_id)
        assert found is not None
        return gang.claim_refusal(session, found)


def seat(stage_id: int, address: str) -> None:
    with session_scope() as session:
        found = session.get(Stage, stage_id)
        assert found is not None
        gang.take_seat(session, found, address, "sha")


def test_a_spec_with_workers_plans_one_rank_stage_per_extra_worker_below_train() -> None:
    spec = parse_spec(
        "name: g\nbase_model: m\ndataset: d\nseeds: [1]\n"
        "train: {workers: 3, batch_size: 6}\neval: {suite: s.yaml}\n",
        check_files=False,
    )
    planned = {p.key: p for p in plan_run(spec)}
    assert planned["train"].params == {"world": 3}
    assert [(k, p.kind, p.variant, p.parent, p.params) for k, p in planned.items()
            if p.kind == "rank"] == [
        ("rank:1", "rank", "rank-1", "train", {"rank": 1, "world": 3}),
        ("rank:2", "rank", "rank-2", "train", {"rank": 2, "world": 3}),
    ]  # fmt: skip
    alone = parse_spec(
        "name: g\nbase_model: m\ndataset: d\nseeds: [1]\ntrain: {}\neval: {suite: s.yaml}\n",
        check_files=False,
    )
    assert [p.kind for p in plan_run(alone)].count("rank") == 0
    assert "world" not in plan_run(alone)[0].params


def test_submission_queues_the_whole_gang_on_its_tiers_gang_queue(farm_home: Path) -> None:
    ids = make_gang()
    for name in ("train adapter", "rank rank-1", "rank rank-2"):
        assert stage(ids[name]).status == StageStatus.QUEUED
        assert stage(ids[name]).queue == "farm:gang:mem:0"
    assert stage(ids["eval adapter"]).status == StageStatus.WAITING


def test_a_gang_is_not_claimed_while_too_few_workers_could_hold_it(farm_home: Path) -> None:
    ids = make_gang()
    add_workers("a", "b")
    add_workers("small", memory_gb=4)  # live, but too small for a 16 GB rank
    assert refusal(ids["rank rank-1"]) is None  # 3 live workers of the 0 GB tier
    big = make_gang(resources={"min_memory_gb": 16, "retries": 1})
    assert refusal(big["train adapter"]) == (
        "waiting for 3 workers with ≥ 16 GB to train together: 2 are live"
    )


def test_only_the_oldest_gang_that_could_form_may_claim(farm_home: Path) -> None:
    add_workers("a", "b", "c")
    older, younger = make_gang(), make_gang()
    assert refusal(older["rank rank-2"]) is None
    assert refusal(younger["train adapter"]) == (
        f"waiting behind the gang of run {older['run']}, which forms first"
    )
    # Once the older gang has formed (nothing of it queued), the younger may claim.
    for name in ("train adapter", "rank rank-1", "rank rank-2"):
        assert claim(older[name]) == 1
    assert refusal(younger["train adapter"]) is None
    # A gang too big for the live workers holds nobody and blocks nobody.
    huge = make_run(GANG, spec=SPEC, params={k: {**v, "world": 5} for k, v in PARAMS.items()})
    newest = make_gang()
    assert refusal(huge["rank rank-1"]) is not None
    assert refusal(newest["rank rank-1"]) == (
        f"waiting behind the gang of run {younger['run']}, which forms first"
    )


def test_the_gang_forms_when_every_rank_runs_and_has_taken_its_seat(farm_home: Path) -> None:
    ids = make_gang()
    names = ("train adapter", "rank rank-1", "rank rank-2")
    for i, name in enumerate(names):
        assert claim(ids[name], f"w{i}") == 1
        seat(ids[name], f"10.0.0.{i}:5000")
        with session_scope() as session:
            formed = gang.seats(session, ids["run"])
            assert (formed is not None) == (i == 2)
            assert gang.seated(session, ids["run"]) == (i + 1, 3)
    assert formed is not None
    assert [(s.rank, s.worker, s.address) for s in formed] == [
        (0, "w0", "10.0.0.0:5000"), (1, "w1", "10.0.0.1:5000"), (2, "w2", "10.0.0.2:5000")
    ]  # fmt: skip


def test_a_lost_rank_ends_the_gangs_attempt_and_all_ranks_queue_again(farm_home: Path) -> None:
    ids = make_gang()
    names = ("train adapter", "rank rank-1", "rank rank-2")
    for name in names:
        assert claim(ids[name]) == 1
    with session_scope() as session:
        lost = session.get(Stage, ids["rank rank-1"])
        assert lost is not None
        lifecycle.lose(session, lost, "worker w stopped sending heartbeats")
    assert {stage(ids[n]).status for n in names} == {StageStatus.QUEUED}
    assert attempts(ids["rank rank-1"]) == [(1, AttemptOutcome.LOST)]
    assert attempts(ids["train adapter"]) == [(1, AttemptOutcome.RELEASED)]
    assert attempts(ids["rank rank-2"]) == [(1, AttemptOutcome.RELEASED)]
    # Released is not a retry: the others keep theirs (retries: 1), the lost rank used its one.
    for name in names:
        assert claim(ids[name]) == 2
    fail(ids["train adapter"], 2, retry=True)  # rank 0's own second death
    assert stage(ids["train adapter"]).status == StageStatus.QUEUED
    fail_again = claim(ids["train adapter"])
    assert fail_again == 3
    fail(ids["train adapter"], 3, retry=True)  # its retries are spent: the gang fails
    assert stage(ids["train adapter"]).status == StageStatus.FAILED
    assert {stage(ids[n]).status for n in names[1:]} == {StageStatus.SKIPPED}
    assert stage(ids["eval adapter"]).status == StageStatus.SKIPPED


def test_a_rank_that_fails_for_good_fails_rank_0_and_everything_below(farm_home: Path) -> None:
    ids = make_gang()
    for name in ("train adapter", "rank rank-1", "rank rank-2"):
        claim(ids[name])
    with session_scope() as session:
        lifecycle.fail(session, ids["rank rank-2"], 1, "worker c's copy of the dataset differs",
                       retry=False)  # fmt: skip
    train = stage(ids["train adapter"])
    assert train.status == StageStatus.FAILED
    assert train.error == "rank 2 failed: worker c's copy of the dataset differs"
    assert stage(ids["rank rank-1"]).status == StageStatus.SKIPPED
    assert stage(ids["eval adapter"]).status == StageStatus.SKIPPED
    with session_scope() as session:
        run = session.get(Run, ids["run"])
        assert run is not None and run.status == "failed"


def test_a_rank_released_for_want_of_a_gang_keeps_its_retries(farm_home: Path) -> None:
    ids = make_gang()
    rank = ids["rank rank-1"]
    for attempt in (1, 2, 3):
        assert claim(rank) == attempt
        with session_scope() as session:
            tickets = lifecycle.release(session, rank, attempt, "released: 1 of 3 ranks joined")
        assert [t.stage_id for t in tickets] == [rank]
    assert attempts(rank) == [(a, AttemptOutcome.RELEASED) for a in (1, 2, 3)]
    assert stage(rank).status == StageStatus.QUEUED
    assert stage(rank).error == "released: 1 of 3 ranks joined"


def test_a_rank_ending_after_rank_0_finished_has_nothing_to_rejoin(farm_home: Path) -> None:
    ids = make_gang()
    for name in ("train adapter", "rank rank-1", "rank rank-2"):
        claim(ids[name])
    finish(ids["rank rank-2"], 1)
    tickets = finish(ids["train adapter"], 1)
    assert [t.stage_id for t in tickets] == [ids["eval adapter"]]  # not the ranks
    with session_scope() as session:
        late = session.get(Stage, ids["rank rank-1"])
        assert late is not None
        assert lifecycle.lose(session, late, "stopped sending heartbeats") == []
    assert stage(ids["rank rank-1"]).status == StageStatus.SKIPPED


def test_a_re_planned_gang_starts_over_with_all_its_ranks(farm_home: Path) -> None:
    ids = make_gang()
    for name in ("train adapter", "rank rank-1", "rank rank-2"):
        claim(ids[name])
    finish(ids["rank rank-1"], 1)
    finish(ids["rank rank-2"], 1)
    finish(ids["train adapter"], 1)
    with session_scope() as session:
        run = session.get(Run, ids["run"])
        assert run is not None
        tickets = replan.replan_run(session, run, "its Mac is gone")
    queued = {t.stage_id: t.queue for t in tickets}
    assert set(queued) == {ids["train adapter"], ids["rank rank-1"], ids["rank rank-2"]}
    assert set(queued.values()) == {"farm:gang:mem:0"}


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ("{workers: 3, batch_size: 4}",
         "train.workers: batch_size 4 does not divide among 3 workers: each takes batch_size / "
         "workers examples of every batch — use a batch_size that is a multiple of 3 (e.g. 3) "
         "or fewer workers"),
        ("{workers: 2, batch_size: 4, save_every: 10, adherence_probe: {prompts: 2}}",
         "train.workers: the adherence probe runs on one Mac and cannot stop 2 workers together "
         "— remove train.adherence_probe or set workers: 1"),
    ],
)  # fmt: skip
def test_a_gang_spec_that_cannot_train_is_refused_at_its_line(train: str, message: str) -> None:
    text = f"name: g\nbase_model: m\ndataset: d\nseeds: [1]\ntrain: {train}\neval: {{suite: s}}\n"
    with pytest.raises(InputError) as refused:
        parse_spec(text, source="gang.yaml", check_files=False)
    assert [str(p) for p in refused.value.problems] == [f"gang.yaml:5: {message}"]


def test_a_slow_start_is_not_taken_for_a_wedged_collective() -> None:
    from worker.stage_job import gang_stalled

    # Once the gang has trained, no step for FARM_GANG_STALL_S is a wedge.
    assert gang_stalled(6.0, trained_yet=True, stall_s=5.0, form_s=20.0)
    assert not gang_stalled(4.0, trained_yet=True, stall_s=5.0, form_s=20.0)
    # Before its first step it may still be forming and loading: more time.
    assert not gang_stalled(6.0, trained_yet=False, stall_s=5.0, form_s=20.0)
    assert gang_stalled(26.0, trained_yet=False, stall_s=5.0, form_s=20.0)
