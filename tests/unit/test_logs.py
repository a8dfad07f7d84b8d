"""The one log format of the worker, its horse and the stage child (jobs.logs)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support import PROJECT_ROOT

SCRIPT = """
import logging, threading
from jobs import logs
logs.configure()
logs.configure()  # once per process, however often it is asked
log = logging.getLogger("worker.stage_job")
log.info("before")
with logs.about_stage(7, 2):
    log.warning("heartbeat failed: %s", "timeout")
    thread = threading.Thread(target=lambda: log.info("another thread"))
    thread.start()
    thread.join()
logging.getLogger("rq.worker").info("Listening on farm:tier:16")
logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate.types")
"""


def test_lines_name_their_module_and_the_stage_they_are_about() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    lines = done.stderr.splitlines()
    assert done.stdout == "" and len(lines) == 4, done.stderr
    time = r"\d\d:\d\d:\d\d"
    assert re.fullmatch(rf"{time} INFO worker\.stage_job: before", lines[0])
    assert re.fullmatch(
        rf"{time} WARNING worker\.stage_job \[stage 7, attempt 2\]: heartbeat failed: timeout",
        lines[1],
    )
    # A thread starts without the stage: it sets its own, as the heartbeat does.
    assert re.fullmatch(rf"{time} INFO worker\.stage_job: another thread", lines[2])
    assert re.fullmatch(rf"{time} INFO rq\.worker: Listening on farm:tier:16", lines[3])
    # (Alembic's account of its plug-ins, at every start, is not among them.)
