"""A farm across network namespaces: a coordinator (Redis + PostgreSQL) in its
own namespace, each worker host in another, cabled by veth pairs
(`tests.support.netns`), and this test process as one more host."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from jobs import db
from tests.support.netns import CoordPostgres, CoordRedis, NetnsWorkers, Network, private_tempdir
from tools.local.tls import coordinator_tls

LOST_AFTER_S = 6
RECONCILE_EVERY_S = 2
STRANDED_AFTER_S = 15


@dataclass
class Farm:
    """The coordinator, the cables and the workers of one test."""

    network: Network
    redis: CoordRedis
    postgres: CoordPostgres
    workers: NetnsWorkers
    shared: Path | None
    settings: dict[str, str] = field(default_factory=dict)
    _monitor: psycopg.Connection | None = None

    def sql(self, query: str) -> list[tuple]:
        """A query on the coordinator's DB over the test host's own link (one
        kept connection: the cut instant is looked for every few milliseconds)."""
        if self._monitor is None:
            self._monitor = psycopg.connect(self.postgres.url(0), autocommit=True)
        return self._monitor.execute(query).fetchall()

    def close(self) -> None:
        if self._monitor is not None:
            self._monitor.close()

    def start_worker(self, name: str, host: str | None = None) -> None:
        link = self.network.links[host or name].number
        env = {
            "REDIS_URL": self.redis.url(link),
            "DATABASE_URL": self.postgres.url(link),
            **self.settings,
        }
        if self.shared is not None:
            env["FARM_SHARED_ARTIFACTS"] = str(self.shared)
        self.workers.start(name, env, host)


def build_farm(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shared: bool,
    teardown: list,
    hosts: tuple[str, ...] = ("w1", "w2"),
    routed: bool = False,
    tls: bool = False,
) -> Farm:
    """Namespaces, servers and this process's settings; each piece is put on
    `teardown` as soon as it exists, so a failure half-way still cleans up.
    `routed`: the worker hosts reach each other through coord, as Macs on one
    LAN do (a gang's ranks talk to each other, not only to the coordinator).
    `tls`: Redis and PostgreSQL take TLS connections only, with a certificate
    `farm tls` made for the coordinator's addresses."""
    network = Network(list(hosts))
    teardown.append(network.destroy)
    network.build()
    if routed:
        network.route_between_hosts()
    redis_dir, pg_dir = private_tempdir("lorafarm-redis-"), private_tempdir("lorafarm-pg-")
    teardown.append(lambda: remove_dirs(redis_dir, pg_dir))
    certificates = None
    if tls:
        certificates = coordinator_tls(redis_dir / "tls", network.coord_addresses())
    redis = CoordRedis(network, redis_dir, certificates)
    postgres = CoordPostgres(network, pg_dir, certificates)
    teardown.append(redis.stop)
    redis.start()
    teardown.append(postgres.stop)
    postgres.start()
    workers = NetnsWorkers(network, tmp_path)
    teardown.append(workers.stop_all)
    settings = {
        "FARM_LOST_AFTER_S": str(LOST_AFTER_S),
        "FARM_RECONCILE_EVERY_S": str(RECONCILE_EVERY_S),
    }
    if not shared:
        settings["FARM_STRANDED_AFTER_S"] = str(STRANDED_AFTER_S)
    folder = tmp_path / "shared-artifacts" if shared else None
    # The test process is a third host: it submits and reads over its own link.
    for name, value in {
        **settings,
        "REDIS_URL": redis.url(0),
        "DATABASE_URL": postgres.url(0),
        "FARM_HOME": str(tmp_path / "submitter-home"),
    }.items():
        monkeypatch.setenv(name, value)
    if folder is not None:
        monkeypatch.setenv("FARM_SHARED_ARTIFACTS", str(folder))
    else:
        monkeypatch.delenv("FARM_SHARED_ARTIFACTS", raising=False)
    teardown.append(db.dispose_engines)
    db.dispose_engines()
    db.migrate()
    farm = Farm(network, redis, postgres, workers, folder, settings)
    teardown.append(farm.close)
    return farm


def remove_dirs(*folders: Path) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def run_teardown(steps: list) -> None:
    """Undo in reverse order; one failing step must not leave the rest behind."""
    errors = []
    for step in reversed(steps):
        try:
            step()
        except Exception as exc:  # keep tearing down, report at the end
            errors.append(exc)
    if errors:
        raise errors[0]
