"""A benchmark's private farm: FARM_HOME, an SQLite DATABASE_URL in it and
REDIS_URL set for the benchmark's own processes, restored afterwards, so a
benchmark never touches the farm it is run from."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs import db

KEYS = ("FARM_HOME", "DATABASE_URL", "REDIS_URL")


@contextmanager
def private_farm_environment(home: Path, redis_url: str | None = None) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in KEYS}
    os.environ["FARM_HOME"] = str(home)
    os.environ["DATABASE_URL"] = f"sqlite:///{home / 'farm.db'}"
    if redis_url is None:
        os.environ.pop("REDIS_URL", None)
    else:
        os.environ["REDIS_URL"] = redis_url
    db.dispose_engines()
    try:
        yield
    finally:
        db.dispose_engines()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
