"""Which Mac's disk: a stable host id kept in FARM_HOME.

Checkpoints, adapters and fused models are written under a worker's
FARM_HOME, so the disk, not the worker's name, decides who can resume or
evaluate them. The id is made once (the machine's short name and eight random
hex digits, so the farm's pages stay readable) and stored in
`FARM_HOME/host-id`; every worker process started on that Mac with that home,
under any name, reads the same id and listens on the same host queue.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from pathlib import Path

from jobs import settings

FILE_NAME = "host-id"
_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9-]+")


def host_id(home: Path | None = None) -> str:
    """This FARM_HOME's host id, made on first use. Two processes making it at
    once agree: the first link wins and the other reads it."""
    home = home or settings.farm_home()
    path = home / FILE_NAME
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    short = _NOT_IN_A_NAME.sub("-", socket.gethostname().split(".")[0]).strip("-") or "mac"
    candidate = home / f".{FILE_NAME}.{os.getpid()}"
    candidate.write_text(f"{short[:32]}-{uuid.uuid4().hex[:8]}\n")
    try:
        os.link(candidate, path)
    except FileExistsError:
        pass
    finally:
        candidate.unlink()
    return path.read_text().strip()
