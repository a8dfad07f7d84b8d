"""Submitting a validated experiment: DB rows first, then RQ jobs, all or nothing."""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy import delete
from sqlmodel import Session, col, select

from jobs.checks import Finding, ensure_quant_twin
from jobs.dag import plan_run
from jobs.db import Diagnostic, Experiment, Run, Stage, StageAttempt, session_scope
from jobs.lifecycle import queue_train_stages
from jobs.queue import Ticket, push
from jobs.spec import ExperimentSpec, config_fingerprint, spec_to_yaml


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


def create_rows(session: Session, spec: ExperimentSpec, spec_yaml: str | None = None) -> Experiment:
    """Experiment, one Run per seed and the planned stages of each run (flushed, not
    committed). `spec` is stored as given: `plan_submission` comes first."""
    fingerprint = config_fingerprint(spec)
    experiment = Experiment(
        name=spec.name,
        fingerprint=fingerprint,
        base_model=spec.base_model,
        dataset=str(spec.dataset),
        suite=str(spec.eval.suite),
        spec_yaml=spec_yaml or spec_to_yaml(spec),
        spec=spec.model_dump(mode="json", by_alias=True),
    )
    session.add(experiment)
    session.flush()
    for seed in spec.seeds:
        run = Run(experiment_id=experiment.id or 0, seed=seed, fingerprint=fingerprint)
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
    return experiment


def submit_experiment(
    spec: ExperimentSpec,
    redis: Redis,
    spec_yaml: str | None = None,
    findings: Sequence[Finding] = (),
) -> int:
    """Write the experiment and enqueue its train stages; returns the experiment id.

    Redis is checked before anything is written, and a failure while enqueuing
    rolls back the rows and removes the jobs already enqueued."""
    redis.ping()
    spec, spec_yaml, twin = plan_submission(spec, spec_yaml)
    findings = [*findings, twin] if twin else list(findings)
    with session_scope() as session:
        experiment = create_rows(session, spec, spec_yaml)
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
        runs = session.exec(_runs_of(experiment.id or 0)).all()
        tickets = queue_train_stages(session, runs)
        experiment_id = experiment.id or 0
    push_tickets(redis, tickets, experiment_id)
    return experiment_id


def push_tickets(redis: Redis, tickets: Sequence[Ticket], experiment_id: int) -> None:
    """Push the train jobs once the rows are committed (a worker that takes a
    job must find its stage). If Redis fails half-way, the experiment is
    withdrawn: its rows deleted and the jobs already pushed removed."""
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
