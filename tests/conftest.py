"""Shared fixtures: real Redis, real SQLite/PostgreSQL, the tiny model, real workers.

Nothing here is mocked. Redis and PostgreSQL are the servers on 127.0.0.1
(`.ci/run` starts them if they are down); a missing service fails the tests
rather than skipping them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from redis import Redis

from jobs import db

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REDIS_TEST_URL = os.environ.get("FARM_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
POSTGRES_ADMIN_URL = os.environ.get(
    "FARM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen3-architecture model, built once per test session."""
    from jobs.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen3")


@pytest.fixture
def farm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh FARM_HOME with its own SQLite database."""
    home = tmp_path / "farm"
    monkeypatch.setenv("FARM_HOME", str(home))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{home / 'farm.db'}")
    monkeypatch.delenv("FARM_SHARED_ARTIFACTS", raising=False)
    db.dispose_engines()
    db.migrate()
    yield home
    db.dispose_engines()


@pytest.fixture
def redis_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    redis = Redis.from_url(REDIS_TEST_URL)
    redis.ping()  # a Redis that is down is a failure, not a skip
    redis.flushdb()
    monkeypatch.setenv("REDIS_URL", REDIS_TEST_URL)
    yield REDIS_TEST_URL
    redis.flushdb()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database on the local server."""
    import psycopg

    name = f"lorafarm_test_{uuid.uuid4().hex[:8]}"
    admin = POSTGRES_ADMIN_URL
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    yield url
    db.dispose_engines()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The data layer under test, on both backends; a clean schema each time."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'farm.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        from sqlmodel import SQLModel

        db.dispose_engines()
        engine = db.get_engine(url)
        SQLModel.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "farm"))
    db.dispose_engines()
    db.migrate(url)
    yield url
    db.dispose_engines()


def write_spec(path: Path, model: Path, **overrides: object) -> Path:
    """A small spec over the demo data that runs in seconds on the tiny model."""
    spec: dict[str, object] = {
        "name": "test-spec",
        "base_model": str(model),
        "dataset": str(PROJECT_ROOT / "data" / "datasets" / "code_mode"),
        "seeds": [1],
        "train": {
            "iters": 6,
            "batch_size": 2,
            "learning_rate": 1e-3,
            "num_layers": -1,
            "steps_per_report": 2,
            "steps_per_eval": 3,
            "val_batches": 2,
            "save_every": 3,
            "max_seq_length": 512,
            "lora": {"rank": 4, "scale": 10.0, "dropout": 0.0},
        },
        "fuse": {"dequantize": True},
        "quantize": [{"bits": 8, "group_size": 64}],
        "eval": {
            "suite": str(PROJECT_ROOT / "data" / "evals" / "code_mode.yaml"),
            "variants": ["adapter", "fused", "quantized"],
            "max_tokens": 24,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            merged = dict(spec[key])  # type: ignore[arg-type]
            merged.update(value)
            spec[key] = merged
        else:
            spec[key] = value
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class Workers:
    """Real `farm worker` processes, stopped (with their children) at teardown."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        name: str,
        memory_gb: float = 16.0,
        env: dict[str, str] | None = None,
        burst: bool = False,
    ) -> subprocess.Popen[bytes]:
        log = open(self.home / f"worker-{name}.log", "ab")
        argv = [
            sys.executable,
            "-m",
            "jobs.cli",
            "worker",
            "--name",
            name,
            "--memory-gb",
            str(memory_gb),
        ] + (["--burst"] if burst else [])
        process = subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=PROJECT_ROOT,
        )
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.home / f"worker-{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                for child in psutil.Process(process.pid).children(recursive=True):
                    child.kill()
                process.kill()
                process.wait()


@pytest.fixture
def workers(farm_home: Path, redis_url: str) -> Iterator[Workers]:
    pool = Workers(farm_home)
    yield pool
    pool.stop_all()


def wait_until(predicate, timeout: float = 120.0, interval: float = 0.25, what: str = ""):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
