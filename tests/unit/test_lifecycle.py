"""The stage lifecycle (`jobs.lifecycle`) on a fresh SQLite database, no Redis.

Each step runs in its own session, the way a worker's calls do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from jobs import lifecycle
from jobs.dag import HOLD, checkpoint_variant
from jobs.db import Experiment, Run, Stage, StageAttempt, session_scope
from jobs.queue import stage_job_id
from jobs.states import AttemptOutcome, StageStatus

# train ──► eval(adapter)
#   └──► fuse ──► quantize(q4) ──► eval(q4)
PLAN = (
    ("train", "adapter", None),
    ("eval", "adapter", "train"),
    ("fuse", "fused", "train"),
    ("quantize", "q4", "fuse"),
    ("eval", "q4", "quantize"),
)


def make_run(
    plan: tuple[tuple[str, str, str | None], ...] = PLAN,
    spec: dict[str, Any] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
) -> dict[str, int]:
    """An experiment with one run of `plan` (kind, variant, parent kind), its train
    stage queued as submission leaves it; returns {"kind variant" or kind: stage id}."""
    spec = spec if spec is not None else {"resources": {"min_memory_gb": 20, "retries": 1}}
    with session_scope() as session:
        experiment = Experiment(name="unit", fingerprint="fp", base_model="m", dataset="d",
                                suite="s", spec_yaml="", spec=spec)  # fmt: skip
        session.add(experiment)
        session.flush()
        run = Run(experiment_id=experiment.id or 0, seed=1, fingerprint="fp")
        session.add(run)
        session.flush()
        ids: dict[str, int] = {}
        for kind, variant, parent in plan:
            stage = Stage(run_id=run.id or 0, kind=kind, variant=variant,
                          depends_on=ids.get(parent) if parent else None,
                          params=(params or {}).get(f"{kind} {variant}", {}))  # fmt: skip
            session.add(stage)
            session.flush()
            ids[kind] = ids[f"{kind} {variant}"] = stage.id or 0
        lifecycle.queue_train_stages(session, [run])
        ids["run"] = run.id or 0
    return ids


def stage(stage_id: int) -> Stage:
    with session_scope() as session:
        found = session.get(Stage, stage_id)
        assert found is not None
        return found


def statuses(ids: dict[str, int]) -> dict[str, str]:
    return {name: stage(i).status for name, i in ids.items() if " " in name}


def run_status(ids: dict[str, int]) -> str:
    with session_scope() as session:
        run = session.get(Run, ids["run"])
        assert run is not None
        return run.status


def attempts(stage_id: int) -> list[tuple[int, str]]:
    with session_scope() as session:
        rows = session.exec(select(StageAttempt).where(StageAttempt.stage_id == stage_id)).all()
        return sorted((r.attempt, r.outcome) for r in rows)


def claim(stage_id: int, worker: str = "w1") -> int | None:
    with session_scope() as session:
        return lifecycle.claim(session, stage_id, worker)


def finish(stage_id: int, attempt: int) -> list[lifecycle.Ticket]:
    with session_scope() as session:
        return lifecycle.finish(session, stage_id, attempt)


def fail(stage_id: int, attempt: int, *, retry: bool) -> list[lifecycle.Ticket]:
    with session_scope() as session:
        return lifecycle.fail(session, stage_id, attempt, "killed by SIGKILL", retry=retry)


def test_submission_queues_the_train_stage_on_its_memory_tier(farm_home: Path) -> None:
    ids = make_run()
    train = stage(ids["train"])
    assert train.status == StageStatus.QUEUED and train.queue == "farm:mem:24"
    assert train.rq_job_id == stage_job_id(ids["train"], 1)
    assert {s for n, s in statuses(ids).items() if n != "train adapter"} == {"waiting"}
    assert run_status(ids) == "queued"


def test_claim_starts_an_attempt_and_only_one_claim_wins(farm_home: Path) -> None:
    ids = make_run()
    assert claim(ids["train"], "w1") == 1
    assert claim(ids["train"], "w2") is None  # the second ticket for the same stage loses
    train = stage(ids["train"])
    assert (train.status, train.worker, train.attempt) == ("running", "w1", 1)
    assert attempts(ids["train"]) == [(1, AttemptOutcome.RUNNING)]
    assert run_status(ids) == "running"
    with session_scope() as session:
        run = session.get(Run, ids["run"])
        assert run is not None and run.host == "w1"  # its artifacts will be on w1's disk
    # A waiting stage is not claimable: its parent has not finished.
    assert claim(ids["fuse"]) is None


def test_finish_queues_the_children_on_the_worker_holding_the_artifacts(
    farm_home: Path,
) -> None:
    ids = make_run()
    attempt = claim(ids["train"])
    assert attempt is not None
    tickets = finish(ids["train"], attempt)
    assert sorted(t.stage_id for t in tickets) == sorted([ids["eval adapter"], ids["fuse"]])
    # Claimed without a host id: its name stands for its Mac.
    assert {t.queue.split(":mem:")[0] for t in tickets} == {"farm:host:w1"}
    assert statuses(ids) == {"train adapter": "done", "eval adapter": "queued",
                             "fuse fused": "queued", "quantize q4": "waiting",
                             "eval q4": "waiting"}  # fmt: skip
    assert attempts(ids["train"]) == [(1, AttemptOutcome.DONE)]


def test_a_stage_whose_code_raised_fails_for_good_and_skips_what_is_below(
    farm_home: Path,
) -> None:
    ids = make_run()
    attempt = claim(ids["train"])
    assert attempt is not None
    assert fail(ids["train"], attempt, retry=False) == []
    train = stage(ids["train"])
    assert train.status == "failed" and train.error == "killed by SIGKILL"
    assert {n: s for n, s in statuses(ids).items() if n != "train adapter"} == {
        "eval adapter": "skipped", "fuse fused": "skipped", "quantize q4": "skipped",
        "eval q4": "skipped"}  # fmt: skip
    assert attempts(ids["train"]) == [(1, AttemptOutcome.FAILED)]
    assert run_status(ids) == "failed"


def test_a_stage_that_died_gets_a_new_attempt_while_retries_last(farm_home: Path) -> None:
    ids = make_run()  # resources.retries: 1
    first = claim(ids["train"])
    assert first == 1
    (ticket,) = fail(ids["train"], first, retry=True)
    # The retry resumes from checkpoints on w1's disk, so it goes to w1's queue.
    assert ticket.queue.startswith("farm:host:w1:mem:")
    assert ticket.job_id == stage_job_id(ids["train"], 2)
    train = stage(ids["train"])
    assert train.status == "queued"
    assert train.error == "attempt 1 died: killed by SIGKILL; retrying"
    assert stage(ids["fuse"]).status == "waiting"  # nothing below it was touched

    second = claim(ids["train"])
    assert second == 2
    assert fail(ids["train"], second, retry=True) == []  # the one retry is used up
    train = stage(ids["train"])
    assert train.status == "failed"
    assert (train.error or "").startswith("killed by SIGKILL (gave up after")
    assert attempts(ids["train"]) == [(1, AttemptOutcome.DIED), (2, AttemptOutcome.DIED)]
    assert stage(ids["eval adapter"]).status == "skipped"


def test_the_guard_refuses_a_stale_attempt(farm_home: Path) -> None:
    ids = make_run()
    old = claim(ids["train"], "w1")
    assert old == 1
    fail(ids["train"], old, retry=True)  # w1 was cut off; the stage went back to work
    new = claim(ids["train"], "w2")
    assert new == 2

    with session_scope() as session, pytest.raises(lifecycle.StaleAttempt):
        lifecycle.guard(session, ids["train"], old)
    with session_scope() as session:
        assert not lifecycle.heartbeat(session, ids["train"], old)
        assert lifecycle.heartbeat(session, ids["train"], new)
    # w1 comes back and reports success: refused, w2's attempt still owns the stage.
    assert finish(ids["train"], old) == []
    train = stage(ids["train"])
    assert (train.status, train.attempt, train.worker) == ("running", 2, "w2")
    assert finish(ids["train"], new) != []
    assert stage(ids["train"]).status == "done"


def test_cancel_ends_the_running_attempt_and_the_waiting_stages(farm_home: Path) -> None:
    ids = make_run()
    attempt = claim(ids["train"])
    assert attempt is not None
    with session_scope() as session:
        stages = session.exec(select(Stage).where(Stage.run_id == ids["run"])).all()
        jobs = lifecycle.cancel(session, stages)
    assert jobs == [stage_job_id(ids["train"], 1)]  # the only stage with a job
    assert set(statuses(ids).values()) == {"cancelled"}
    assert attempts(ids["train"]) == [(1, AttemptOutcome.CANCELLED)]
    assert run_status(ids) == "cancelled"
    # The cancelled attempt can write nothing more.
    with session_scope() as session:
        assert not lifecycle.heartbeat(session, ids["train"], attempt)
    assert finish(ids["train"], attempt) == []
    assert stage(ids["train"]).status == "cancelled"


def test_skip_descendants_leaves_finished_stages_alone(farm_home: Path) -> None:
    ids = make_run()
    attempt = claim(ids["train"])
    assert attempt is not None
    finish(ids["train"], attempt)
    adapter_eval = claim(ids["eval adapter"])
    assert adapter_eval is not None
    finish(ids["eval adapter"], adapter_eval)
    with session_scope() as session:
        train = session.get(Stage, ids["train"])
        assert train is not None
        jobs = lifecycle.skip_descendants(session, train, "skipped: by the test")
    assert jobs == [stage_job_id(ids["fuse"], 1)]  # the queued fuse's job is to be dropped
    assert statuses(ids) == {"train adapter": "done", "eval adapter": "done",
                             "fuse fused": "skipped", "quantize q4": "skipped",
                             "eval q4": "skipped"}  # fmt: skip


def test_the_last_checkpoint_eval_releases_the_best_variant(farm_home: Path) -> None:
    first, second = checkpoint_variant(10), checkpoint_variant(20)
    plan = (("train", "adapter", None), ("eval", first, "train"), ("eval", second, "train"),
            ("eval", "best", "train"))  # fmt: skip
    ids = make_run(plan, spec={}, params={"eval best": {HOLD: True}})
    attempt = claim(ids["train"])
    assert attempt is not None
    queued = {t.stage_id for t in finish(ids["train"], attempt)}
    assert queued == {ids[f"eval {first}"], ids[f"eval {second}"]}  # `best` is held

    for variant, adherence in ((first, 0.9), (second, 0.4)):
        with session_scope() as session:
            done = session.get(Stage, ids[f"eval {variant}"])
            assert done is not None
            done.adherence, done.n_prompts = adherence, 10
            session.add(done)
        attempt = claim(ids[f"eval {variant}"])
        assert attempt is not None
        tickets = finish(ids[f"eval {variant}"], attempt)
    assert [t.stage_id for t in tickets] == [ids["eval best"]]
    best = stage(ids["eval best"])
    assert best.status == "queued" and best.params["iteration"] == 10  # the higher adherence
