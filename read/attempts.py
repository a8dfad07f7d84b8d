"""A stage's attempts in words: who ran it, how each try ended, where it resumed.

`farm status`, the runs page and the run page all tell the same story from
the `StageAttempt` rows, so the wording lives here once. The functions that
shape text are pure (rows in, strings out); `attempts_by_stage` is the one
query that fetches the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlmodel import Session, col, select

from jobs.db import StageAttempt
from jobs.states import AttemptOutcome, StageStatus
from read.stages import stage_label

# A reason is shown on one line; longer ones (log tails) are cut here.
MAX_REASON_CHARS = 240

# How each outcome reads after "attempt k on <worker>:".
OUTCOME_WORDS = {
    AttemptOutcome.RUNNING: "running",
    AttemptOutcome.DONE: "done",
    AttemptOutcome.FAILED: "failed",
    AttemptOutcome.DIED: "died",
    AttemptOutcome.LOST: "lost",
    AttemptOutcome.STALE: "superseded",
    AttemptOutcome.CANCELLED: "cancelled",
    AttemptOutcome.REPLANNED: "re-planned",
}

# Outcomes after which the farm tries the stage again by itself.
RETRIED = frozenset({AttemptOutcome.DIED, AttemptOutcome.LOST})


class AttemptLike(Protocol):
    """A `StageAttempt` row, or anything shaped like one (tests, JSON)."""

    attempt: int
    worker: str
    outcome: str
    reason: str | None
    resumed_from: int | None
    started_at: datetime
    ended_at: datetime | None


class StageLike(Protocol):
    """The fields of a `Stage` the attempt lines read."""

    kind: str
    variant: str
    status: str
    attempt: int
    resumed_from: int | None
    progress: int | None
    total: int | None


def one_line(reason: str | None, outcome: str = "") -> str:
    """The first line of a reason. A stage whose own code raised stores its exit
    and then the log tail; its last line names the exception, so that is kept
    too, without the traceback in between."""
    lines = [line.strip() for line in (reason or "").strip().splitlines() if line.strip()]
    if not lines:
        return ""
    text = lines[0]
    if outcome == AttemptOutcome.FAILED and len(lines) > 1:
        text += f": {lines[-1]}"
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1].rstrip() + "…"
    return text


def _utc(moment: datetime | None) -> datetime | None:
    # SQLite hands datetimes back naive; the farm stores UTC only.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _progress(stage: StageLike) -> str:
    if not stage.total:
        return ""
    return f" {stage.progress or 0}/{stage.total}"


def _after(row: AttemptLike, stage: StageLike, rows: Sequence[AttemptLike]) -> str:
    """What became of the stage after an attempt that died or was lost."""
    if row is not rows[-1] or row.outcome not in RETRIED:
        return ""  # the next line shows the retry
    if stage.status in (StageStatus.QUEUED, StageStatus.WAITING):
        return "; retrying"
    if stage.status == StageStatus.FAILED:
        return "; gave up (no retries left)"
    return ""


def attempt_line(row: AttemptLike, stage: StageLike, rows: Sequence[AttemptLike]) -> str:
    """One attempt, e.g. "attempt 1 on mac-a: lost — worker mac-a stopped …"."""
    reason = one_line(row.reason, row.outcome)
    if row.outcome == AttemptOutcome.REPLANNED:
        # Not an end of this attempt's own doing: the run starts over elsewhere.
        return f"re-planned: {reason}" if reason else "re-planned: the run trains again"
    head = f"attempt {row.attempt} on {row.worker}"
    resumed = f"resumed from iteration {row.resumed_from}" if row.resumed_from is not None else ""
    if row.outcome == AttemptOutcome.RUNNING:
        doing = "running" + (_progress(stage) if row.attempt == stage.attempt else "")
        return f"{head}: {resumed} — {doing}" if resumed else f"{head}: {doing}"
    words = OUTCOME_WORDS.get(row.outcome, row.outcome)  # type: ignore[call-overload]
    if resumed:
        words = f"{resumed}, then {words}"
    line = f"{head}: {words}"
    if reason and row.outcome != AttemptOutcome.DONE:
        line += f" — {reason}"
    return line + _after(row, stage, rows)


def attempt_lines(stage: StageLike, rows: Iterable[AttemptLike]) -> list[str]:
    """Every attempt of a stage, oldest first, plus the next one if it is queued."""
    ordered = sorted(rows, key=lambda r: (r.attempt, r.outcome == AttemptOutcome.REPLANNED))
    lines = [attempt_line(row, stage, ordered) for row in ordered]
    if ordered and stage.status == StageStatus.QUEUED:
        lines.append(f"attempt {stage.attempt + 1}: queued, waiting for a worker")
    return lines


def has_history(stage: StageLike, rows: Sequence[AttemptLike]) -> bool:
    """Worth telling: more than one attempt, a resume, or an attempt that did not
    simply run or finish (lost, died, re-planned…)."""
    if stage.attempt > 1 or stage.resumed_from is not None or len(rows) > 1:
        return True
    plain = (AttemptOutcome.RUNNING, AttemptOutcome.DONE, AttemptOutcome.FAILED)
    return any(r.outcome not in plain or r.resumed_from is not None for r in rows)


def attempt_dicts(rows: Iterable[AttemptLike]) -> list[dict[str, Any]]:
    """Attempts as `farm status --json` prints them."""
    return [
        {
            "attempt": r.attempt,
            "worker": r.worker,
            "outcome": str(r.outcome),
            "reason": one_line(r.reason, r.outcome) or None,
            "resumed_from": r.resumed_from,
            "started_at": _iso(r.started_at),
            "ended_at": _iso(r.ended_at),
        }
        for r in sorted(rows, key=lambda r: (r.attempt, r.outcome == AttemptOutcome.REPLANNED))
    ]


def _iso(moment: datetime | None) -> str | None:
    aware = _utc(moment)
    return aware.isoformat(timespec="seconds") if aware else None


def progress_note(stage: StageLike) -> str:
    """A short note for a progress bar or a stage line, e.g. "attempt 2, resumed
    from 20", or "attempt 3 queued" while the next try waits for a worker."""
    if stage.status == StageStatus.QUEUED and stage.attempt >= 1:
        return f"attempt {stage.attempt + 1} queued"
    if stage.attempt <= 1 and stage.resumed_from is None:
        return ""
    note = f"attempt {stage.attempt}"
    if stage.resumed_from is not None:
        note += f", resumed from {stage.resumed_from}"
    return note


def run_story(stages: Iterable[tuple[StageLike, Sequence[AttemptLike]]]) -> str:
    """One sentence for the top of the run page when any stage was retried,
    resumed or re-planned, e.g. "This run lost worker mac-a at 14:02 UTC; train
    resumed on mac-b from iteration 20 (attempt 2)." Empty when nothing was."""
    lost: list[str] = []
    clauses: list[str] = []
    for stage, rows in stages:
        if not has_history(stage, rows):
            continue
        label = stage_label(stage.kind, stage.variant)
        ordered = sorted(rows, key=lambda r: (r.attempt, r.outcome == AttemptOutcome.REPLANNED))
        for row in ordered:
            clause = _event(label, row, lost)
            if clause:
                clauses.append(clause)
        clauses.append(_now(label, stage, ordered))
    clauses = [c for c in clauses if c]
    if not lost and not clauses:
        return ""
    if lost:
        head = "This run lost worker " + _and(lost)
        return "; ".join([head, *clauses]) + "."
    return "In this run, " + "; ".join(clauses) + "."


def _event(label: str, row: AttemptLike, lost: list[str]) -> str:
    """A clause for an attempt that ended badly; lost workers are gathered apart."""
    when = _utc(row.ended_at)
    at = f" at {when:%H:%M} UTC" if when else ""
    if row.outcome == AttemptOutcome.LOST:
        lost.append(f"{row.worker}{at}")
        return ""
    if row.outcome == AttemptOutcome.DIED:
        return f"{label} attempt {row.attempt} on {row.worker} died ({one_line(row.reason)})"
    if row.outcome == AttemptOutcome.REPLANNED:
        return (
            f"{label} was re-planned{at}: worker {row.worker}, which holds its checkpoints, "
            "was gone too long"
        )
    return ""


def _now(label: str, stage: StageLike, rows: Sequence[AttemptLike]) -> str:
    """Where the stage stands after its troubles."""
    last = rows[-1] if rows else None
    if stage.status == StageStatus.QUEUED:
        return f"{label} is queued for attempt {stage.attempt + 1}"
    if last is None or last.outcome not in (AttemptOutcome.RUNNING, AttemptOutcome.DONE):
        return ""
    if last.attempt <= 1 and last.resumed_from is None:
        return ""
    if last.resumed_from is not None:
        verb = "resumed" if last.outcome == AttemptOutcome.RUNNING else "resumed and finished"
        return (
            f"{label} {verb} on {last.worker} from iteration {last.resumed_from} "
            f"(attempt {last.attempt})"
        )
    verb = "is running again" if last.outcome == AttemptOutcome.RUNNING else "finished"
    return f"{label} {verb} on {last.worker} (attempt {last.attempt})"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def attempts_by_stage(session: Session, stage_ids: Sequence[int]) -> dict[int, list[StageAttempt]]:
    """Every attempt row of these stages, by stage, oldest first (one query)."""
    out: dict[int, list[StageAttempt]] = {i: [] for i in stage_ids}
    if not stage_ids:
        return out
    rows = session.exec(
        select(StageAttempt)
        .where(col(StageAttempt.stage_id).in_(list(stage_ids)))
        .order_by(col(StageAttempt.stage_id), col(StageAttempt.attempt), col(StageAttempt.id))
    ).all()
    for row in rows:
        out[row.stage_id].append(row)
    return out
