"""Files only their owner may read: keys, certificates, a Mac's farm credential.

A secret file is created 0600 from its first byte (never written, then
narrowed), in a folder made 0700, so no other user of the Mac reads it even
for a moment.
"""

from __future__ import annotations

import os
from pathlib import Path


def private_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def write_private(path: Path, data: bytes) -> None:
    """Create (or replace) `path` readable by its owner only, never wider for a moment."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
