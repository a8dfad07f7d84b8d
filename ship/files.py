"""Finding an export's artifacts on disk, checking them against the farm's
digests, and copying the files an export takes.

An artifact is read where it was written when that path exists here, else at
the same place (`run-N/…`) under FARM_SHARED_ARTIFACTS (or, for one written on
this machine, under this FARM_HOME's artifacts). An artifact held on another
worker's disk is named with that worker and the two ways to reach it, instead
of a bare "file not found". A file whose bytes no longer give the recorded
sha256 is refused, never shipped: a model card's numbers describe the bytes
the farm evaluated, not whatever is there now.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path, PurePath

from ship.digest import Digest, artifact_digest, file_sha256
from ship.sources import CARD, ExportRefused, OnAnotherWorker, Source


def candidates(path: str, run_id: int, roots: Iterable[Path]) -> list[Path]:
    """The recorded path, then the same `run-N/…` tail under each root."""
    out = [Path(path)]
    parts = PurePath(path).parts
    marker = f"run-{run_id}"
    if marker in parts:
        tail = parts[parts.index(marker) :]
        out += [Path(root).joinpath(*tail) for root in roots]
    return out


def locate(
    source: Source, run_id: int, shared: Path | None, own_root: Path, local: set[str]
) -> Path:
    """Where this machine reads the artifact: where it was written, or under the
    shared folder, or (written here) under this FARM_HOME's artifacts; else
    `ExportRefused` saying where it is."""
    roots = [r for r in (shared, own_root if source.host in local else None) if r is not None]
    for candidate in candidates(source.path, run_id, roots):
        if candidate.exists():
            return candidate
    if source.host not in local:
        raise OnAnotherWorker(
            f"{source.what} of run {run_id} is on host {source.host} ({source.path}), "
            f"which this machine cannot read: set FARM_SHARED_ARTIFACTS to a folder every "
            f"worker sees, or export through that worker (`farm export --via-worker`)",
            source.host,
        )
    raise ExportRefused(
        f"{source.what} of run {run_id} is no longer on this machine's disk ({source.path})"
    )


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def changed_since(path: Path, recorded_at: datetime) -> list[str]:
    """Files of an artifact modified after its digest was recorded (relative names)."""
    cutoff = _utc(recorded_at).timestamp()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [
        (f.name if path.is_file() else str(f.relative_to(path)))
        for f in files
        if f.stat().st_mtime > cutoff
    ]


def differences(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    """What differs between the recorded and the present files, file by file."""
    changed = [n for n in sorted(recorded) if n in now and now[n] != recorded[n]]
    gone = [n for n in sorted(recorded) if n not in now]
    added = [n for n in sorted(now) if n not in recorded]
    out = []
    if changed:
        out.append(f"{', '.join(changed)} {'has' if len(changed) == 1 else 'have'} changed")
    if gone:
        out.append(f"{', '.join(gone)} {'is' if len(gone) == 1 else 'are'} gone")
    if added:
        out.append(f"{', '.join(added)} {'was' if len(added) == 1 else 'were'} added")
    return out


def verify(source: Source, path: Path, run_id: int) -> Digest:
    """The artifact's digest now, if it equals the recorded one; else `ExportRefused`
    naming the file that changed (from the recorded per-file digests, or for rows
    without them, the files modified since the artifact was recorded)."""
    if not source.sha256:
        raise ExportRefused(f"{source.what} of run {run_id} has no recorded sha256 to check")
    digest = artifact_digest(path)
    if digest.sha256 == source.sha256:
        return digest
    if source.file_sha256 and not path.is_file():
        found = differences(source.file_sha256, digest.files)
        culprits = [
            n for n in sorted(source.file_sha256) if digest.files.get(n) != source.file_sha256[n]
        ]
    else:
        culprits = changed_since(path, source.created_at)
        verb = "was" if len(culprits) == 1 else "were"
        found = (
            [f"{', '.join(culprits)} {verb} modified after the farm recorded it"]
            if culprits
            else []
        )
    what = "; ".join(found) or "a file was changed, added or removed since the farm recorded it"
    where = path / culprits[0] if len(culprits) == 1 and not path.is_file() else path
    raise ExportRefused(
        f"{where}: {source.what} of run {run_id} no longer matches the sha256 the farm "
        f"recorded ({what}); refusing to export it"
    )


def copy_files(source: Source, path: Path, digest: Digest, into: Path) -> list[str]:
    """Copy what the export takes from one verified artifact; each copy is checked
    against the digest just verified. Returns the export's names."""
    wanted = source.files or tuple((n, n) for n in digest.files if n != CARD)
    written = []
    for name, target in wanted:
        src = path if path.is_file() else path / name
        dst = into / target
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        if file_sha256(dst) != digest.files[src.name if path.is_file() else name]:
            raise ExportRefused(f"{src}: changed while it was being copied; try again")
        written.append(target)
    return written
