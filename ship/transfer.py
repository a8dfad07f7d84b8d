"""An export's way from the worker that holds a run's artifacts to the coordinator.

The worker zips the export folder it made (every file already checked against
the artifact's recorded sha256) and writes the zip into the database in
chunks (`ExportFile`, `ExportChunk`): the UI and the CLI never read a worker's
disk and need no channel but the one the farm already has. On the way out the
zip is checked against the sha256 its worker recorded, and, once unpacked,
each file the artifacts gave against the digest recorded when the artifact was
written, so a byte changed anywhere on the way is named, never shipped.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from sqlmodel import Session, col, delete, select

from jobs.db import ExportChunk, ExportFile
from ship.digest import file_sha256
from ship.sources import CARD, ExportPlan, ExportRefused

CHUNK_BYTES = 4 * 1024 * 1024  # one row each; well under PostgreSQL's and SQLite's limits


def zip_name(run_id: int, variant: str) -> str:
    return f"run-{run_id}-{variant}.zip"


def zip_folder(folder: Path, out: Path) -> str:
    """Zip a folder's files under their relative names; the zip's sha256.
    Weights barely compress, so they are stored; text is deflated."""
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            packed = zipfile.ZIP_STORED if path.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
            archive.write(path, name, compress_type=packed)
    return file_sha256(out)


def chunks_of(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while piece := handle.read(CHUNK_BYTES):
            yield piece


def chunk_count(size: int) -> int:
    return max(1, -(-size // CHUNK_BYTES))


def export_file(session: Session, stage_id: int) -> ExportFile | None:
    return session.exec(select(ExportFile).where(ExportFile.stage_id == stage_id)).first()


def start_export_file(
    session: Session, stage_id: int, run_id: int, variant: str, zip_path: Path, sha256: str
) -> ExportFile:
    """The row an export stage's zip goes under; an earlier attempt's is replaced."""
    old = export_file(session, stage_id)
    if old is not None:
        session.execute(delete(ExportChunk).where(col(ExportChunk.export_id) == old.id))
        session.delete(old)
        session.flush()
    size = zip_path.stat().st_size
    row = ExportFile(
        stage_id=stage_id,
        run_id=run_id,
        variant=variant,
        name=zip_name(run_id, variant),
        size_bytes=size,
        sha256=sha256,
        chunks=chunk_count(size),
    )
    session.add(row)
    session.flush()
    return row


def read_zip(session: Session, stage_id: int) -> tuple[str, bytes]:
    """The export's file name and bytes, checked against the sha256 its worker
    recorded; `ExportRefused` if it is missing, incomplete or altered."""
    row = export_file(session, stage_id)
    if row is None:
        raise ExportRefused(f"export stage {stage_id} has no zip in the database (not done yet?)")
    pieces = session.exec(
        select(ExportChunk.data)
        .where(ExportChunk.export_id == row.id)
        .order_by(col(ExportChunk.seq))
    ).all()
    data = b"".join(pieces)
    if len(pieces) != row.chunks or len(data) != row.size_bytes:
        raise ExportRefused(
            f"{row.name}: {len(pieces)} of {row.chunks} pieces ({len(data)} of "
            f"{row.size_bytes} bytes) reached the database; export it again"
        )
    if hashlib.sha256(data).hexdigest() != row.sha256:
        raise ExportRefused(
            f"{row.name}: does not match the sha256 its worker recorded; export it again"
        )
    return row.name, data


def _safe_names(archive: zipfile.ZipFile) -> list[str]:
    names = archive.namelist()
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or "\\" in name:
            raise ExportRefused(f"export zip: refusing the entry {name!r} (outside the folder)")
    return names


def check_against_artifacts(plan: ExportPlan, folder: Path) -> None:
    """Each file taken from an artifact, checked against the per-file sha256 the
    farm recorded when the artifact was written."""
    for source in plan.sources:
        if not source.file_sha256:
            continue
        taken = source.files or tuple((n, n) for n in source.file_sha256 if n != CARD)
        for name, target in taken:
            recorded = source.file_sha256.get(name)
            if recorded is None:
                continue
            path = folder / target
            if not path.is_file() or file_sha256(path) != recorded:
                raise ExportRefused(
                    f"{target}: does not match the sha256 the farm recorded for "
                    f"{source.what} of run {plan.run_id}; refusing it"
                )


def unpack(data: bytes, plan: ExportPlan, into: Path) -> list[str]:
    """Unpack an export zip into the (empty) folder `into` and check it; the names."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = _safe_names(archive)
        archive.extractall(into, names)
    check_against_artifacts(plan, into)
    return sorted(names)
