"""Queue quotas (FARM_MAX_QUEUED_RUNS, FARM_MAX_QUEUED_RUNS_PER_SUBMITTER): a
submission that would go over is refused like other invalid input — exit 2 from
`farm submit` with one line naming the quota, the count and the setting, the same
line in the web form, and nothing written to the database or Redis. Real
SQLite/PostgreSQL and Redis."""

from __future__ import annotations

import getpass
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from redis import Redis
from sqlmodel import select, update

from jobs.db import Experiment, Run, session_scope
from jobs.experiment_spec import load_spec
from jobs.limits import QuotaError
from jobs.submit import submit_experiment, unfinished_runs
from tests.support import PROJECT_ROOT
from tests.support.spec_files import write_spec
from web import form_bounds, forms
from web.form_bounds import WEB_SUBMITTER

# A Redis database of these tests' own: "nothing written to Redis" is a comparison
# of its keys, which tests of other modules running at the same time on the shared
# test database would disturb.
QUOTA_REDIS_URL = "redis://127.0.0.1:6379/7"


@pytest.fixture
def redis_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    redis = Redis.from_url(QUOTA_REDIS_URL)
    redis.flushdb()
    monkeypatch.setenv("REDIS_URL", QUOTA_REDIS_URL)
    yield QUOTA_REDIS_URL
    redis.flushdb()


def farm_submit(spec: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "submit", str(spec)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
    )


def experiments() -> list[Experiment]:
    with session_scope() as session:
        return list(session.exec(select(Experiment)).all())


def test_farm_submit_over_the_farm_quota_exits_2_and_writes_nothing(
    farm_home: Path,
    redis_url: str,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FARM_MAX_QUEUED_RUNS", "4")
    first = farm_submit(write_spec(tmp_path / "three.yaml", tiny_model, seeds=[1, 2, 3]))
    assert first.returncode == 0, first.stderr
    [experiment] = experiments()
    assert experiment.submitter == getpass.getuser()  # the CLI's submitter is the OS user

    redis = Redis.from_url(redis_url)
    keys_before = set(redis.keys())
    refused = farm_submit(write_spec(tmp_path / "two.yaml", tiny_model, seeds=[4, 5]))
    assert refused.returncode == 2, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if "quota" in line]
    assert lines == [
        "farm: quota FARM_MAX_QUEUED_RUNS: 3 runs are queued or running on the farm and this "
        "submission adds 2, at most 4 allowed — wait for runs to finish, cancel some "
        "(`farm cancel ID`), or raise FARM_MAX_QUEUED_RUNS"
    ], refused.stderr
    assert "Traceback" not in refused.stderr
    assert [e.id for e in experiments()] == [experiment.id]
    with session_scope() as session:
        assert len(session.exec(select(Run)).all()) == 3
    assert set(redis.keys()) - keys_before == set()


def test_the_per_submitter_quota_counts_only_unfinished_runs_of_that_submitter(
    database: str,
    redis_url: str,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FARM_MAX_QUEUED_RUNS", "100")
    monkeypatch.setenv("FARM_MAX_QUEUED_RUNS_PER_SUBMITTER", "3")
    redis = Redis.from_url(redis_url)
    three = load_spec(write_spec(tmp_path / "three.yaml", tiny_model, seeds=[1, 2, 3]))
    one = load_spec(write_spec(tmp_path / "one.yaml", tiny_model, seeds=[7]))

    submit_experiment(three, redis, submitter="alice")
    with pytest.raises(QuotaError) as refused:
        submit_experiment(one, redis, submitter="alice")
    assert str(refused.value) == (
        "farm: quota FARM_MAX_QUEUED_RUNS_PER_SUBMITTER: 3 runs are queued or running "
        "submitted by alice and this submission adds 1, at most 3 allowed — wait for runs "
        "to finish, cancel some (`farm cancel ID`), or raise FARM_MAX_QUEUED_RUNS_PER_SUBMITTER"
    )
    assert len(experiments()) == 1
    submit_experiment(one, redis, submitter="bob")  # bob's share is his own

    with session_scope() as session:
        assert unfinished_runs(session) == 4
        assert unfinished_runs(session, "alice") == 3
        session.exec(update(Run).where(Run.seed == 1).values(status="done"))  # type: ignore[call-overload]
    submit_experiment(one, redis, submitter="alice")  # a finished run frees its place
    with session_scope() as session:
        assert unfinished_runs(session, "alice") == 3


def test_the_web_form_shows_the_same_line_and_writes_nothing(
    farm_home: Path,
    redis_url: str,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FARM_MAX_QUEUED_RUNS_PER_SUBMITTER", "2")
    spec = write_spec(tmp_path / "spec.yaml", tiny_model, seeds=[1, 2])
    values, _ = forms.spec_dict_to_form(yaml.safe_load(spec.read_text()))
    redis = Redis.from_url(redis_url)

    accepted = form_bounds.submit_form(values, redis)
    assert accepted.experiment_id is not None, accepted.problems
    [experiment] = experiments()
    assert experiment.submitter == WEB_SUBMITTER

    keys_before = set(redis.keys())
    refused = form_bounds.submit_form(values, redis)
    assert refused.experiment_id is None
    assert refused.messages(forms.GENERAL) == [
        "farm: quota FARM_MAX_QUEUED_RUNS_PER_SUBMITTER: 2 runs are queued or running "
        "submitted by web and this submission adds 2, at most 2 allowed — wait for runs "
        "to finish, cancel some (`farm cancel ID`), or raise FARM_MAX_QUEUED_RUNS_PER_SUBMITTER"
    ]
    assert not refused.ok
    assert len(experiments()) == 1
    assert set(redis.keys()) - keys_before == set()


def test_seeds_added_to_an_experiment_count_against_the_quotas(
    farm_home: Path,
    redis_url: str,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from jobs.seeds import add_seeds

    monkeypatch.setenv("FARM_MAX_QUEUED_RUNS_PER_SUBMITTER", "3")
    redis = Redis.from_url(redis_url)
    spec = load_spec(write_spec(tmp_path / "two.yaml", tiny_model, seeds=[1, 2]))
    experiment_id = submit_experiment(spec, redis, submitter="alice")
    with pytest.raises(QuotaError) as refused:
        add_seeds(experiment_id, 2, redis)
    assert "2 runs are queued or running submitted by alice and this submission adds 2" in str(
        refused.value
    )
    with session_scope() as session:
        assert len(session.exec(select(Run)).all()) == 2
    assert len(add_seeds(experiment_id, 1, redis)) == 1
