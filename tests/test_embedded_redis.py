"""The Redis `farm up` starts: a random password, loopback only, nothing in argv."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from redis import Redis
from redis.exceptions import AuthenticationError, ResponseError
from rq import Queue
from rq.serializers import JSONSerializer

from jobs.services import EmbeddedRedis, start_embedded_redis


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = start_embedded_redis(tmp_path / "redis")
    yield server
    server.stop()


def test_it_requires_its_password(embedded: EmbeddedRedis) -> None:
    parts = urlsplit(embedded.url)
    assert parts.password and len(parts.password) >= 32
    anonymous = Redis(host="127.0.0.1", port=parts.port, protocol=2)
    with pytest.raises((AuthenticationError, ResponseError), match="NOAUTH|[Aa]uthentication"):
        anonymous.set("job", "injected")
    wrong = Redis(host="127.0.0.1", port=parts.port, password="guess")
    with pytest.raises((AuthenticationError, ResponseError)):
        wrong.ping()
    assert Redis.from_url(embedded.url).ping()


def test_each_start_gets_a_new_password(tmp_path: Path, embedded: EmbeddedRedis) -> None:
    other = start_embedded_redis(tmp_path / "other")
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


def test_it_is_gone_once_stopped(tmp_path: Path) -> None:
    server = start_embedded_redis(tmp_path / "redis")
    pid = server.process.pid
    server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(Exception, match="[Cc]onnect"):
        Redis.from_url(server.url, socket_connect_timeout=1).ping()
