"""Where the farm keeps things, read from the environment at the edges."""

from __future__ import annotations

import os
from pathlib import Path


def farm_home() -> Path:
    """FARM_HOME, default ./.farm: SQLite DB, artifacts, logs, the tiny model."""
    return Path(os.environ.get("FARM_HOME", ".farm")).resolve()


def database_url() -> str:
    """DATABASE_URL, else SQLite under FARM_HOME."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{farm_home() / 'farm.db'}"


def redis_url() -> str | None:
    """REDIS_URL if set; None means the farm runs its own embedded server."""
    return os.environ.get("REDIS_URL") or None


def shared_artifacts() -> Path | None:
    """FARM_SHARED_ARTIFACTS: a folder every worker sees, lifting stage pinning."""
    value = os.environ.get("FARM_SHARED_ARTIFACTS")
    return Path(value).resolve() if value else None


def artifacts_root() -> Path:
    return shared_artifacts() or farm_home() / "artifacts"
