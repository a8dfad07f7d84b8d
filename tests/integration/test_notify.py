"""Notifications with the real database, a real local HTTP receiver and the
reconciler's own process: one message per event across restarts, retried until
the receiver takes it, never held by a receiver that does not answer, and a
URL that is not http(s) refused at submit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from jobs.db import Experiment, Notification, Run, Stage, session_scope, utcnow
from jobs.notify import SEND_TIMEOUT_S, deliver_pending, experiment_outcome, notify_pass
from tests.support.receiver import receiver
from tests.support.spec_files import write_spec
from tests.support.verdicts import finish, submit
from tests.support.web import install_model
from tools.cli import app

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_the_outcome_of_an_experiment_from_its_runs() -> None:
    assert experiment_outcome(["done", "done"]) == "finished"
    assert experiment_outcome(["done", "running"]) is None
    assert experiment_outcome(["done", "failed", "cancelled"]) == "failed"
    assert experiment_outcome(["done", "cancelled"]) == "cancelled"
    assert experiment_outcome([]) is None


def test_a_notify_url_that_is_not_http_is_refused_at_submit(
    farm_home: Path, redis_url: str, tiny_model: Path, tmp_path: Path
) -> None:
    for url, says in (("file:///etc/passwd", "http:// or https://"),
                      ("https://", "needs a host"), ("https://a b", "spaces")):  # fmt: skip
        spec = write_spec(tmp_path / "s.yaml", tiny_model, notify={"url": url})
        result = CliRunner().invoke(app, ["submit", str(spec)])
        assert result.exit_code == 2, result.output
        assert "notify.url" in result.output and says in result.output
    with session_scope() as session:
        assert session.exec(select(Experiment)).all() == []


def _reconcile_in_its_own_process() -> None:
    """A pass the way a worker's reconciler child runs it (a restart each time)."""
    subprocess.run([sys.executable, "-m", "jobs.reconcile"], cwd=PROJECT_ROOT,
                   env=dict(os.environ), check=True, timeout=120)  # fmt: skip


def test_each_event_reaches_the_receiver_once_across_restarts(
    farm_home: Path, redis_url: str, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = install_model(farm_home, tiny_model)
    with receiver() as hook:
        monkeypatch.setenv("FARM_NOTIFY_URL", hook.url)
        done = submit(model, redis_url, "overnight", 2e-4, "1-2")
        finish(done, {1: 0.7, 2: 0.5})
        running = submit(model, redis_url, "still-going", 2e-4, "1")
        with session_scope() as session:
            run = session.exec(select(Run).where(Run.experiment_id == done)).first()
            assert run is not None
            train = session.exec(
                select(Stage).where(Stage.run_id == run.id, Stage.kind == "train")
            ).one()
            train.early_stop, train.finished_at = "locked: adherence ≥ 0.90", utcnow()
            session.add(train)
        for _ in range(3):  # three passes, each in a process of its own
            _reconcile_in_its_own_process()
        events = sorted(message["event"] for message in hook.received)
        assert events == ["experiment.finished", "run.stopped_early"]
        (ended,) = [m for m in hook.received if m["event"] == "experiment.finished"]
        assert ended["experiment"] == done and ended["experiment"] != running
        assert ended["text"].startswith(f"lorafarm: experiment overnight (#{done}) finished")
        assert "adapter adherence 0.60 (0.50–0.70 over 2 seeds)" in ended["text"]
        with session_scope() as session:
            notes = session.exec(select(Notification)).all()
        assert all(n.delivered_at is not None and n.attempts == 1 for n in notes)


def test_a_receiver_that_fails_three_times_still_gets_it(
    farm_home: Path, redis_url: str, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = install_model(farm_home, tiny_model)
    with receiver(answers=[500, 500, 500]) as hook:
        monkeypatch.setenv("FARM_NOTIFY_URL", hook.url)
        finish(submit(model, redis_url, "flaky", 2e-4, "1"), {1: 0.5})
        with session_scope() as session:
            assert notify_pass(session) == []  # first answer: 500
            for _ in range(5):  # later passes, once each retry is due
                deliver_pending(session, now=utcnow() + timedelta(hours=1))
            (note,) = session.exec(select(Notification)).all()
        assert note.delivered_at is not None and note.attempts == 4
        assert len(hook.received) == 4  # three refused, one taken; none after


def test_a_receiver_that_never_answers_holds_one_send_not_the_farm(
    farm_home: Path, redis_url: str, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = install_model(farm_home, tiny_model)
    with receiver(hang_s=60) as hook:
        monkeypatch.setenv("FARM_NOTIFY_URL", hook.url)
        finish(submit(model, redis_url, "silent", 2e-4, "1"), {1: 0.5})
        started = time.monotonic()
        with session_scope() as session:
            assert notify_pass(session) == []
            (note,) = session.exec(select(Notification)).all()
        assert time.monotonic() - started < SEND_TIMEOUT_S + 5
        assert note.delivered_at is None and note.attempts == 1
        assert (
            "timed out" in (note.last_error or "").lower()
            or "timeout" in (note.last_error or "").lower()
        )
        assert note.next_try_at is not None and note.next_try_at > note.created_at
