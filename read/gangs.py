"""A run trained by a gang of workers (`train.workers: N`): its ranks, where
they run, how fast each goes, and why a gang that has not formed waits.
Shared by the run page and `farm status`."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import Session, select

from jobs.db import StageAttempt
from jobs.gang import gang_of, rank_of, world_of
from jobs.states import StageStatus


@dataclass
class RankView:
    rank: int
    status: str
    worker: str | None
    host: str | None
    address: str | None  # where its ring listens, this attempt
    progress: int | None
    tokens_per_sec: float | None  # rank 0: the gang's; the others: their share


@dataclass
class GangView:
    world: int
    ranks: list[RankView] = field(default_factory=list)
    waiting: str | None = None  # why it has not formed: too few workers, an older gang…

    def lines(self) -> list[str]:
        """The gang in words, a line per rank (for `farm status`)."""
        out = [f"gang of {self.world} workers" + (f": {self.waiting}" if self.waiting else "")]
        for r in self.ranks:
            speed = f" {r.tokens_per_sec:.0f} tok/s" if r.tokens_per_sec else ""
            where = f" on {r.worker} ({r.host}, {r.address})" if r.worker and r.address else ""
            out.append(f"rank {r.rank} {r.status}{where}{speed}")
        return out


def gang_view(session: Session, run_id: int) -> GangView | None:
    """None for a run trained by one worker."""
    stages = gang_of(session, run_id)
    if not stages or world_of(stages[0]) <= 1:
        return None
    view = GangView(world_of(stages[0]))
    for stage in stages:
        row = session.exec(
            select(StageAttempt).where(
                StageAttempt.stage_id == stage.id, StageAttempt.attempt == stage.attempt
            )
        ).first()
        running = stage.status == StageStatus.RUNNING
        view.ranks.append(
            RankView(
                rank=rank_of(stage),
                status=stage.status,
                worker=stage.worker if running or stage.status == StageStatus.DONE else None,
                host=row.host if row else None,
                address=row.ring_address if row else None,
                progress=stage.progress,
                tokens_per_sec=stage.tokens_per_sec,
            )
        )
        if stage.status == StageStatus.QUEUED and stage.error and view.waiting is None:
            view.waiting = stage.error.strip().splitlines()[0]
    return view
