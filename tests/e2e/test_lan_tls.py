"""TLS between the Macs: a worker in its own network namespace trains a run
with Redis and PostgreSQL reached over TLS only, with the coordinator's
certificate from `farm tls`, and what crosses its cable is read back from a
packet capture. A worker that trusts another CA is refused in one line."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlmodel import select

from jobs.connection_errors import describe
from jobs.db import Run, Stage, session_scope
from tests.support import PROJECT_ROOT
from tests.support.farm import submit
from tests.support.netns import capture, one_lan_at_a_time, private_tempdir, send_marker
from tests.support.netns_farm import Farm, build_farm, run_teardown
from tests.support.processes import wait_until
from tests.support.spec_files import write_spec
from tools.local.tls import coordinator_tls

pytestmark = pytest.mark.netns

ONLY_ADAPTER = {"quantize": [], "fuse": None, "eval": {"variants": ["adapter"]}}


@pytest.fixture
def tls_farm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Farm]:
    steps: list = []
    with one_lan_at_a_time():
        try:
            yield build_farm(tmp_path, monkeypatch, shared=False, teardown=steps, tls=True)
        finally:
            run_teardown(steps)


def run_done(experiment_id: int) -> bool:
    with session_scope() as session:
        run = session.exec(select(Run).where(Run.experiment_id == experiment_id)).one()
        return run.status == "done"


def test_a_worker_trains_over_tls_and_its_cable_carries_no_secret_job_or_sql_in_clear(
    tls_farm: Farm, tiny_model: Path, tmp_path: Path
) -> None:
    experiment_id = submit(write_spec(tmp_path / "s.yaml", tiny_model, **ONLY_ADAPTER))
    marker = f"clear-text-marker-{uuid.uuid4().hex}"
    with capture(tls_farm.network, "w1", tmp_path / "w1.frames") as frames:
        tls_farm.start_worker("w1")
        wait_until(lambda: run_done(experiment_id), timeout=180, what="the run over TLS")
        send_marker(tls_farm.network, "w1", marker)
    seen = frames.read_bytes()
    assert marker.encode() in seen  # the capture reads this cable, in clear
    assert len(seen) > 50_000  # the run's traffic went through it
    with session_scope() as session:
        stage = session.exec(select(Stage).where(Stage.kind == "train")).one()
    secrets_and_payloads = {
        "the Redis password": tls_farm.redis.password.encode(),
        "the job's function": b"run_stage",
        "the job's id": (stage.rq_job_id or "").encode(),
        "RQ's queue names": b"farm:mem:",
        "SQL": b"INSERT INTO",
        "SQL updates": b"UPDATE stage",
        "the database's name": b"lorafarm",
        "the run's spec": b"code_mode",
    }
    leaked = [what for what, text in secrets_and_payloads.items() if text in seen]
    assert not leaked, leaked


def test_a_worker_that_trusts_another_ca_is_refused_in_one_line(
    tls_farm: Farm, tmp_path: Path
) -> None:
    other = coordinator_tls(private_tempdir("lorafarm-other-ca-") / "tls", ["10.0.0.1"])
    link = tls_farm.network.links["w2"].number
    env = {
        "REDIS_URL": tls_farm.redis.url(link, ca=other.ca),
        "DATABASE_URL": tls_farm.postgres.url(link, ca=other.ca),
        "FARM_HOME": str(tmp_path / "w2-home"),
    }
    refused = subprocess.run(
        ["ip", "netns", "exec", tls_farm.network.netns_of("w2"), sys.executable, "-m",
         "tools.cli", "worker", "--name", "w2"],
        env={**_base_env(), **env}, capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert refused.returncode == 1
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("cannot use the database postgresql://postgres@")
    assert "does not chain to the CA this Mac trusts" in lines[0]
    assert tls_farm.redis.password not in refused.stderr + refused.stdout
    # Redis refuses the same way, in the same words.
    with pytest.raises(RedisConnectionError) as failed:
        Redis.from_url(tls_farm.redis.url(0, ca=other.ca), socket_timeout=5).ping()
    line = describe(failed.value)
    assert line is not None and "does not chain to the CA this Mac trusts" in line
    assert tls_farm.redis.password not in line


def _base_env() -> dict[str, str]:
    from tests.support.netns import worker_base_env

    return worker_base_env()


def test_farm_web_tls_serves_https_with_the_coordinators_certificate_only(
    farm_home: Path,
) -> None:
    import ssl
    import urllib.error
    import urllib.request

    from tools.local.services import free_port

    files = coordinator_tls(farm_home / "tls", ["127.0.0.1"])
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "web", "--tls", "--port", str(port)],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    trusting = ssl.create_default_context(cafile=str(files.ca))

    def health(url: str, context: ssl.SSLContext | None = None) -> bytes:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2, context=context) as r:
            return r.read().strip()

    try:
        wait_until(lambda: _answers(lambda: health(f"https://127.0.0.1:{port}", trusting)),
                   timeout=60, what="https")  # fmt: skip
        assert health(f"https://127.0.0.1:{port}", trusting) == b"ok"
        with pytest.raises(OSError):  # no plain http next to it
            health(f"http://127.0.0.1:{port}")
        other = coordinator_tls(farm_home / "other-tls", ["127.0.0.1"])
        with pytest.raises(urllib.error.URLError) as refused:
            health(f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=str(other.ca)))
        assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    finally:
        web.terminate()
        web.wait(timeout=20)


def _answers(probe) -> bool:  # type: ignore[no-untyped-def]
    try:
        probe()
    except OSError:
        return False
    return True
