"""Passwords in DATABASE_URL and REDIS_URL never reach output: masked as `***`."""

from __future__ import annotations

import os
import subprocess

import pytest

from jobs.settings import redact_text, redacted_url
from tests.support import PROJECT_ROOT

SECRET = "Sup3r-Secret-pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://farm:{SECRET}@db.lan:5432/farm", "postgresql://farm:***@db.lan:5432/farm"),
        (f"postgresql+psycopg://farm:{SECRET}@h/farm", "postgresql+psycopg://farm:***@h/farm"),
        (f"redis://:{SECRET}@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        (f"rediss://worker:{SECRET}@redis.lan/1", "rediss://worker:***@redis.lan/1"),
        (f"postgresql//farm:{SECRET}@h/farm", "postgresql//farm:***@h/farm"),  # malformed
        (f"postgresql://farm:{SECRET}@x@h/farm", "postgresql://farm:***@h/farm"),  # raw @
        (f"postgresql://h/farm?password={SECRET}", "postgresql://h/farm?password=***"),
        ("sqlite:////srv/farm/farm.db", "sqlite:////srv/farm/farm.db"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redacted_url(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_redact_text_masks_every_url_and_connection_string() -> None:
    text = (
        f"tried postgresql://farm:{SECRET}@h/farm, then redis://:{SECRET}@h:6379/0 "
        f"and host=h password={SECRET} user=farm"
    )
    masked = redact_text(text)
    assert SECRET not in masked and masked.count("***") == 3


def test_farm_status_names_the_database_without_its_password() -> None:
    """A wrong password and a wrong database on the local PostgreSQL: one line, masked."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["DATABASE_URL"] = f"postgresql://lorafarm_nobody:{SECRET}@127.0.0.1:5432/no_such_db"
    done = subprocess.run(
        ["uv", "run", "farm", "status"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "cannot use the database postgresql://lorafarm_nobody:***@127.0.0.1:5432" in (
        done.stderr
    )
    assert SECRET not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
