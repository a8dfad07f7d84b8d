"""Shared fixtures: real Redis, real SQLite/PostgreSQL, the tiny model, real workers.

Nothing here is mocked. Redis and PostgreSQL are the servers on 127.0.0.1
(`.ci/run` starts them if they are down); a missing service fails the tests
rather than skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from jobs import db
from tests.support.processes import Workers

# Each pytest-xdist worker (gw0, gw1, …) flushes a Redis database of its own:
# 13, 12, 11, … so parallel tests never see each other's jobs.
_XDIST_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_TEST_URL = os.environ.get(
    "FARM_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{13 - _XDIST_WORKER % 13}"
)
POSTGRES_ADMIN_URL = os.environ.get(
    "FARM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen3-architecture model, built once per test session."""
    from tools.local.tiny_model import make_tiny_model

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


def empty_schema(url: str) -> str:
    """The throwaway PostgreSQL database with every farm table dropped."""
    from sqlmodel import SQLModel

    db.dispose_engines()
    engine = db.get_engine(url)
    SQLModel.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    return url


@pytest.fixture
def postgres_farm_home(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A fresh FARM_HOME whose database is PostgreSQL, as on a LAN farm."""
    home = tmp_path / "farm"
    home.mkdir()
    monkeypatch.setenv("FARM_HOME", str(home))
    monkeypatch.setenv("DATABASE_URL", empty_schema(postgres_url))
    monkeypatch.delenv("FARM_SHARED_ARTIFACTS", raising=False)
    db.migrate()
    yield home
    db.dispose_engines()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The data layer under test, on both backends; a clean schema each time."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'farm.db'}"
    else:
        url = empty_schema(request.getfixturevalue("postgres_url"))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "farm"))
    db.dispose_engines()
    db.migrate(url)
    yield url
    db.dispose_engines()


@pytest.fixture
def workers(farm_home: Path, redis_url: str) -> Iterator[Workers]:
    pool = Workers(farm_home)
    yield pool
    pool.stop_all()


@pytest.fixture(autouse=True)
def _steady_network_for_browser_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """A browser test runs while no network test plugs or unplugs a cable of
    this machine's own namespace (Chromium would drop its pages' connections)."""
    if request.node.get_closest_marker("browser") is None:
        yield
        return
    from tests.support.netns import steady_root_network

    with steady_root_network():
        yield
