"""Submitting a validated experiment: DB rows first, then RQ jobs, all or nothing.

A sweep (`jobs.experiment_spec.sweep`) is submitted the same way in one transaction: a
`Sweep` row and one experiment per grid point, each with its own config
fingerprint, so each point pools on the leaderboard with any experiment of the
same config.
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from jobs import settings
from jobs.checks import Finding, ensure_quant_twin
from jobs.dag import plan_run
from jobs.db import Diagnostic, Experiment, Run, Stage, StageAttempt, Sweep, session_scope
from jobs.experiment_spec import ExperimentSpec, config_fingerprint, spec_to_yaml
from jobs.experiment_spec.sweep import SweepPoint, expand_sweep, point_label
from jobs.lifecycle import queue_train_stages
from jobs.limits import QuotaError, quota_problem
from jobs.problems import InputError, Problem
from jobs.queue import Ticket, push


def plan_submission(
    spec: ExperimentSpec, spec_yaml: str | None = None
) -> tuple[ExperimentSpec, str | None, Finding | None]:
    """The spec that will run, the YAML to store for it, and what the farm added.

    Below 5 bits a fused adapter can lose its signal, so a ≥ 5-bit twin is added
    to compare against (`ensure_quant_twin`). It is planned before anything is
    stored: the text as written lacks the twin, so the stored YAML is then the
    spec that runs, not the text."""
    planned, twin = ensure_quant_twin(spec)
    if twin is not None:
        note = twin.message.replace("\n", " ")
        spec_yaml = f"# {note}\n{spec_to_yaml(planned)}"
    return planned, spec_yaml, twin


# ------------------------------------------------------------------ queue quotas

# A run counts against the quotas until it has ended (`jobs.lifecycle.update_run_status`).
UNFINISHED = ("queued", "running")


def default_submitter() -> str:
    """Who submits from this process when nobody says: the OS user (`farm submit`)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "cli"


def unfinished_runs(session: Session, submitter: str | None = None) -> int:
    """Runs queued or running on the farm, or only those `submitter` submitted."""
    query = select(func.count()).select_from(Run).where(col(Run.status).in_(UNFINISHED))
    if submitter is not None:
        query = query.join(Experiment, col(Experiment.id) == Run.experiment_id).where(
            Experiment.submitter == submitter
        )
    return int(session.exec(query).one())


def check_quota(session: Session, adding: int, submitter: str) -> None:
    """Refuse a submission of `adding` runs that would take the farm's queue, or the
    submitter's share of it, over its quota (FARM_MAX_QUEUED_RUNS,
    FARM_MAX_QUEUED_RUNS_PER_SUBMITTER): a typo'd sweep must not bury everyone
    else's work. Raises QuotaError before anything is written."""
    problems = [
        Problem("farm", message)
        for message in (
            quota_problem(
                unfinished_runs(session),
                adding,
                settings.max_queued_runs(),
                "FARM_MAX_QUEUED_RUNS",
                "on the farm",
            ),
            quota_problem(
                unfinished_runs(session, submitter),
                adding,
                settings.max_queued_runs_per_submitter(),
                "FARM_MAX_QUEUED_RUNS_PER_SUBMITTER",
                f"submitted by {submitter}",
            ),
        )
        if message is not None
    ]
    if problems:
        raise QuotaError(problems)


# ------------------------------------------------------------------ rows


def create_rows(
    session: Session,
    spec: ExperimentSpec,
    spec_yaml: str | None = None,
    sweep_id: int | None = None,
    sweep_point: SweepPoint | None = None,
    submitter: str | None = None,
) -> Experiment:
    """Experiment, one Run per seed and the planned stages of each run (flushed, not
    committed). `spec` is stored as given: `plan_submission` comes first."""
    fingerprint = config_fingerprint(spec)
    experiment = Experiment(
        sweep_id=sweep_id,
        sweep_point=sweep_point,
        name=spec.name,
        fingerprint=fingerprint,
        base_model=spec.base_model,
        dataset=str(spec.dataset),
        suite=str(spec.eval.suite),
        spec_yaml=spec_yaml or spec_to_yaml(spec),
        spec=spec.model_dump(mode="json", by_alias=True),
        submitter=submitter,
    )
    session.add(experiment)
    session.flush()
    for seed in spec.seeds:
        add_run(session, experiment, spec, seed)
    return experiment


def add_run(session: Session, experiment: Experiment, spec: ExperimentSpec, seed: int) -> Run:
    """One run of `experiment` with `seed` and its planned stages (flushed)."""
    run = Run(experiment_id=experiment.id or 0, seed=seed, fingerprint=experiment.fingerprint)
    session.add(run)
    session.flush()
    ids: dict[str, int] = {}
    for planned in plan_run(spec):
        params = dict(planned.params)
        if planned.kind == "train":
            # The memory tier is not copied here: jobs.lifecycle reads it from
            # the stored spec, its one source.
            params["total"] = spec.train.iters
        stage = Stage(
            run_id=run.id or 0,
            kind=planned.kind,
            variant=planned.variant,
            params=params,
            depends_on=ids[planned.parent] if planned.parent else None,
        )
        session.add(stage)
        session.flush()
        ids[planned.key] = stage.id or 0
    return run


def submit_experiment(
    spec: ExperimentSpec,
    redis: Redis,
    spec_yaml: str | None = None,
    findings: Sequence[Finding] = (),
    submitter: str | None = None,
) -> int:
    """Write the experiment and enqueue its train stages; returns the experiment id.

    Redis is checked before anything is written, the queue quotas before any row
    is (QuotaError: `submitter`, default the OS user, is counted), and a failure
    while enqueuing rolls back the rows and removes the jobs already enqueued."""
    redis.ping()
    spec, spec_yaml, twin = plan_submission(spec, spec_yaml)
    findings = [*findings, twin] if twin else list(findings)
    who = submitter or default_submitter()
    with session_scope() as session:
        check_quota(session, len(spec.seeds), who)
        experiment = create_rows(session, spec, spec_yaml, submitter=who)
        _add_findings(session, experiment, findings)
        runs = session.exec(_runs_of(experiment.id or 0)).all()
        tickets = queue_train_stages(session, runs)
        experiment_id = experiment.id or 0
    push_tickets(redis, tickets, experiment_id)
    return experiment_id


def _add_findings(session: Session, experiment: Experiment, findings: Sequence[Finding]) -> None:
    for finding in findings:
        session.add(
            Diagnostic(
                experiment_id=experiment.id,
                fingerprint=experiment.fingerprint,
                scope="preflight",
                pattern=finding.pattern,
                severity=finding.severity,
                message=finding.render(),
                evidence=finding.evidence,
            )
        )


# ------------------------------------------------------------------ sweeps


@dataclass(frozen=True)
class GridPoint:
    """One grid point as it will run: its values, its planned spec and YAML, what
    the farm added (the quantization twin), its fingerprint and stages per run."""

    point: SweepPoint
    spec: ExperimentSpec
    spec_yaml: str
    twin: Finding | None
    fingerprint: str
    stages: int

    @property
    def label(self) -> str:
        return point_label(self.point)


@dataclass(frozen=True)
class SweepPlan:
    """A submission's grid, planned and counted before anything is written."""

    name: str
    axes: dict[str, list[Any]]
    spec_yaml: str
    seeds: list[int]
    points: list[GridPoint]

    @property
    def runs(self) -> int:
        return len(self.points) * len(self.seeds)

    @property
    def is_sweep(self) -> bool:
        return bool(self.axes)

    def summary(self) -> str:
        """`4 grid points × 3 seeds = 12 runs, 8 stages per run` (the same line in
        `farm submit --dry-run` and the web form)."""
        stages = sorted({p.stages for p in self.points})
        per_run = "/".join(map(str, stages))
        return (
            f"{len(self.points)} grid points × {len(self.seeds)} seeds = {self.runs} runs, "
            f"{per_run} stages per run"
        )


def plan_sweep(
    spec: ExperimentSpec,
    spec_yaml: str | None = None,
    grid: Sequence[tuple[SweepPoint, ExperimentSpec]] | None = None,
    source: str = "<spec>",
) -> SweepPlan:
    """Expand (unless `grid` is given, from `jobs.experiment_spec.sweep.parse_sweep`) and plan
    every grid point like `plan_submission`. Two points that would train the same
    config (e.g. LoRA rank under a full fine-tune) are refused: they would pool."""
    grid = expand_sweep(spec, source=source) if grid is None else grid
    points: list[GridPoint] = []
    first: dict[str, GridPoint] = {}
    problems: list[Problem] = []
    for point, point_spec in grid:
        planned, twin_yaml, twin = plan_submission(point_spec)
        text = twin_yaml or spec_to_yaml(planned)  # with the twin's note when one was added
        if point:
            text = f"# grid point of sweep {spec.name}: {point_label(point)}\n{text}"
        fingerprint = config_fingerprint(planned)
        stages = len(plan_run(planned))
        gp = GridPoint(point, planned, text, twin, fingerprint, stages)
        if fingerprint in first:
            problems.append(
                Problem(
                    source,
                    f"grid points {first[fingerprint].label} and {gp.label} train the same "
                    "config (the knob changes nothing there) — remove one of the values",
                    None,
                    "sweep",
                )
            )
        first.setdefault(fingerprint, gp)
        points.append(gp)
    if problems:
        raise InputError(problems)
    return SweepPlan(
        name=spec.name,
        axes=dict(spec.sweep or {}),
        spec_yaml=spec_yaml or spec_to_yaml(spec),
        seeds=list(spec.seeds),
        points=points,
    )


def submit_sweep(
    plan: SweepPlan,
    redis: Redis,
    findings: Sequence[Finding] = (),
    submitter: str | None = None,
) -> int:
    """Write the Sweep row and one experiment per grid point in one transaction, then
    enqueue every train stage; returns the sweep id. All or nothing, as
    `submit_experiment`: Redis is checked first, the quotas count every run of the
    grid, and a failed push withdraws the whole sweep. `findings` (the preflight of
    the spec) are kept on every point."""
    redis.ping()
    who = submitter or default_submitter()
    with session_scope() as session:
        check_quota(session, plan.runs, who)
        sweep = Sweep(name=plan.name, axes=plan.axes, spec_yaml=plan.spec_yaml)
        session.add(sweep)
        session.flush()
        experiments: list[Experiment] = []
        for gp in plan.points:
            experiment = create_rows(session, gp.spec, gp.spec_yaml, sweep.id, gp.point, who)
            _add_findings(session, experiment, [*findings, *([gp.twin] if gp.twin else [])])
            experiments.append(experiment)
        ids = [e.id or 0 for e in experiments]
        runs = session.exec(select(Run).where(col(Run.experiment_id).in_(ids)).order_by(Run.id))
        tickets = queue_train_stages(session, runs.all())
        sweep_id = sweep.id or 0
    try:
        push_tickets(redis, tickets, *ids)
    except BaseException:
        with session_scope() as session:
            session.execute(delete(Sweep).where(Sweep.id == sweep_id))
        raise
    return sweep_id


def sweep_experiment_ids(session: Session, sweep_id: int) -> list[int]:
    query = select(Experiment.id).where(Experiment.sweep_id == sweep_id).order_by(Experiment.id)
    return [i for i in session.exec(query).all() if i is not None]


def push_tickets(redis: Redis, tickets: Sequence[Ticket], *experiment_ids: int) -> None:
    """Push the train jobs once the rows are committed (a worker that takes a
    job must find its stage). If Redis fails half-way, the experiments are
    withdrawn: their rows deleted and the jobs already pushed removed."""
    pushed: list[str] = []
    try:
        for ticket in tickets:
            push(redis, ticket)
            pushed.append(ticket.job_id)
    except BaseException:
        for job_id in pushed:
            try:
                Job.fetch(job_id, connection=redis, serializer=JSONSerializer).delete()
            except Exception:  # already gone; nothing else to undo
                pass
        for experiment_id in experiment_ids:
            delete_experiment(experiment_id)
        raise


def delete_experiment(experiment_id: int) -> None:
    with session_scope() as session:
        run_ids = [r.id for r in session.exec(_runs_of(experiment_id)).all()]
        stage_ids = select(Stage.id).where(col(Stage.run_id).in_(run_ids))
        session.execute(delete(StageAttempt).where(col(StageAttempt.stage_id).in_(stage_ids)))
        session.execute(delete(Stage).where(col(Stage.run_id).in_(run_ids)))
        session.execute(delete(Diagnostic).where(Diagnostic.experiment_id == experiment_id))
        session.execute(delete(Run).where(Run.experiment_id == experiment_id))
        session.execute(delete(Experiment).where(Experiment.id == experiment_id))


def _runs_of(experiment_id: int):  # type: ignore[no-untyped-def]
    return select(Run).where(Run.experiment_id == experiment_id).order_by(Run.id)
