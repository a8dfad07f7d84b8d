"""Joining a LAN farm with one line: `farm up --lan` on the coordinator prints a
token per Mac; `farm worker --join TOKEN` on the Mac pins the coordinator's CA
and keeps its own credential; `farm workers revoke NAME` shuts one Mac out.

Network namespaces play the Macs (`tests.support.netns`): `farm up --lan` runs
in the coordinator's, with its embedded Redis on the LAN over TLS and a
PostgreSQL served with the farm's certificate, where only the postgres role is
trusted and every Mac's role logs in with its password. The test process is
one more host that joined with a token of its own.
"""

from __future__ import annotations

import dataclasses
import json
import re
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from redis import Redis
from redis.exceptions import AuthenticationError, ResponseError

from jobs import db
from jobs.join_token import JoinToken, decode_token, encode_token, fingerprint
from tests.e2e.test_partition import (
    checkpoint_reached,
    outcome_of,
    run_done,
    train_stage,
    trained_iterations,
)
from tests.support import PROJECT_ROOT
from tests.support.farm import attempts_of, submit
from tests.support.faults import record_timing
from tests.support.netns import (
    POSTGRES_PORT,
    REDIS_PORT,
    CoordPostgres,
    NetnsWorkers,
    Network,
    capture,
    coord_address,
    one_lan_at_a_time,
    private_tempdir,
    send_marker,
    sh,
    worker_base_env,
)
from tests.support.netns_farm import LOST_AFTER_S, RECONCILE_EVERY_S, remove_dirs, run_teardown
from tests.support.processes import wait_until
from tests.support.spec_files import write_spec
from tools.local.tls import coordinator_tls

pytestmark = pytest.mark.netns

ONLY_ADAPTER = {"quantize": [], "fuse": None, "eval": {"variants": ["adapter"]}}
MACS = ("w1", "w2", "tester")


@dataclass
class LanFarm:
    network: Network
    home: Path  # the coordinator's FARM_HOME
    database_url: str  # the coordinator's own (postgres, over coord's loopback)
    tokens: dict[str, str]
    workers: NetnsWorkers
    settings: dict[str, str]
    ca: Path  # the tester's copy of the CA its token carries

    def token(self, name: str) -> JoinToken:
        return decode_token(self.tokens[name])

    def start_worker(self, name: str, token: str | None = None) -> subprocess.Popen[bytes]:
        return self.workers.start(name, self.settings, extra=("--join", token or self.tokens[name]))

    def on_coordinator(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """A `farm` command run on the coordinator, as its user would."""
        return subprocess.run(
            ["ip", "netns", "exec", self.network.coord, sys.executable, "-m", "tools.cli", *argv],
            env={**worker_base_env(), "FARM_HOME": str(self.home),
                 "DATABASE_URL": self.database_url},
            capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
        )  # fmt: skip


@pytest.fixture
def lan_farm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LanFarm]:
    steps: list = []
    with one_lan_at_a_time():
        try:
            yield _build(tmp_path, monkeypatch, steps)
        finally:
            run_teardown(steps)


def _build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: list) -> LanFarm:
    network = Network(["w1", "w2"])
    steps.append(network.destroy)
    network.build()
    home, pg_dir = private_tempdir("lorafarm-coord-"), private_tempdir("lorafarm-pg-")
    steps.append(lambda: remove_dirs(home, pg_dir))
    # As `farm tls` would before PostgreSQL is set up; `farm up --lan` keeps the CA.
    addresses = network.coord_addresses()
    files = coordinator_tls(home / "tls", [*addresses, "127.0.0.1"])
    postgres = CoordPostgres(network, pg_dir, files, passwords=True)
    steps.append(postgres.stop)
    postgres.start()
    database_url = f"postgresql://postgres@127.0.0.1:{POSTGRES_PORT}/lorafarm"
    settings = {"FARM_LOST_AFTER_S": str(LOST_AFTER_S),
                "FARM_RECONCILE_EVERY_S": str(RECONCILE_EVERY_S),
                "FARM_SHARED_ARTIFACTS": str(tmp_path / "shared-artifacts")}  # fmt: skip
    log = tmp_path / "up.log"
    lan = [flag for address in addresses for flag in ("--lan", address)]
    joins = [flag for name in MACS for flag in ("--join", name)]
    up = subprocess.Popen(
        ["ip", "netns", "exec", network.coord, sys.executable, "-m", "tools.cli", "up", *lan,
         *joins, "--workers", "0", "--redis-port", str(REDIS_PORT), "--port", "8599"],
        env={**worker_base_env(), **settings, "FARM_HOME": str(home),
             "DATABASE_URL": database_url, "FARM_UI_PASSWORD": uuid.uuid4().hex},
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        cwd=PROJECT_ROOT,
    )  # fmt: skip
    steps.append(lambda: _stop(up))
    wait_until(lambda: "more Macs:" in log.read_text() or up.poll() is not None,
               timeout=90, what="farm up --lan")  # fmt: skip
    printed = log.read_text()
    tokens = dict(re.findall(r"on (\S+):  farm worker --join (lorafarm1\.\S+)", printed))
    assert set(tokens) == set(MACS), printed
    assert "warning" not in printed, printed  # PostgreSQL serves the farm's certificate
    workers = NetnsWorkers(network, tmp_path)
    steps.append(workers.stop_all)
    # This process is a Mac that joined too: it submits and reads as "tester".
    tester = decode_token(tokens["tester"])
    ca = tmp_path / "tester-ca.pem"
    ca.write_text(ssl.DER_cert_to_PEM_cert(tester.ca_der))
    for name, value in {
        **settings,
        "REDIS_URL": tester.redis_url(coord_address(0), str(ca)),
        "DATABASE_URL": tester.database_url(coord_address(0), str(ca)),
        "FARM_HOME": str(tmp_path / "tester-home"),
    }.items():
        monkeypatch.setenv(name, value)
    steps.append(db.dispose_engines)
    db.dispose_engines()
    return LanFarm(network, home, database_url, tokens, workers, settings, ca)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()  # farm up stops its Redis and UI on SIGTERM
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sh("kill", "-9", f"-{process.pid}", check=False)


def test_a_mac_joins_with_its_token_and_trains_over_tls_with_nothing_in_clear(
    lan_farm: LanFarm, tiny_model: Path, tmp_path: Path
) -> None:
    farm = lan_farm
    experiment_id = submit(write_spec(tmp_path / "s.yaml", tiny_model, **ONLY_ADAPTER))
    w1 = farm.token("w1")
    marker = f"clear-text-marker-{uuid.uuid4().hex}"
    with capture(farm.network, "w1", tmp_path / "w1.frames") as frames:
        process = farm.start_worker("w1")
        wait_until(lambda: run_done(experiment_id), timeout=180, what="the run over TLS")
        send_marker(farm.network, "w1", marker)
    seen = frames.read_bytes()
    assert marker.encode() in seen and len(seen) > 50_000  # the capture reads this cable
    stage = train_stage(experiment_id)
    in_clear = {
        "w1's Redis password": w1.redis_password.encode(),
        "w1's database password": w1.db_password.encode(),
        "the join token": farm.tokens["w1"][10:60].encode(),
        "the job's function": b"run_stage",
        "the job's id": (stage.rq_job_id or "").encode(),
        "RQ's queue names": b"farm:mem:",
        "SQL": b"INSERT INTO",
        "SQL updates": b"UPDATE stage",
        "the run's spec": b"code_mode",
    }
    assert not [what for what, text in in_clear.items() if text in seen]
    assert attempts_of(stage.id or 0)[0].worker == "w1"

    # The token is in no command line (the worker started again without it),
    # no log, and kept readable by its owner only.
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    command_lines = " ".join(" ".join(p.cmdline()) for p in tree)
    assert "worker" in command_lines and "lorafarm1." not in command_lines
    assert w1.redis_password not in command_lines and w1.db_password not in command_lines
    log = farm.workers.log("w1")
    assert "joined the farm" in log and "its CA's sha256 is " + w1.ca_sha256 in log
    assert w1.redis_password not in log and w1.db_password not in log
    joined = farm.workers.home("w1") / "join"
    assert joined.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in joined.iterdir()} == {
        "ca.pem": 0o600, "credential.json": 0o600}  # fmt: skip

    # What a Mac's own credential may do: the farm's work, not the server's.
    own = Redis.from_url(w1.redis_url(coord_address(0), str(farm.ca)), socket_timeout=5)
    for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("ACL", "LIST"), ("KEYS", "*")):
        with pytest.raises(ResponseError, match="no permissions"):
            own.execute_command(*command)


def test_a_token_for_another_ca_or_cut_short_is_refused_in_one_line(
    lan_farm: LanFarm, tmp_path: Path
) -> None:
    farm = lan_farm
    other = coordinator_tls(private_tempdir("lorafarm-other-ca-") / "tls", ["10.0.0.1"])
    other_der = ssl.PEM_cert_to_DER_cert(other.ca.read_text())
    forged = dataclasses.replace(
        farm.token("w2"), ca_der=other_der, ca_sha256=fingerprint(other_der)
    )
    for token, expected in (
        (encode_token(forged), "does not chain to the CA this Mac trusts"),
        (farm.tokens["w2"][:-40], "damaged or cut short"),
    ):
        home = tmp_path / f"w2-home-{uuid.uuid4().hex[:6]}"
        refused = subprocess.run(
            ["ip", "netns", "exec", farm.network.netns_of("w2"), sys.executable, "-m",
             "tools.cli", "worker", "--burst", "--join", "-"],
            input=token, env={**worker_base_env(), "FARM_HOME": str(home)},
            capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
        )  # fmt: skip
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert refused.returncode == 1 and len(lines) == 1, refused.stderr
        assert expected in lines[0], lines[0]
        assert forged.redis_password not in refused.stderr + refused.stdout
        assert forged.db_password not in refused.stderr + refused.stdout


def test_a_revoked_mac_is_refused_and_its_stage_is_retried_elsewhere(
    lan_farm: LanFarm, tiny_model: Path, tmp_path: Path
) -> None:
    farm = lan_farm
    train = {"iters": 60, "save_every": 10, "steps_per_report": 1, "steps_per_eval": 1000,
             "val_batches": 1}  # fmt: skip
    experiment_id = submit(write_spec(tmp_path / "s.yaml", tiny_model, train=train, **ONLY_ADAPTER))
    w1_process = farm.start_worker("w1")
    stage_id = train_stage(experiment_id).id or 0
    wait_until(lambda: checkpoint_reached(stage_id, 10), timeout=240, what="checkpoint 10 on w1")

    revoked = farm.on_coordinator("workers", "revoke", "w1")
    revoked_at = time.monotonic()
    assert revoked.returncode == 0 and "revoked w1" in revoked.stdout, revoked.stderr
    reached = max(trained_iterations(stage_id, 1))

    # Its next connection is refused by Redis and by the database.
    w1 = farm.token("w1")
    with pytest.raises(AuthenticationError):
        Redis.from_url(w1.redis_url(coord_address(0), str(farm.ca)), socket_timeout=5).ping()
    import psycopg

    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(w1.database_url(coord_address(0), str(farm.ca)), connect_timeout=10)

    # The worker stops, saying why in one line, and leaves no process behind.
    wait_until(lambda: w1_process.poll() is not None, timeout=90, what="w1 to stop")
    stopped = round(time.monotonic() - revoked_at, 1)
    assert w1_process.returncode == 1
    assert "this Mac's credential was refused" in farm.workers.log("w1")
    assert not farm.workers.tree("w1")

    # The stage is lost, not corrupted: w2 resumes from the last checkpoint
    # and trains each later iteration once.
    farm.start_worker("w2")
    wait_until(lambda: outcome_of(stage_id, 1) == "lost", timeout=60, what="w1's attempt lost")
    detected = round(time.monotonic() - revoked_at, 1)
    wait_until(lambda: run_done(experiment_id), timeout=180, what="the run to finish on w2")
    finished = round(time.monotonic() - revoked_at, 1)
    first, second = attempts_of(stage_id)[:2]
    assert (first.worker, first.outcome, second.worker, second.outcome) == (
        "w1", "lost", "w2", "done")  # fmt: skip
    resumed = second.resumed_from or 0
    assert resumed >= 10 and max(trained_iterations(stage_id, 1)) <= reached
    assert trained_iterations(stage_id, 2) == list(range(resumed + 1, 61))
    record_timing("a Mac's credential revoked while it trains", stop_s=stopped,
                  detect_s=detected, finish_s=finished, resumed_from=resumed,
                  iterations_lost=reached - resumed)  # fmt: skip

    listed = json.loads(farm.on_coordinator("workers", "list", "--json").stdout)
    by_name = {row["name"]: row for row in listed}
    assert set(by_name) == set(MACS)
    assert by_name["w1"]["revoked_at"] and by_name["w1"]["db_role"] == "farm_worker_w1"
    assert by_name["w2"]["revoked_at"] is None
