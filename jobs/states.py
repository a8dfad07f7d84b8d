"""The states a stage, a run and a worker can be in.

`StageStatus` follows RQ's `JobStatus(StrEnum)`: members compare equal to
their strings, so rows, JSON and queries keep plain text. Only
`jobs.lifecycle` moves a stage from one state to another.
"""

from __future__ import annotations

from enum import StrEnum


class StageStatus(StrEnum):
    WAITING = "waiting"  # planned; its parent has not finished
    QUEUED = "queued"  # runnable; an RQ job carries it (or the reconciler will give it one)
    RUNNING = "running"  # claimed by a worker, attempt `Stage.attempt`
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # a parent failed or nothing was left to evaluate
    CANCELLED = "cancelled"


FINISHED = frozenset({StageStatus.DONE, StageStatus.FAILED, StageStatus.SKIPPED,
                      StageStatus.CANCELLED})  # fmt: skip
ACTIVE = frozenset({StageStatus.WAITING, StageStatus.QUEUED, StageStatus.RUNNING})
CLAIMABLE = frozenset({StageStatus.QUEUED, StageStatus.WAITING})
RETRYABLE = frozenset({StageStatus.FAILED, StageStatus.CANCELLED, StageStatus.SKIPPED})


class AttemptOutcome(StrEnum):
    """How one attempt at a stage ended, in the `stageattempt` table."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # the stage's own code raised: not retried
    DIED = "died"  # killed by a signal or out of memory: retried
    LOST = "lost"  # its worker stopped beating: retried elsewhere
    STALE = "stale"  # a newer attempt took over; this one's writes are refused
    CANCELLED = "cancelled"
    REPLANNED = "replanned"  # its worker was gone too long; the run trains again
    # A rank of a gang let go without fault of its own: its gang did not form in
    # time, or another rank ended the gang's attempt. Queued again, not counted
    # as a retry.
    RELEASED = "released"


class WorkerStatus(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    OFFLINE = "offline"  # stopped cleanly
    LOST = "lost"  # stopped beating without saying goodbye
