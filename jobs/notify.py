"""Telling people when an experiment ends: one JSON POST per event, at least once.

An overnight sweep that finished (or failed, or was cancelled), or a run the
adherence probe stopped early, is worth a message in Slack, Discord or ntfy:
each shows the payload's `text` field. The URL is the experiment's `notify.url`
or, for every experiment, `FARM_NOTIFY_URL`.

The database is the outbox. Each reconciler pass (which runs off every
worker's heartbeat, in its own process) records the events it finds as
`Notification` rows, one per event by a unique key, then sends the ones not
yet delivered, each with a short timeout, retrying failures with a growing
delay. A stage never waits for a message, a restart never sends one twice
(the row says it was delivered), and a receiver that is down only delays its
own messages. Only events of the last day are recorded, so turning
`FARM_NOTIFY_URL` on does not announce every experiment the farm ever ran.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func
from sqlmodel import Session, col, select

from jobs import settings
from jobs.db import Experiment, Notification, Run, Stage, server_now
from jobs.states import StageStatus

log = logging.getLogger(__name__)

RECENT = timedelta(days=1)
SEND_TIMEOUT_S = 5.0
MAX_ATTEMPTS = 12  # about an hour and a half of retries, then given up (and kept)
MAX_SENDS_PER_PASS = 20  # a pass stays short whatever piled up
ACTIVE_RUN = {"queued", "running"}


@dataclass(frozen=True)
class Event:
    """Something to tell: its unique key, kind, experiment, run, and message."""

    key: str
    kind: str  # experiment.finished | experiment.failed | experiment.cancelled | run.stopped_early
    experiment_id: int
    run_id: int | None
    text: str


def experiment_outcome(run_statuses: Iterable[str]) -> str | None:
    """How an experiment ended, from its runs' statuses; None while one is active."""
    statuses = list(run_statuses)
    if not statuses or any(s in ACTIVE_RUN for s in statuses):
        return None
    if all(s == "done" for s in statuses):
        return "finished"
    if "failed" in statuses:
        return "failed"
    return "cancelled" if "cancelled" in statuses else "finished"


def outcome_text(name: str, experiment_id: int, outcome: str, counts: dict[str, int],
                 adherence: Sequence[float], link: str) -> str:  # fmt: skip
    """'lorafarm: experiment demo (#3) finished — 3 runs done; adapter adherence 0.52
    (0.44–0.65 over 3 seeds). http://…'"""
    runs = ", ".join(f"{n} runs {status}" if n != 1 else f"1 run {status}"
                     for status, n in sorted(counts.items()))  # fmt: skip
    scores = ""
    if adherence:
        mean = sum(adherence) / len(adherence)
        scores = (f"; adapter adherence {mean:.2f} ({min(adherence):.2f}–{max(adherence):.2f} "
                  f"over {len(adherence)} seeds)")  # fmt: skip
    return f"lorafarm: experiment {name} (#{experiment_id}) {outcome} — {runs}{scores}. {link}"


def experiment_link(experiment_id: int) -> str:
    return f"{settings.ui_url()}/runs?experiment={experiment_id}"


def run_link(run_id: int) -> str:
    return f"{settings.ui_url()}/run?run={run_id}"


def notify_url(experiment: Experiment) -> str | None:
    """Where this experiment's events go: its spec's notify.url, else the farm's."""
    notify = (experiment.spec or {}).get("notify") or {}
    return notify.get("url") or settings.notify_url()


# --------------------------------------------------------------- finding events


def find_events(session: Session, now: datetime | None = None) -> list[tuple[Event, str]]:
    """Events of the last day not yet recorded, each with the URL it goes to."""
    since = (now or server_now(session)) - RECENT
    recorded = set(session.exec(select(Notification.key).where(
        col(Notification.created_at) >= since - RECENT)).all())  # fmt: skip
    ended = session.execute(
        select(Run.experiment_id)
        .group_by(Run.experiment_id)
        .having(func.max(Run.finished_at) >= since)
    ).scalars()
    out: list[tuple[Event, str]] = []
    for experiment_id in list(ended):
        experiment = session.get(Experiment, experiment_id)
        url = notify_url(experiment) if experiment else None
        if experiment is None or url is None:
            continue
        event = experiment_event(session, experiment)
        if event is not None and event.key not in recorded:
            out.append((event, url))
    stopped = session.execute(
        select(Stage.run_id, Run.experiment_id, Run.seed, Stage.early_stop)
        .join(Run, Run.id == Stage.run_id)
        .where(
            Stage.kind == "train",
            col(Stage.early_stop).is_not(None),
            Stage.status == StageStatus.DONE,
            col(Stage.finished_at) >= since,
        )  # fmt: skip
    ).all()
    for run_id, experiment_id, seed, reason in stopped:
        key = f"run:{run_id}:stopped_early"
        experiment = session.get(Experiment, experiment_id)
        url = notify_url(experiment) if experiment else None
        if key in recorded or experiment is None or url is None:
            continue
        text = (f"lorafarm: {experiment.name} (#{experiment_id}) seed {seed} stopped early "
                f"— {reason}. {run_link(run_id)}")  # fmt: skip
        out.append((Event(key, "run.stopped_early", experiment_id, run_id, text), url))
    return out


def experiment_event(session: Session, experiment: Experiment) -> Event | None:
    """The experiment's end, if it has ended."""
    statuses = session.exec(select(Run.status).where(Run.experiment_id == experiment.id)).all()
    outcome = experiment_outcome(statuses)
    if outcome is None:
        return None
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    adherence = [float(a) for a in session.exec(
        select(Stage.adherence).join(Run, Run.id == Stage.run_id)
        .where(Run.experiment_id == experiment.id, Stage.kind == "eval",
               Stage.variant == "adapter", Stage.status == StageStatus.DONE,
               col(Stage.adherence).is_not(None))).all()]  # fmt: skip
    experiment_id = experiment.id or 0
    text = outcome_text(experiment.name, experiment_id, outcome, counts, adherence,
                        experiment_link(experiment_id))  # fmt: skip
    return Event(f"experiment:{experiment_id}", f"experiment.{outcome}", experiment_id, None, text)


def record_events(session: Session, events: Sequence[tuple[Event, str]]) -> int:
    """Outbox rows for new events (the unique key keeps a second pass from adding one)."""
    now = server_now(session)
    for event, url in events:
        payload = {"text": event.text, "event": event.kind, "experiment": event.experiment_id,
                   "run": event.run_id}  # fmt: skip
        session.add(Notification(key=event.key, event=event.kind,
                                 experiment_id=event.experiment_id, run_id=event.run_id,
                                 url=url, payload=payload, next_try_at=now))  # fmt: skip
    return len(events)


# --------------------------------------------------------------- delivering them


def post(url: str, payload: dict[str, Any], timeout_s: float = SEND_TIMEOUT_S) -> str | None:
    """POST the JSON payload; None on a 2xx answer, else why not."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "lorafarm"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - http(s) only, checked at submit
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return type(exc).__name__ + (f": {exc.reason}" if hasattr(exc, "reason") else "")


def retry_delay_s(attempts: int) -> float:
    """After the n-th failed attempt: 2, 4, 8 … seconds, at most 15 minutes."""
    return float(min(2**attempts, 900))


def where(url: str) -> str:
    """A URL fit for a log line: scheme and host only (webhook paths hold secrets)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}"


def deliver_pending(session: Session, now: datetime | None = None) -> list[int]:
    """Send what is due; returns the ids delivered. Each row is updated as soon as
    its send ends, so a pass cut off half-way loses nothing."""
    now = now or server_now(session)
    due = session.exec(
        select(Notification)
        .where(
            col(Notification.delivered_at).is_(None),
            col(Notification.next_try_at) <= now,
            Notification.attempts < MAX_ATTEMPTS,
        )  # fmt: skip
        .order_by(col(Notification.id))
        .limit(MAX_SENDS_PER_PASS)
    ).all()
    delivered = []
    for note in due:
        error = post(note.url, dict(note.payload))
        note.attempts += 1
        if error is None:
            note.delivered_at, note.last_error = server_now(session), None
            delivered.append(note.id or 0)
        else:
            note.last_error = error
            note.next_try_at = server_now(session) + timedelta(seconds=retry_delay_s(note.attempts))
            log.warning("notification %s to %s failed (%s); attempt %s of %s", note.id,
                        where(note.url), error, note.attempts, MAX_ATTEMPTS)  # fmt: skip
        session.add(note)
        session.commit()
    return delivered


def notify_pass(session: Session) -> list[int]:
    """One reconciler step: record new events, then deliver what is due."""
    record_events(session, find_events(session))
    session.commit()
    return deliver_pending(session)
