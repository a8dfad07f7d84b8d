"""Disk-full errors in words a user can act on, and the partial files they leave.

MLX reports a full disk as "[write] Unable to write 168117 bytes to file",
naming neither the disk nor what is free; Python raises OSError(ENOSPC). Both
become one line: which folder, how much the write needed, how much is free.
"""

from __future__ import annotations

import errno
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_MLX_WRITE_RE = re.compile(r"Unable to write (\d+) bytes")
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


@dataclass(frozen=True)
class DiskFull(Exception):
    path: str
    needed_bytes: int | None
    free_bytes: int

    def line(self) -> str:
        needed = f"needs {self.needed_bytes:,} more bytes" if self.needed_bytes else "needs space"
        return (
            f"disk full: writing under {self.path} {needed}; {self.free_bytes:,} bytes free "
            "there. Free space on that disk (old runs' artifacts under FARM_HOME) and retry."
        )


def free_bytes(path: Path) -> int:
    """Free bytes on the disk holding `path` (its nearest existing parent)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return 0


def disk_full(exc: BaseException, path: Path) -> DiskFull | None:
    """A `DiskFull` when `exc` (or what caused it) is a failed write on a full disk."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            where = Path(current.filename) if current.filename else path
            return DiskFull(str(where), None, free_bytes(where))
        match = _MLX_WRITE_RE.search(str(current))
        if match and free_bytes(path) < int(match.group(1)) * 2:
            return DiskFull(str(path), int(match.group(1)), free_bytes(path))
        current = current.__cause__ or current.__context__
    return None


def remove_partial_outputs(ctx: Any) -> None:
    """Remove what a stage that hit a full disk left half written, so the disk
    is not still full for the next stage. Complete train checkpoints stay: a
    retry resumes from them."""
    if ctx.kind == "fuse":
        shutil.rmtree(ctx.fused_dir, ignore_errors=True)
    elif ctx.kind == "quantize":
        shutil.rmtree(ctx.quantized_dir(ctx.variant), ignore_errors=True)
    elif ctx.kind == "train" and ctx.adapter_dir.exists():
        for partial in ctx.adapter_dir.glob("*.tmp*"):
            partial.unlink(missing_ok=True)
