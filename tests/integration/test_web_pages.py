"""Run detail, workers, the password gate and the page benchmark, in AppTest."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from sqlmodel import select

from jobs.db import Run, Stage, WorkerRow, session_scope, utcnow
from jobs.queue import stage_job_id
from tests.support.web import APP, RUN, install_model, open_page, quick_form, shown, texts
from tools.bench.pages import bench_pages
from web import form_bounds


def test_run_page_shows_curves_stages_artifacts_and_variants(finished_run: int) -> None:
    at = open_page(RUN, run=str(finished_run))
    page = texts(at)
    assert "quick · seed 1" in page and "artifacts on mac-a" in page
    assert len(at.get("vega_lite_chart")) == 3  # loss, tokens/s + memory, stage timeline
    frames = {tuple(d.value.columns): d.value for d in at.dataframe}

    stages = next(v for k, v in frames.items() if "stage" in k and "after" in k)
    assert list(stages["stage"])[:2] == ["train", "eval adapter"]
    assert set(stages["status"]) == {"done"} and set(stages["worker"]) == {"mac-a"}
    artifacts = next(v for k, v in frames.items() if "sha256" in k)
    assert list(artifacts["size_mb"]) == [2.5] and list(artifacts["host"]) == ["mac-a"]

    # Variants side by side: the 4-bit signal loss shows at a glance.
    variants = next(v for k, v in frames.items() if "label_mix" in k)
    adherence = dict(zip(variants["variant"], variants["adherence"], strict=True))
    assert adherence == {"adapter": 0.75, "fused": 1.0, "q8": 0.75, "q4": 0.0}
    # Points lost against the twin: q8 and q4 against the fused f16 model, fused
    # against the adapter; the adapter has none.
    lost = dict(zip(variants["variant"], variants["points_lost"], strict=True))
    assert lost["q4"] == -100 and lost["q8"] == -25 and lost["fused"] == 25
    assert lost["adapter"] is None or lost["adapter"] != lost["adapter"]  # None or NaN
    columns = list(variants.columns)
    assert columns.index("points_lost") == columns.index("adherence") + 1
    # What each eval cost and how its responses ended (a model that never stops shows).
    ended = dict(zip(variants["variant"], variants["ended_by"], strict=True))
    assert ended["q4"] == "max_tokens 3, eos 1" and ended["fused"] == "eos 4"
    assert list(variants["eval_s"]) == [20.0] * 4
    assert "eval 80.0 s over 4 variants (adapter 20.0 s, fused 20.0 s, q8 20.0 s" in page
    matrix = next(v for k, v in frames.items() if "prompt" in k and "q4" in k)
    assert list(matrix.columns) == ["prompt", "category", "expect", "adapter", "fused", "q8", "q4"]
    assert list(matrix.loc[3, ["adapter", "q4"]]) == ["prose (0)", "empty (0)"]


def responses(at):  # type: ignore[no-untyped-def]
    """The expandable eval responses (not the preflight findings)."""
    return [e for e in at.expander if not e.label.startswith("Preflight")]


def test_run_page_filters_eval_rows_by_label_and_category(finished_run: int) -> None:
    at = open_page(RUN, run=str(finished_run))
    assert "4 responses match" in texts(at)
    assert len(responses(at)) == 4

    at.selectbox(key="eval_variant").select("q8").run()
    at.multiselect(key="eval_labels").select("wrong_tool").run()
    assert "1 responses match" in texts(at)
    (expander,) = responses(at)
    assert "wrong_tool" in shown(expander.label)
    assert "response 3 of q8" in [c.value for c in expander.code]

    at.multiselect(key="eval_labels").unselect("wrong_tool")
    at.multiselect(key="eval_categories").select("git").run()
    assert "2 responses match" in texts(at)


def test_run_page_for_a_missing_run(farm_home: Path) -> None:
    at = open_page(RUN, run="999")
    assert "No run 999." in texts(at)


@pytest.fixture
def failed_run(farm_home: Path, redis_url: str, tiny_model: Path) -> int:
    """A run whose first train attempt failed (so everything below it was skipped),
    with the Redis queues empty."""
    model = install_model(farm_home, tiny_model)
    result = form_bounds.submit_form(quick_form(model, seeds="1"), Redis.from_url(redis_url))
    assert result.experiment_id is not None, result.problems
    with session_scope() as session:
        (run,) = session.exec(select(Run)).all()
        for stage in session.exec(select(Stage).where(Stage.run_id == run.id)).all():
            if stage.kind == "train":
                stage.status, stage.attempt, stage.worker = "failed", 1, "mac-a"
                stage.error = "Traceback …\nValueError: the loss is nan"
            else:
                stage.status, stage.error = "skipped", "skipped: train adapter failed"
            session.add(stage)
        run.status = "failed"
        session.add(run)
        run_id = run.id or 0
    Redis.from_url(redis_url).flushdb()  # only the retry's job may be there afterwards
    return run_id


def test_run_page_retries_a_failed_stage(failed_run: int, redis_url: str) -> None:
    with session_scope() as session:
        train = session.exec(select(Stage).where(Stage.kind == "train")).one()
    at = open_page(RUN, run=str(failed_run))
    (failure,) = [e for e in at.expander if "failed" in e.label]
    assert shown(failure.label).startswith("train failed: ValueError: the loss is nan")

    at.button(key=f"retry_stage_{train.id}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "retry stage: " in texts(at)
    with session_scope() as session:
        again = session.get(Stage, train.id)
        assert again is not None
        assert again.status == "queued" and again.error is None
        skipped = session.exec(select(Stage).where(Stage.kind != "train")).all()
        assert {s.status for s in skipped} == {"waiting"}  # they follow the train stage
    # A new attempt's ticket, on the memory tier (any worker may train it again).
    tier = Queue("farm:mem:0", connection=Redis.from_url(redis_url), serializer=JSONSerializer)
    assert tier.job_ids == [stage_job_id(train.id or 0, 2)]


def test_workers_page(farm_home: Path, redis_url: str, finished_run: int) -> None:
    with session_scope() as session:
        train = session.exec(select(Stage).where(Stage.kind == "train")).first()
        assert train is not None
        session.add(WorkerRow(name="mac-a", host="mac-a.lan", memory_gb=72, total_memory_gb=96,
                              chip="Apple M2 Max", mlx_version="0.29.1", status="busy",
                              current_stage_id=train.id, jobs_done=7))  # fmt: skip
        session.add(WorkerRow(name="mac-b", host="mac-b.lan", memory_gb=16, status="idle",
                              last_heartbeat=utcnow() - timedelta(minutes=10)))  # fmt: skip
    at = open_page("views/workers.py")
    workers = next(d for d in at.dataframe if "chip" in d.value.columns).value
    rows = workers.set_index("name")
    assert rows.loc["mac-a", "chip"] == "Apple M2 Max" and rows.loc["mac-a", "jobs_done"] == 7
    # What it offers (a Mac's GPU working set) beside its RAM.
    assert (rows.loc["mac-a", "memory_gb"], rows.loc["mac-a", "total_memory_gb"]) == (72, 96)
    assert rows.loc["mac-a", "running"].startswith("train 12/12 · quick, seed 1")
    assert rows.loc["mac-b", "status"] == "lost"  # no heartbeat for 10 minutes
    assert rows.loc["mac-b", "heartbeat_s"].startswith("10m")
    queues = next(d for d in at.dataframe if "queue" in d.value.columns).value
    # Both train jobs of the fixture's experiment sit on the tier queue (no worker ran them).
    depth = Queue("farm:mem:0", connection=Redis.from_url(redis_url), serializer=JSONSerializer)
    assert dict(zip(queues["queue"], queues["queued"], strict=True))["farm:mem:0"] == depth.count
    assert depth.count == 2


# --- access -----------------------------------------------------------------------------


def test_password_gate_from_the_environment(
    farm_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FARM_UI_PASSWORD", "correct horse")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert [t.value for t in at.title] == ["lorafarm"]
    assert "Leaderboard" not in texts(at)
    with pytest.raises(ValueError, match=r"Could not find a navigation page"):
        at.switch_page("views/runs.py")  # only the sign-in form is registered, at every address

    at.text_input(key="password").input("wrong")
    at.button[0].click().run()
    assert "Wrong password (failed attempt 1 from here)." in texts(at)
    at.text_input(key="password").input("correct horse")
    at.button[0].click().run()
    assert "Leaderboard" in [t.value for t in at.title]


def test_password_gate_from_streamlit_secrets(farm_home: Path) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["password"] = "s3cret"
    at.run()
    assert "Leaderboard" not in texts(at)
    at.text_input(key="password").input("s3cret")
    at.button[0].click().run()
    assert "Leaderboard" in [t.value for t in at.title]


def test_no_password_no_gate(farm_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FARM_UI_PASSWORD", raising=False)
    at = open_page()
    assert "Leaderboard" in [t.value for t in at.title]


# --- farm bench --only pages -------------------------------------------------------------


def test_bench_pages_seeds_both_backends_and_times_the_pages(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    admin = postgres_url.rsplit("/", 1)[0] + "/postgres"
    results = bench_pages(300, workdir=tmp_path, postgres_admin_url=admin, repeat=1)
    for backend in ("sqlite", "postgresql"):
        assert results[f"{backend}_stages"] > 300 * 6
        assert results[f"{backend}_eval_rows"] == (300 - 40) * 27
        for page in ("leaderboard", "runs", "run"):
            assert 0 < results[f"{backend}_{page}_page_s"] < 30
            assert 0 < results[f"{backend}_{page}_queries_s"] < 30
    assert results["slowest_page_s"] == max(v for k, v in results.items() if k.endswith("_page_s"))
