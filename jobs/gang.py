"""Gangs: one train stage on N workers at once, data-parallel on MLX's ring backend.

A run with `train.workers: N > 1` plans its train stage as rank 0 and N - 1
`rank` stages (`jobs.dag`). Each is queued, claimed, fenced by attempt and
beaten like any stage; what makes them a gang is here:

- **Who may claim.** A rank is claimed only when enough live workers could
  hold the gang, and only by the oldest gang of its tier that could form
  (head of line): two gangs never each hold part of the farm waiting for the
  rest. A refused ticket is dropped; the reconciler pushes it again.
- **Seats.** A claimed rank's attempt row records the address its ring
  listens on and the dataset's sha256 as its worker reads it. The gang is
  formed when every rank is running and its current attempt has a seat.
- **Ending together.** Any rank's attempt ending badly ends the gang's
  attempt (`jobs.lifecycle`): every rank is queued again together, and rank 0
  resumes from its last checkpoint.

Queries on the caller's session; no Redis, no MLX.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import Session, col, select

from jobs import settings
from jobs.db import Experiment, Run, Stage, StageAttempt, WorkerRow, server_now
from jobs.experiment_spec import Resources
from jobs.queue import tier_for
from jobs.states import FINISHED, StageStatus, WorkerStatus


@dataclass(frozen=True)
class Seat:
    """One rank of a formed gang: where its ring listens, who runs it."""

    rank: int
    stage_id: int
    attempt: int
    worker: str
    host: str
    address: str  # ip:port
    dataset_sha256: str


def world_of(stage: Stage) -> int:
    """How many ranks train the stage's run together (1: not a gang)."""
    if stage.kind not in ("train", "rank"):
        return 1
    return int(stage.params.get("world", 1))


def rank_of(stage: Stage) -> int:
    return int(stage.params.get("rank", 0)) if stage.kind == "rank" else 0


def is_gang_stage(stage: Stage) -> bool:
    return world_of(stage) > 1


def gang_of(session: Session, run_id: int) -> list[Stage]:
    """The run's train stage and rank stages, rank 0 first."""
    stages = session.exec(
        select(Stage).where(Stage.run_id == run_id, col(Stage.kind).in_(["train", "rank"]))
    ).all()
    return sorted(stages, key=rank_of)


def _attempt_row(session: Session, stage: Stage) -> StageAttempt | None:
    return session.exec(
        select(StageAttempt).where(
            StageAttempt.stage_id == stage.id, StageAttempt.attempt == stage.attempt
        )
    ).first()


def take_seat(session: Session, stage: Stage, address: str, dataset_sha256: str) -> None:
    """Record where this attempt's rank listens (the caller guards the attempt)."""
    row = _attempt_row(session, stage)
    assert row is not None, f"stage {stage.id} attempt {stage.attempt} has no attempt row"
    row.ring_address, row.dataset_sha256 = address, dataset_sha256
    session.add(row)


def _taken_seats(session: Session, run_id: int) -> tuple[list[Seat], int]:
    """The seats taken in the ranks' current attempts, rank 0 first, and the world."""
    gang = gang_of(session, run_id)
    taken = []
    for stage in gang:
        row = _attempt_row(session, stage) if stage.status == StageStatus.RUNNING else None
        if row is not None and row.ring_address:
            taken.append(Seat(rank_of(stage), stage.id or 0, stage.attempt, row.worker, row.host,
                              row.ring_address, row.dataset_sha256 or ""))  # fmt: skip
    return taken, world_of(gang[0]) if gang else 1


def seats(session: Session, run_id: int) -> list[Seat] | None:
    """The formed gang of a run, rank 0 first; None while any rank is not
    running or has not taken its seat in its current attempt."""
    taken, world = _taken_seats(session, run_id)
    return taken if len(taken) == world else None


def seated(session: Session, run_id: int) -> tuple[int, int]:
    """(ranks seated in their current attempt, world): how far a gang has formed."""
    taken, world = _taken_seats(session, run_id)
    return len(taken), world


# --- who may claim -------------------------------------------------------------------------


def _memory_gb(session: Session, run_id: int) -> float:
    """Each rank's memory need, read as `jobs.lifecycle` reads it: the stored
    spec's resources, their defaults from the spec model."""
    run = session.get(Run, run_id)
    experiment = session.get(Experiment, run.experiment_id) if run else None
    stored = (experiment.spec.get("resources") or {}) if experiment else {}
    return Resources.model_validate(stored).min_memory_gb


def live_workers(session: Session, min_memory_gb: float) -> list[str]:
    """Workers beating within the lost window that can hold a rank of this tier."""
    cutoff = server_now(session) - timedelta(seconds=settings.lost_after_s())
    rows = session.exec(
        select(WorkerRow.name).where(
            col(WorkerRow.status).in_([WorkerStatus.IDLE, WorkerStatus.BUSY]),
            col(WorkerRow.memory_gb) >= tier_for(min_memory_gb),
            col(WorkerRow.last_heartbeat) >= cutoff,
        )
    ).all()
    return sorted(rows)


def claim_refusal(session: Session, stage: Stage) -> str | None:
    """Why this gang stage must not be claimed now, or None.

    Not while fewer live workers could hold it than it has ranks (it would
    hold some of them for nothing), and not ahead of an older gang of the same
    tier that could form (head of line: the older gang gets every worker that
    frees up, so two gangs never each hold half of the farm)."""
    world = world_of(stage)
    memory = _memory_gb(session, stage.run_id)
    live = len(live_workers(session, memory))
    if live < world:
        return (
            f"waiting for {world} workers with ≥ {tier_for(memory)} GB to train together: "
            f"{live} {'is' if live == 1 else 'are'} live"
        )
    # Older runs with a rank stage (only gangs have one) of which a rank is queued:
    # two indexed lookups, however many single-worker runs wait beside them.
    gangs = select(Stage.run_id).where(Stage.kind == "rank", col(Stage.run_id) < stage.run_id)
    forming = session.exec(
        select(Stage.run_id)
        .where(
            Stage.status == StageStatus.QUEUED,
            col(Stage.kind).in_(["train", "rank"]),
            col(Stage.run_id).in_(gangs),
        )
        .distinct()
    ).all()
    for run_id in sorted(forming):
        older_world = world_of(gang_of(session, run_id)[0])
        if older_world > live:
            continue  # a gang that cannot form now holds nobody
        if tier_for(_memory_gb(session, run_id)) == tier_for(memory):
            return f"waiting behind the gang of run {run_id}, which forms first"
    return None


def train_finished(session: Session, run_id: int) -> bool:
    """Rank 0 has ended for good: the other ranks have nothing left to join."""
    train = session.exec(select(Stage).where(Stage.run_id == run_id, Stage.kind == "train")).first()
    return train is None or train.status in FINISHED
