"""A worker's part in a gang: take a seat, wait for the other ranks, start its own.

Runs in the work horse once it has claimed a gang stage (`jobs.gang`). The
rank's seat is the address its ring will listen on (the worker's advertised
address and a free port) and the sha256 of the dataset as this worker reads
it. When every rank has a seat, each horse writes the same hostfile and starts
its child with `MLX_RANK` and `MLX_HOSTFILE` (`worker.ring`), which is all
`mx.distributed.init()` in mlx-lm's trainer needs: no SSH, no `mlx.launch`.

A gang that does not form within FARM_GANG_FORM_S lets this worker go
(`lifecycle.release`); a rank whose dataset differs from rank 0's refuses the
gang, naming the worker.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from redis import Redis

from jobs import gang, lifecycle, settings
from jobs.db import Experiment, Run, Stage, session_scope
from jobs.queue import push_all
from ship.digest import artifact_digest
from worker.ring import write_hostfile

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often a seated rank looks whether the gang has formed


class GangRefused(RuntimeError):
    """The gang cannot train as formed (the ranks' datasets differ): it fails, not retried."""


@dataclass(frozen=True)
class GangStart:
    rank: int
    world: int
    hostfile: Path


def reachable_address(redis_url: str | None) -> str:
    """The address of this machine's interface that reaches Redis: the one the
    other Macs of the farm can reach it at too. No packet is sent (UDP connect
    only picks the route)."""
    parts = urlsplit(redis_url or "redis://127.0.0.1:6379")
    host = parts.hostname or "127.0.0.1"
    try:
        infos = socket.getaddrinfo(host, parts.port or 6379, type=socket.SOCK_DGRAM)
        family, _, _, _, address = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def advertised_address() -> str:
    return settings.advertise_address() or reachable_address(settings.redis_url())


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def dataset_sha256(dataset: str) -> str:
    """The dataset folder's files as this worker reads them ("missing" if it has none)."""
    path = Path(dataset)
    return artifact_digest(path).sha256 if path.is_dir() else "missing"


def form(stage_id: int, attempt: int, redis: Redis | None) -> GangStart | None:
    """Take this rank's seat and wait for the gang; None when it did not form in
    time (the rank was released) or this attempt no longer owns its stage."""
    with session_scope() as session:
        stage = session.get(Stage, stage_id)
        assert stage is not None
        run = session.get(Run, stage.run_id)
        experiment = session.get(Experiment, run.experiment_id) if run else None
        assert experiment is not None
        run_id, rank, dataset = stage.run_id, gang.rank_of(stage), str(experiment.spec["dataset"])
    address = advertised_address()
    seat = f"{address}:{free_port(address)}"
    digest = dataset_sha256(dataset)
    with session_scope() as session:
        lifecycle.guard(session, stage_id, attempt)
        stage = session.get(Stage, stage_id)
        assert stage is not None
        gang.take_seat(session, stage, seat, digest)
    log.info("rank %s of run %s seated at %s; waiting for the gang", rank, run_id, seat)

    deadline = time.monotonic() + settings.gang_form_s()
    while True:
        with session_scope() as session:
            if not lifecycle.heartbeat(session, stage_id, attempt):
                return None  # cancelled, or another rank's end released this one
            formed = gang.seats(session, run_id)
            seated, world = gang.seated(session, run_id)
        if formed is not None:
            break
        if time.monotonic() > deadline:
            reason = (
                f"released: {seated} of {world} ranks joined within "
                f"{settings.gang_form_s():g} s (FARM_GANG_FORM_S); queued again"
            )
            with session_scope() as session:
                tickets = lifecycle.release(session, stage_id, attempt, reason)
            push_all(redis, tickets)
            log.info("rank %s of run %s %s", rank, run_id, reason)
            return None
        time.sleep(POLL_S)

    first = formed[0]
    for other in formed[1:]:
        if other.dataset_sha256 != first.dataset_sha256:
            raise GangRefused(
                f"worker {other.worker}'s copy of the dataset {dataset} differs from rank 0's "
                f"(worker {first.worker}): sha256 {other.dataset_sha256[:12]} against "
                f"{first.dataset_sha256[:12]}; give every worker the same files or a shared folder"
            )
    hostfile = settings.farm_home() / "gangs" / f"run-{run_id}-stage-{stage_id}-a{attempt}.json"
    hostfile.parent.mkdir(parents=True, exist_ok=True)
    addresses = [(s.address.rsplit(":", 1)[0], int(s.address.rsplit(":", 1)[1])) for s in formed]
    write_hostfile(hostfile, addresses)
    log.info("gang of run %s formed: %s", run_id, ", ".join(s.address for s in formed))
    return GangStart(rank, len(formed), hostfile)
