"""`farm export`: one run's variant as a folder mlx-lm opens, with its model card.

Everything is written into a temporary folder beside the destination and
renamed into place at the end, so a refusal (an artifact out of reach, a file
that no longer matches its recorded sha256) leaves no half-written export.
Artifacts on another worker's own disk are exported by that worker
(`export_through_worker`: an `export` stage, its zip sent through the database).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from redis import Redis
from sqlmodel import Session, select

from jobs import host_identity, settings
from jobs.db import Stage, WorkerRow, session_scope
from jobs.queue import push_all
from jobs.states import StageStatus
from ship.card import render_card
from ship.card_data import load_card_data
from ship.curves import curves_csv, curves_png
from ship.files import copy_files, locate, verify
from ship.local_apps import write_gguf
from ship.request import request_export
from ship.sources import CARD, ExportPlan, ExportRefused, load_plan
from ship.transfer import read_zip, unpack


@dataclass(frozen=True)
class Exported:
    plan: ExportPlan
    folder: Path
    files: list[str]  # relative names, sorted


def local_names(session: Session) -> set[str]:
    """The hosts artifacts recorded on this machine carry: this FARM_HOME's host
    id, and (for rows written before host ids) the machine's name and the names
    of the workers registered from it."""
    host = socket.gethostname()
    names = {host_identity.host_id(), host, settings.worker_name() or host}
    names |= set(session.exec(select(WorkerRow.name).where(WorkerRow.host == host)))
    return names


def _check_destination(dest: Path) -> None:
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise ExportRefused(f"{dest}: already exists; export into a new or empty folder")


def write_export(session: Session, run_id: int, variant: str, into: Path) -> ExportPlan:
    """The export's files, written into the (empty) folder `into`."""
    plan = load_plan(session, run_id, variant)
    local = local_names(session)
    shared, own = settings.shared_artifacts(), settings.farm_home() / "artifacts"
    located = [(s, locate(s, run_id, shared, own, local)) for s in plan.sources]
    verified = [(s, path, verify(s, path, run_id)) for s, path in located]
    for source, path, digest in verified:
        copy_files(source, path, digest, into)
    data = load_card_data(session, plan)
    (into / "curves.csv").write_text(curves_csv(data.curve_rows))
    (into / "curves.png").write_bytes(curves_png(data.curve_rows))
    data = dataclasses.replace(data, curve_files=["curves.png", "curves.csv"])
    (into / data.spec_file).write_text(data.spec_yaml)
    (into / CARD).write_text(render_card(data))
    return plan


def export_run(run_id: int, variant: str, dest: Path, gguf: bool = False) -> Exported:
    """Write the export from this machine's view of the artifacts into `dest`
    (with mlx-lm's GGUF of it too, when asked and mlx-lm can)."""

    def fill(into: Path) -> ExportPlan:
        with session_scope() as session:
            plan = write_export(session, run_id, variant, into)
        if gguf:
            write_gguf(into, plan)
        return plan

    return _place(dest, fill)


def _place(dest: Path, fill: Callable[[Path], ExportPlan]) -> Exported:
    """Fill a temporary folder beside `dest`, then rename it to `dest`."""
    dest = Path(dest).expanduser().absolute()
    _check_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.export-", dir=dest.parent))
    try:
        plan = fill(tmp)
        _check_destination(dest)
        if dest.exists():
            dest.rmdir()
        tmp.chmod(0o755)  # mkdtemp's 0700 is for the work in progress only
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    return Exported(plan, dest, files)


def export_through_worker(
    run_id: int,
    variant: str,
    dest: Path,
    redis: Redis | None,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    timeout_s: float = 3600.0,
    gguf: bool = False,
) -> Exported:
    """Have the worker holding the artifacts make the export (an `export` stage),
    then unpack the zip it sent through the database into `dest`, each file
    checked against the artifact's recorded sha256."""
    _check_destination(Path(dest).expanduser().absolute())
    with session_scope() as session:
        ticket = request_export(session, run_id, variant)
    push_all(redis, [ticket])
    stage = wait_for_export(ticket.stage_id, on_progress, timeout_s)

    def fill(into: Path) -> ExportPlan:
        with session_scope() as session:
            _, data = read_zip(session, stage)
            plan = load_plan(session, run_id, variant)
        unpack(data, plan, into)
        if gguf:
            write_gguf(into, plan)
        return plan

    return _place(dest, fill)


def wait_for_export(
    stage_id: int, on_progress: Callable[[int, int], None], timeout_s: float
) -> int:
    """Wait for an export stage to end; its id when done, else `ExportRefused`
    with the stage's error."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with session_scope() as session:
            stage = session.get(Stage, stage_id)
            assert stage is not None
            status, error = stage.status, stage.error
            progress, total = stage.progress or 0, stage.total or 0
        if total:
            on_progress(progress, total)
        if status == StageStatus.DONE:
            return stage_id
        if status in (StageStatus.FAILED, StageStatus.CANCELLED, StageStatus.SKIPPED):
            last = (error or status).strip().splitlines()[-1:] or [status]
            raise ExportRefused(f"export stage {stage_id} {status}: {last[0]}")
        time.sleep(0.5)
    raise ExportRefused(
        f"export stage {stage_id} did not end within {timeout_s:.0f} s; is the worker "
        "holding the artifacts running? (`farm workers`)"
    )


def model_card(session: Session, run_id: int, variant: str) -> str:
    """The model card of a run's variant alone (README.md), written from the
    database: what the run page offers to download without an export."""
    return render_card(load_card_data(session, load_plan(session, run_id, variant)))


def lmstudio_destination(run_id: int, variant: str) -> Path:
    """`--to lmstudio`: the folder in LM Studio's models folder the export goes to."""
    from jobs.db import Experiment, Run
    from ship.local_apps import lmstudio_folder, lmstudio_models_dir

    with session_scope() as session:
        plan = load_plan(session, run_id, variant)
        run = session.get(Run, run_id)
        assert run is not None
        experiment = session.get(Experiment, run.experiment_id)
        assert experiment is not None
        return lmstudio_folder(lmstudio_models_dir(), plan, experiment.name, run.seed)
