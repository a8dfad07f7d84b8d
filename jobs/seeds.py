"""Adding seeds to an experiment: more runs of the same config, pooled by fingerprint.

A verdict between two configurations often needs more seeds than the first
submission had (`jobs.stats.seeds_needed` says how many). `add_seeds` plans
new runs on the experiment that is already there, with seeds no run of the
same config fingerprint has used (a repeated seed would only repeat a run),
and queues their train stages; the runs already done are not touched. As at
submit, Redis is checked first and a failed push withdraws the new runs.
"""

from __future__ import annotations

from redis import Redis
from sqlalchemy import delete
from sqlmodel import Session, col, select

from jobs.db import Experiment, Run, Stage, StageAttempt, session_scope
from jobs.experiment_spec import ExperimentSpec
from jobs.lifecycle import queue_train_stages
from jobs.limits import MAX_SEEDS
from jobs.problems import InputError, Problem
from jobs.queue import push_all
from jobs.states import StageStatus
from jobs.submit import add_run, check_quota, default_submitter

MAX_SEED_VALUE = 2**32 - 1


def new_seeds(used: set[int], count: int) -> list[int]:
    """`count` seeds after the largest used, skipping any already used."""
    seeds: list[int] = []
    candidate = max(used, default=0) + 1
    while len(seeds) < count:
        if candidate > MAX_SEED_VALUE:
            candidate = 0
        if candidate not in used:
            seeds.append(candidate)
        candidate += 1
    return seeds


def _refusal(field: str, message: str) -> InputError:
    return InputError([Problem(file="farm seeds add", message=message, field=field)])


def check_addable(session: Session, experiment_id: int, count: int) -> Experiment:
    """The experiment, or an InputError saying why seeds cannot be added."""
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        raise _refusal("experiment", f"no experiment {experiment_id}")
    statuses = set(session.exec(select(Run.status).where(Run.experiment_id == experiment_id)).all())
    if StageStatus.CANCELLED in statuses:
        raise _refusal(
            "experiment",
            f"experiment {experiment_id} was cancelled; submit its spec again to run it",
        )
    runs = len(experiment.spec.get("seeds") or [])
    if count < 1:
        raise _refusal("N", f"must be ≥ 1, got {count}")
    if runs + count > MAX_SEEDS:
        raise _refusal(
            "N", f"{runs} + {count} seeds is over the limit of {MAX_SEEDS} per experiment"
        )
    return experiment


def add_seeds(experiment_id: int, count: int, redis: Redis) -> list[int]:
    """Add `count` new seeds to an experiment and queue their runs; returns the seeds."""
    with session_scope() as session:
        check_addable(session, experiment_id, count)
    redis.ping()  # nothing is written unless the jobs can be pushed
    with session_scope() as session:
        experiment = check_addable(session, experiment_id, count)
        # The new runs count against the queue quotas like a submission's.
        check_quota(session, count, experiment.submitter or default_submitter())
        spec = ExperimentSpec.model_validate(experiment.spec)
        used = set(
            session.exec(select(Run.seed).where(Run.fingerprint == experiment.fingerprint)).all()
        )
        seeds = new_seeds(used, count)
        runs = [add_run(session, experiment, spec, seed) for seed in seeds]
        # The stored spec lists every seed the experiment runs (the fingerprint
        # leaves seeds out, so its rows keep pooling as before).
        experiment.spec = {**experiment.spec, "seeds": [*experiment.spec.get("seeds", []), *seeds]}
        session.add(experiment)
        tickets = queue_train_stages(session, runs)
        run_ids = [run.id or 0 for run in runs]
    if len(push_all(redis, tickets)) < len(tickets):
        withdraw_runs(run_ids, experiment_id, seeds)
        raise _refusal("redis", "Redis refused the new jobs; nothing was added")
    return seeds


def withdraw_runs(run_ids: list[int], experiment_id: int, seeds: list[int]) -> None:
    """Remove runs added a moment ago (their push failed)."""
    with session_scope() as session:
        stage_ids = select(Stage.id).where(col(Stage.run_id).in_(run_ids))
        session.execute(delete(StageAttempt).where(col(StageAttempt.stage_id).in_(stage_ids)))
        session.execute(delete(Stage).where(col(Stage.run_id).in_(run_ids)))
        session.execute(delete(Run).where(col(Run.id).in_(run_ids)))
        experiment = session.get(Experiment, experiment_id)
        if experiment is not None:
            kept = [s for s in experiment.spec.get("seeds", []) if s not in set(seeds)]
            experiment.spec = {**experiment.spec, "seeds": kept}
            session.add(experiment)
