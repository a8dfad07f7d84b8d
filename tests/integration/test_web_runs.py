"""The runs page in AppTest (live progress, cancel, retry, clone link) and jobs.control."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlmodel import select

from jobs import control
from jobs.db import EvalResult, Metric, Run, Stage, session_scope, utcnow
from jobs.queue import stage_job_id
from tests.support.web import install_model, open_page, quick_form, texts
from web import form_bounds

RUNS = "views/runs.py"


@pytest.fixture
def model(farm_home: Path, redis_url: str, tiny_model: Path) -> Path:
    return install_model(farm_home, tiny_model)


def submit(model: Path, redis_url: str, **overrides: Any) -> int:
    result = form_bounds.submit_form(quick_form(model, **overrides), Redis.from_url(redis_url))
    assert result.experiment_id is not None, result.problems
    return result.experiment_id


def stages_of(run_id: int) -> dict[str, Stage]:
    with session_scope() as session:
        stages = session.exec(select(Stage).where(Stage.run_id == run_id)).all()
    return {s.kind if s.kind in ("train", "fuse") else f"{s.kind}:{s.variant}": s for s in stages}


def runs() -> list[Run]:
    with session_scope() as session:
        return list(session.exec(select(Run).order_by(Run.id)).all())


def job_status(redis_url: str, stage_id: int) -> str:
    job = Job.fetch(stage_job_id(stage_id), Redis.from_url(redis_url), serializer=JSONSerializer)
    return job.get_status().value


def train_reports(run_id: int, progress: int, losses: list[tuple[int, float | None, float | None]]):  # type: ignore[no-untyped-def]
    """What a worker's training callback writes: stage progress and Metric rows."""
    with session_scope() as session:
        train = session.exec(
            select(Stage).where(Stage.run_id == run_id, Stage.kind == "train")
        ).one()
        train.status, train.worker, train.progress, train.total = "running", "mac-a", progress, 12
        train.started_at = utcnow() - timedelta(seconds=75)
        session.add(train)
        for iteration, train_loss, val_loss in losses:
            session.add(Metric(stage_id=train.id or 0, run_id=run_id, iteration=iteration,
                               train_loss=train_loss, val_loss=val_loss))  # fmt: skip
        run = session.get(Run, run_id)
        assert run is not None
        run.status = "running"
        session.add(run)


def test_runs_page_shows_live_training_progress(model: Path, redis_url: str) -> None:
    submit(model, redis_url)
    first = runs()[0]
    train_reports(first.id or 0, 3, [(0, None, 3.5), (3, 2.75, None)])

    at = open_page(RUNS)
    bars = {bar.text: bar.value for bar in at.progress}
    assert bars["train 3/12 · train loss 2.750 · val loss 3.500"] == 25
    assert "train 0/12" in bars  # the queued seed, not started yet
    assert "mac-a" in texts(at) and ":material/timer: 1m" in texts(at)  # worker, elapsed

    train_reports(first.id or 0, 9, [(6, 2.25, None), (9, 2.0, 2.5)])
    at.run()  # the fragment re-runs on its own every 2 s in a browser; here, by hand
    bars = {bar.text: bar.value for bar in at.progress}
    assert bars["train 9/12 · train loss 2.000 · val loss 2.500"] == 75


def test_cancel_buttons_stop_a_run_and_then_the_experiment(model: Path, redis_url: str) -> None:
    submit(model, redis_url, seeds="1-2")
    one, two = runs()
    at = open_page(RUNS)
    at.button(key=f"cancel_run_{one.id}").click().run()

    assert f"cancel run {one.id}: " in texts(at)
    assert {s.status for s in stages_of(one.id or 0).values()} == {"cancelled"}
    assert job_status(redis_url, stages_of(one.id or 0)["train"].id or 0) == "canceled"
    assert stages_of(two.id or 0)["train"].status == "queued"  # the other seed goes on
    assert job_status(redis_url, stages_of(two.id or 0)["train"].id or 0) == "queued"

    experiment_id = one.experiment_id
    at.button(key=f"cancel_exp_{experiment_id}").click().run()
    assert {s.status for s in stages_of(two.id or 0).values()} == {"cancelled"}
    assert job_status(redis_url, stages_of(two.id or 0)["train"].id or 0) == "canceled"
    assert [r.status for r in runs()] == ["cancelled", "cancelled"]
    keys = {b.key for b in at.button}
    assert f"cancel_exp_{experiment_id}" not in keys and f"retry_run_{one.id}" in keys


def test_retry_button_queues_a_cancelled_run_again(model: Path, redis_url: str) -> None:
    submit(model, redis_url, seeds="1")
    (run,) = runs()
    at = open_page(RUNS)
    at.button(key=f"cancel_run_{run.id}").click().run()
    at.button(key=f"retry_run_{run.id}").click().run()

    assert f"retry run {run.id}: 6 stages to run again" in texts(at)
    stages = stages_of(run.id or 0)
    assert stages["train"].status == "queued" and stages["train"].error is None
    assert {s.status for k, s in stages.items() if k != "train"} == {"waiting"}
    assert runs()[0].status == "queued" and runs()[0].finished_at is None
    queue = Queue("farm:mem:0", connection=Redis.from_url(redis_url), serializer=JSONSerializer)
    assert queue.job_ids == [stage_job_id(stages["train"].id or 0)]


def test_clone_link_on_each_experiment(model: Path, redis_url: str) -> None:
    submit(model, redis_url)
    at = open_page(RUNS)
    link = next(p for p in at.get("page_link") if p.value == "Clone")
    assert link.proto.query_string == f"clone={runs()[0].id}"


# --- jobs.control on its own ------------------------------------------------------------


def finish_training(run_id: int, worker: str) -> None:
    with session_scope() as session:
        for stage in session.exec(select(Stage).where(Stage.run_id == run_id)):
            stage.status, stage.worker = "done", worker
            session.add(stage)


def test_retry_of_a_failed_eval_is_pinned_to_the_worker_holding_the_adapter(
    model: Path, redis_url: str
) -> None:
    submit(model, redis_url, seeds="1")
    (run,) = runs()
    finish_training(run.id or 0, "mac-a")
    stages = stages_of(run.id or 0)
    with session_scope() as session:
        failed = session.get(Stage, stages["quantize:q8"].id)
        skipped = session.get(Stage, stages["eval:q8"].id)
        assert failed is not None and skipped is not None
        failed.status, failed.error, failed.size_bytes = "failed", "killed", 123
        skipped.status = "skipped"
        session.add_all([failed, skipped])
        session.add(EvalResult(stage_id=stages["eval:adapter"].id or 0, run_id=run.id or 0,
                               prompt_id="p1", expect="tool", prompt="p", response="r",
                               label="prose", score=0.0))  # fmt: skip

    with session_scope() as session:
        # The skipped eval cannot run before the quantize it waits on: both go again.
        retried = control.retry_stage(session, stages["eval:q8"].id or 0, Redis.from_url(redis_url))
    assert retried == sorted([stages["quantize:q8"].id, stages["eval:q8"].id])
    after = stages_of(run.id or 0)
    assert after["quantize:q8"].status == "queued" and after["quantize:q8"].size_bytes is None
    assert after["eval:adapter"].status == "done"  # untouched, its rows kept
    redis = Redis.from_url(redis_url)
    assert (after["quantize:q8"].queue or "").startswith("farm:host:mac-a:mem:")
    pinned = Queue(after["quantize:q8"].queue or "", connection=redis, serializer=JSONSerializer)
    assert pinned.job_ids == [stage_job_id(after["quantize:q8"].id or 0)]
    # The eval waits in the DB until the quantize is done; only then is it queued.
    assert after["eval:q8"].status == "waiting" and after["eval:q8"].rq_job_id is None
    with session_scope() as session:
        assert len(session.exec(select(EvalResult)).all()) == 1


def test_retry_clears_the_results_of_the_attempt(model: Path, redis_url: str) -> None:
    submit(model, redis_url, seeds="1")
    (run,) = runs()
    finish_training(run.id or 0, "mac-a")
    stages = stages_of(run.id or 0)
    with session_scope() as session:
        stage = session.get(Stage, stages["eval:adapter"].id)
        assert stage is not None
        stage.status, stage.adherence, stage.label_counts = "failed", 0.5, {"prose": 27}
        session.add(stage)
        session.add(EvalResult(stage_id=stage.id or 0, run_id=run.id or 0, prompt_id="p1",
                               expect="tool", prompt="p", response="r", label="prose",
                               score=0.0))  # fmt: skip
    with session_scope() as session:
        retried = control.retry_run(session, run.id or 0, Redis.from_url(redis_url))
    assert retried == [stages["eval:adapter"].id]
    after = stages_of(run.id or 0)["eval:adapter"]
    assert (after.status, after.adherence, after.label_counts) == ("queued", None, None)
    with session_scope() as session:
        assert session.exec(select(EvalResult)).all() == []


def test_retry_refuses_what_is_still_going(model: Path, redis_url: str) -> None:
    submit(model, redis_url, seeds="1")
    (run,) = runs()
    with session_scope() as session, pytest.raises(control.RetryError, match="nothing to retry"):
        control.retry_run(session, run.id or 0, Redis.from_url(redis_url))
    assert stages_of(run.id or 0)["train"].status == "queued"
