"""One log format for the worker, its work horse and the stage child.

Every line names its module, and the stage and attempt it is about when it is
about one, so lines from the three processes of one stage read alike:

    12:03:04 WARNING worker.stage_job [stage 7, attempt 2]: heartbeat failed: …

Each module logs with its own logger (`logging.getLogger(__name__)`), as rq's
modules do; the stage comes from a context variable set around the work on it
(`about_stage`), never passed along for the log's sake. rq's own lines take
the same format: its worker adds no handler of its own when one is in place.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

FORMAT = "%(asctime)s %(levelname)s %(name)s%(stage)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"

_stage: ContextVar[str] = ContextVar("lorafarm_stage", default="")


@contextmanager
def about_stage(stage_id: int, attempt: int) -> Iterator[None]:
    """Lines logged in here (in this thread or task) name this stage and attempt."""
    token = _stage.set(f" [stage {stage_id}, attempt {attempt}]")
    try:
        yield
    finally:
        _stage.reset(token)


class _StageField(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.stage = _stage.get()
        return True


def configure(level: int = logging.INFO) -> None:
    """Every logger's lines, rq's too, to stderr in FORMAT; once per process."""
    root = logging.getLogger()
    if any(isinstance(f, _StageField) for h in root.handlers for f in h.filters):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    handler.addFilter(_StageField())
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic tells of every plug-in it sets up on each start; only its warnings
    # say anything a worker's reader needs.
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
