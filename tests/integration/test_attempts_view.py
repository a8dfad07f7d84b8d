"""Attempts, resumes, lost workers and their causes in words: the lines themselves,
`farm status`, the runs page and the run page, on rows the lifecycle wrote."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import select
from typer.testing import CliRunner

from jobs import lifecycle, reconcile, replan
from jobs.db import Run, Stage, WorkerCredential, WorkerRow, session_scope, utcnow
from jobs.experiment_spec import parse_spec
from jobs.submit import create_rows
from read.attempts import attempt_lines, has_history, progress_note, run_story
from tests.support.web import open_page, shown, texts
from tools.cli import app

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 27, 14, 0, 0, tzinfo=UTC)
LOST_REASON = (
    "worker mac-a stopped sending heartbeats at 14:02:11 UTC (lost after 60 s)"  # the reconciler's
)
KILLED = (
    "stage process killed by SIGKILL (the system may have run out of memory)\n"
    'Traceback (most recent call last):\n  File "worker/train.py", line 9\n'
    "iteration 31 of 60"
)
REPLANNED = (
    "worker mac-a holds this run's checkpoints and artifacts on its own disk and has been gone "
    "for 12 min; training again from iteration 0 on another worker"
)


# --- the lines, from plain rows ------------------------------------------------------


@dataclass
class Attempt:
    attempt: int
    worker: str
    outcome: str
    reason: str | None = None
    resumed_from: int | None = None
    started_at: datetime = T0
    ended_at: datetime | None = None


@dataclass
class Train:
    status: str = "running"
    attempt: int = 2
    resumed_from: int | None = 20
    progress: int | None = 34
    total: int | None = 60
    kind: str = "train"
    variant: str = "adapter"


def test_a_lost_attempt_and_its_resume_read_as_words() -> None:
    rows = [
        Attempt(1, "mac-a", "lost", LOST_REASON, ended_at=T0 + timedelta(minutes=2)),
        Attempt(2, "mac-b", "running", resumed_from=20),
    ]
    assert attempt_lines(Train(), rows) == [
        "attempt 1 on mac-a: lost — worker mac-a stopped sending heartbeats at 14:02:11 UTC "
        "(lost after 60 s)",
        "attempt 2 on mac-b: resumed from iteration 20 — running 34/60",
    ]
    assert progress_note(Train()) == "attempt 2, resumed from 20"
    assert run_story([(Train(), rows)]) == (
        "This run lost worker mac-a at 14:02 UTC; "
        "train resumed on mac-b from iteration 20 (attempt 2)."
    )


def test_a_killed_attempt_says_why_in_one_line_and_that_it_is_retried() -> None:
    stage = Train(status="queued", resumed_from=None, progress=31)
    rows = [
        Attempt(1, "mac-a", "lost", LOST_REASON),
        Attempt(2, "mac-b", "died", KILLED, resumed_from=20),
    ]
    lines = attempt_lines(stage, rows)
    assert lines[1] == (
        "attempt 2 on mac-b: resumed from iteration 20, then died — stage process killed by "
        "SIGKILL (the system may have run out of memory); retrying"
    )
    assert lines[2] == "attempt 3: queued, waiting for a worker"
    assert not any("Traceback" in line or "\n" in line for line in lines)
    assert progress_note(stage) == "attempt 3 queued"
    story = run_story([(stage, rows)])
    assert "train attempt 2 on mac-b died (stage process killed by SIGKILL" in story
    assert story.endswith("train is queued for attempt 3.")


def test_a_python_error_keeps_its_exception_line_and_gives_up() -> None:
    reason = "stage process exited with code 1\nTraceback …\n  File x\nValueError: bad lora rank"
    stage = Train(status="failed", attempt=1, resumed_from=None)
    (line,) = attempt_lines(stage, [Attempt(1, "mac-a", "failed", reason)])
    assert line == (
        "attempt 1 on mac-a: failed — stage process exited with code 1: ValueError: bad lora rank"
    )
    assert not has_history(stage, [Attempt(1, "mac-a", "failed", reason)])  # nothing to retell


def test_a_re_planned_run_says_it_trains_again_from_zero() -> None:
    stage = Train(status="queued", attempt=1, resumed_from=None, progress=None)
    rows = [Attempt(1, "mac-a", "done"), Attempt(1, "mac-a", "replanned", REPLANNED)]
    lines = attempt_lines(stage, rows)
    assert lines[0] == "attempt 1 on mac-a: done"
    assert lines[1].startswith("re-planned: worker mac-a holds this run's checkpoints")
    assert lines[1].endswith("training again from iteration 0 on another worker")
    assert has_history(stage, rows)
    assert run_story([(stage, rows)]) == (
        "In this run, train was re-planned: worker mac-a, which holds its checkpoints, was gone "
        "too long; train is queued for attempt 2."
    )


def test_a_first_attempt_that_runs_is_not_news() -> None:
    stage = Train(attempt=1, resumed_from=None)
    rows = [Attempt(1, "mac-a", "running")]
    assert not has_history(stage, rows)
    assert progress_note(stage) == "" and run_story([(stage, rows)]) == ""


# --- on rows the lifecycle writes ------------------------------------------------------

SPEC = """
name: resumed
base_model: org/model
dataset: {root}/data/datasets/code_mode
seeds: [1]
train: {{iters: 60, save_every: 20, steps_per_eval: 20}}
eval: {{suite: {root}/data/evals/code_mode.yaml, variants: [adapter]}}
"""


def lost_then_resumed() -> tuple[int, int, int]:
    """mac-a claims the train stage and goes silent; the reconciler gives it a new
    attempt; mac-b claims it and resumes from the checkpoint at iteration 20.
    Returns (experiment id, run id, train stage id)."""
    spec = parse_spec(SPEC.format(root=ROOT), check_files=False)
    with session_scope() as session:
        experiment = create_rows(session, spec)
        run = session.exec(select(Run).where(Run.experiment_id == experiment.id)).one()
        lifecycle.queue_train_stages(session, [run])
        train = session.exec(
            select(Stage).where(Stage.run_id == run.id, Stage.kind == "train")
        ).one()
        ids = (experiment.id or 0, run.id or 0, train.id or 0)
    with session_scope() as session:
        assert lifecycle.claim(session, ids[2], "mac-a") == 1
    with session_scope() as session:  # mac-a's last beat was five minutes ago
        stage = session.get(Stage, ids[2])
        assert stage is not None
        stage.heartbeat_at = utcnow() - timedelta(minutes=5)
        session.add(stage)
    with session_scope() as session:
        repairs = reconcile.Repairs()
        reconcile.requeue_lost_stages(session, repairs)
        assert repairs.lost_stages == [ids[2]]
    with session_scope() as session:
        assert lifecycle.claim(session, ids[2], "mac-b") == 2
        lifecycle.record_resume(session, ids[2], 2, 20)
        stage = session.get(Stage, ids[2])
        assert stage is not None
        stage.progress, stage.total = 34, 60  # what the training callback reports
        session.add(stage)
    return ids


def test_farm_status_tells_the_attempts_of_a_stage(farm_home: Path) -> None:
    experiment_id, _, _ = lost_then_resumed()
    result = CliRunner().invoke(app, ["status", str(experiment_id)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    train = next(line for line in lines if line.strip().startswith("train"))
    assert "running" in train and "34/60" in train
    assert train.endswith("34/60 · attempt 2, resumed from 20")
    below = lines[lines.index(train) + 1 : lines.index(train) + 3]
    assert below[0].startswith("      attempt 1 on mac-a: lost — worker mac-a stopped sending ")
    assert "UTC (lost after 60 s)" in below[0]
    assert below[1] == "      attempt 2 on mac-b: resumed from iteration 20 — running 34/60"
    # Stages that ran once and plainly get no such lines.
    assert sum("attempt 1 on" in line for line in lines) == 1


def test_farm_status_after_a_resumed_attempt_is_killed(farm_home: Path) -> None:
    experiment_id, _, train_id = lost_then_resumed()
    with session_scope() as session:  # the stage process on mac-b is SIGKILLed
        lifecycle.fail(session, train_id, 2, KILLED, retry=True)
    result = CliRunner().invoke(app, ["status", str(experiment_id)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    train = next(line for line in lines if line.strip().startswith("train"))
    assert "queued" in train and train.endswith("· attempt 3 queued")
    below = lines[lines.index(train) + 2 : lines.index(train) + 4]
    assert below == [
        "      attempt 2 on mac-b: resumed from iteration 20, then died — stage process killed "
        "by SIGKILL (the system may have run out of memory); retrying",
        "      attempt 3: queued, waiting for a worker",
    ]
    assert "Traceback" not in result.output


def test_farm_status_json_lists_every_attempt(farm_home: Path) -> None:
    experiment_id, _, train_id = lost_then_resumed()
    result = CliRunner().invoke(app, ["status", str(experiment_id), "--json"])
    assert result.exit_code == 0, result.output
    stages = json.loads(result.output)["runs"][0]["stages"]
    train = next(s for s in stages if s["id"] == train_id)
    assert train["attempt"] == 2 and train["resumed_from"] == 20
    first, second = train["attempts"]
    assert {k: first[k] for k in ("attempt", "worker", "outcome", "resumed_from")} == {
        "attempt": 1, "worker": "mac-a", "outcome": "lost", "resumed_from": None,
    }  # fmt: skip
    assert first["reason"].startswith("worker mac-a stopped sending heartbeats at ")
    assert first["started_at"] and first["ended_at"]
    assert {k: second[k] for k in ("attempt", "worker", "outcome", "resumed_from")} == {
        "attempt": 2, "worker": "mac-b", "outcome": "running", "resumed_from": 20,
    }  # fmt: skip
    assert second["reason"] is None and second["ended_at"] is None
    evaluation = next(s for s in stages if s["kind"] == "eval")
    assert evaluation["attempt"] == 0 and evaluation["attempts"] == []


def test_runs_page_shows_the_attempt_and_the_resume(farm_home: Path) -> None:
    lost_then_resumed()
    at = open_page("views/runs.py")
    assert [bar.text for bar in at.progress] == ["train 34/60 · attempt 2, resumed from 20"]


def test_run_page_tells_what_the_run_went_through(farm_home: Path) -> None:
    _, run_id, _ = lost_then_resumed()
    at = open_page("views/run.py", run=str(run_id))
    (story,) = [shown(i.value) for i in at.info if "lost worker" in shown(i.value)]
    assert story.startswith("This run lost worker mac-a at ")
    assert story.endswith("; train resumed on mac-b from iteration 20 (attempt 2).")
    (history,) = [e for e in at.expander if e.label == "train: attempt 2, resumed from 20"]
    lines = [t.value for t in history.text]
    assert lines[0].startswith("attempt 1 on mac-a: lost — worker mac-a stopped sending ")
    assert lines[1] == "attempt 2 on mac-b: resumed from iteration 20 — running 34/60"
    stages = next(d for d in at.dataframe if "attempt" in d.value.columns).value
    train = stages.set_index("stage").loc["train"]
    assert train["attempt"] == 2 and train["resumed_from"] == 20


def test_run_page_of_a_re_planned_run(farm_home: Path) -> None:
    spec = parse_spec(SPEC.format(root=ROOT), check_files=False)
    with session_scope() as session:
        experiment = create_rows(session, spec)
        run = session.exec(select(Run).where(Run.experiment_id == experiment.id)).one()
        lifecycle.queue_train_stages(session, [run])
        train = session.exec(
            select(Stage).where(Stage.run_id == run.id, Stage.kind == "train")
        ).one()
        run_id, train_id = run.id or 0, train.id or 0
    with session_scope() as session:
        lifecycle.claim(session, train_id, "mac-a")
        lifecycle.finish(session, train_id, 1)
    with session_scope() as session:  # mac-a, holding the adapter, never came back
        run = session.get(Run, run_id)
        assert run is not None
        replan.replan_run(session, run, REPLANNED)
    at = open_page("views/run.py", run=str(run_id))
    (story,) = [shown(i.value) for i in at.info if "re-planned" in shown(i.value)]
    assert story.startswith("In this run, train was re-planned at ")
    assert story.endswith("worker mac-a, which holds its checkpoints, was gone too long; "
                          "train is queued for attempt 2.")  # fmt: skip
    (history,) = [e for e in at.expander if e.label == "train: attempt 2 queued"]
    assert [t.value for t in history.text] == [
        "attempt 1 on mac-a: done",
        f"re-planned: {REPLANNED}",
        "attempt 2: queued, waiting for a worker",
    ]


def test_run_page_of_a_plain_run_has_no_story(farm_home: Path) -> None:
    spec = parse_spec(SPEC.format(root=ROOT), check_files=False)
    with session_scope() as session:
        experiment = create_rows(session, spec)
        run = session.exec(select(Run).where(Run.experiment_id == experiment.id)).one()
        run_id = run.id or 0
    at = open_page("views/run.py", run=str(run_id))
    assert "lost worker" not in texts(at) and "In this run" not in texts(at)
    assert not [e for e in at.expander if "attempt" in e.label]


def test_workers_page_says_which_worker_is_lost_and_since_when(farm_home: Path) -> None:
    with session_scope() as session:
        session.add(WorkerRow(name="mac-a", host="mac-a.lan", memory_gb=64, status="busy"))
        session.add(WorkerRow(name="mac-b", host="mac-b.lan", memory_gb=16, status="busy",
                              last_heartbeat=utcnow() - timedelta(minutes=10)))  # fmt: skip
    at = open_page("views/workers.py")
    (warning,) = [shown(w.value) for w in at.warning]
    assert warning.startswith("mac-b (last heartbeat 10m 0")
    assert "is lost: crashed, asleep or off the network" in warning and "mac-a" not in warning
    rows = next(d for d in at.dataframe if "heartbeat_s" in d.value.columns).value
    assert rows.set_index("name").loc["mac-b", "status"] == "lost"


def test_workers_page_says_a_revoked_mac_was_shut_out_not_lost(farm_home: Path) -> None:
    with session_scope() as session:
        for name in ("mac-a", "mac-b", "mac-c"):
            session.add(WorkerRow(name=name, host=f"{name}.lan", memory_gb=16, status="busy",
                                  last_heartbeat=utcnow() - timedelta(minutes=10)))  # fmt: skip
        session.add(WorkerCredential(name="mac-a", redis_user="farm-worker-mac-a",
                                     redis_password_sha256="0" * 64))  # fmt: skip
        session.add(WorkerCredential(name="mac-b", redis_user="farm-worker-mac-b",
                                     redis_password_sha256="0" * 64,
                                     revoked_at=utcnow()))  # fmt: skip
    at = open_page("views/workers.py")
    (warning,) = [shown(w.value) for w in at.warning]
    assert "mac-b was shut out (farm workers revoke)" in warning.replace("`", "")
    lost_part = warning.split(" mac-b was shut out")[0]
    assert "mac-a" in lost_part and "mac-c" in lost_part and "mac-b" not in lost_part
    rows = next(d for d in at.dataframe if "heartbeat_s" in d.value.columns).value
    assert rows.set_index("name")["access"].to_dict() == {
        "mac-a": "join token", "mac-b": "revoked", "mac-c": "URLs"}  # fmt: skip
