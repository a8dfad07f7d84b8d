"""Submitting a validated experiment: DB rows first, then RQ jobs, all or nothing."""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlmodel import Session, select

from jobs.checks import Finding, ensure_quant_twin
from jobs.dag import plan_run
from jobs.db import Diagnostic, Experiment, Run, Stage, session_scope
from jobs.queue import enqueue_run, stage_job_id
from jobs.spec import ExperimentSpec, config_fingerprint, spec_to_yaml


def create_rows(session: Session, spec: ExperimentSpec, spec_yaml: str | None = None) -> Experiment:
    """Experiment, one Run per seed and the planned stages of each run (flushed, not committed)."""
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
                params["min_memory_gb"] = spec.resources.min_memory_gb
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
    # Below 5 bits a fused adapter can lose its signal: keep a ≥ 5-bit twin to compare.
    spec, twin = ensure_quant_twin(spec)
    findings = [*findings, twin] if twin else list(findings)
    enqueued: list[str] = []
    try:
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
            for run in runs:
                enqueue_run(session, run, redis, experiment.spec)
                train_id = _train_stage_id(session, run.id or 0)
                enqueued.append(stage_job_id(train_id))
            return experiment.id or 0
    except BaseException:
        for job_id in enqueued:
            try:
                Job.fetch(job_id, connection=redis, serializer=JSONSerializer).delete()
            except Exception:  # already gone; nothing else to undo
                pass
        raise


def _runs_of(experiment_id: int):  # type: ignore[no-untyped-def]
    return select(Run).where(Run.experiment_id == experiment_id).order_by(Run.id)


def _train_stage_id(session: Session, run_id: int) -> int:
    stage = session.exec(select(Stage).where(Stage.run_id == run_id, Stage.kind == "train")).one()
    return stage.id or 0
