"""`farm export`: one run's variant as a folder mlx-lm opens, with its model card.

Everything is written into a temporary folder beside the destination and
renamed into place at the end, so a refusal (an artifact on another worker, a
file that no longer matches its recorded sha256) leaves no half-written export.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session, select

from jobs import settings
from jobs.db import WorkerRow, session_scope
from jobs.ship.card import render_card
from jobs.ship.card_data import load_card_data
from jobs.ship.curves import curves_csv, curves_png
from jobs.ship.files import copy_files, locate, verify
from jobs.ship.sources import CARD, ExportPlan, ExportRefused, load_plan


@dataclass(frozen=True)
class Exported:
    plan: ExportPlan
    folder: Path
    files: list[str]  # relative names, sorted


def local_names(session: Session) -> set[str]:
    """The names artifacts recorded on this machine carry: its host name, and the
    names of the workers registered from it."""
    host = socket.gethostname()
    names = {host, os.environ.get("FARM_WORKER_NAME") or host}
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


def export_run(run_id: int, variant: str, dest: Path) -> Exported:
    """Write the export to a temporary folder beside `dest`, then rename it to `dest`."""
    dest = Path(dest).expanduser().absolute()
    _check_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.export-", dir=dest.parent))
    try:
        with session_scope() as session:
            plan = write_export(session, run_id, variant, tmp)
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
