"""The digest the farm records for an artifact, and recomputes when it ships it.

One rule for both sides (`worker.context.record_artifact` records with it,
`farm export` checks with it): a file's digest is its bytes'; a folder's is
each file's relative name then its bytes, in name order. Each file's own
digest comes out of the same pass: it is recorded too, so a refusal can name
the file that changed, and an export checks the copies it made against it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 1 << 20


@dataclass(frozen=True)
class Digest:
    """The artifact's digest, and each file's own (relative name → sha256)."""

    sha256: str
    files: dict[str, str] = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_digest(path: Path) -> Digest:
    """The recorded digest of a file or folder, with every file's own sha256."""
    if path.is_file():
        own = file_sha256(path)
        return Digest(own, {path.name: own})
    whole = hashlib.sha256()
    files: dict[str, str] = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        name = str(file.relative_to(path))
        whole.update(name.encode())
        one = hashlib.sha256()
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(BLOCK), b""):
                whole.update(block)
                one.update(block)
        files[name] = one.hexdigest()
    return Digest(whole.hexdigest(), files)
