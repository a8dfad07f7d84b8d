"""Two configurations with finished seeds, written the way eval stages write them:
the data behind verdict tests (CLI, pages and the browser)."""

from __future__ import annotations

from pathlib import Path

from redis import Redis
from sqlmodel import select

from jobs.db import EvalResult, Experiment, Run, Stage, session_scope, utcnow
from tests.support.web import install_model, quick_form
from web import form_bounds

PROMPTS = [f"p{i}" for i in range(10)]
# Adherence per seed of the demo's two learning rates, as its issue quoted them,
# rounded to tenths so each is a whole number of the ten prompts.
BETTER = {1: 0.7, 2: 0.5, 3: 0.4}
WORSE = {1: 0.2, 2: 0.4, 3: 0.5}


def submit(model: Path, redis_url: str, name: str, learning_rate: float, seeds: str) -> int:
    values = quick_form(model, name=name, seeds=seeds, quantize=[], eval__variants=["adapter"])
    values["train.learning_rate"] = learning_rate
    # The rows behind the verdicts; the tokenizer checks have tests of their own.
    checked = form_bounds.validate_form(values, run_preflight=False)
    result = form_bounds.submit_valid(checked, Redis.from_url(redis_url))
    assert result.experiment_id is not None, result.problems
    return result.experiment_id


def finish(experiment_id: int, scores: dict[int, float]) -> None:
    """Mark every stage of the experiment's runs with these seeds done; the eval of
    seed s passes the first round(10 · score) prompts and calls the rest prose."""
    with session_scope() as session:
        runs = session.exec(
            select(Run).where(Run.experiment_id == experiment_id, Run.seed.in_(list(scores)))  # type: ignore[attr-defined]
        ).all()
        for run in runs:
            passed = round(10 * scores[run.seed])
            for stage in session.exec(select(Stage).where(Stage.run_id == run.id)).all():
                stage.status, stage.worker = "done", "mac-a"
                if stage.kind == "eval":
                    stage.adherence, stage.n_prompts = passed / 10, 10
                    stage.label_counts = {"execute_code": passed, "prose": 10 - passed}
                    stage.passed_prompts = PROMPTS[:passed]
                    for i, prompt in enumerate(PROMPTS):
                        ok = i < passed
                        session.add(EvalResult(
                            stage_id=stage.id or 0, attempt=stage.attempt, run_id=run.id or 0,
                            prompt_id=prompt, expect="tool", prompt=f"prompt {prompt}",
                            response="…", label="execute_code" if ok else "prose",
                            score=1.0 if ok else 0.0,
                        ))  # fmt: skip
                session.add(stage)
            run.status, run.host, run.finished_at = "done", "mac-a", utcnow()
            session.add(run)


def two_learning_rates(farm_home: Path, redis_url: str, tiny_model: Path) -> tuple[int, int]:
    """Experiments at learning rates 2e-4 (better) and 1e-3, seeds 1–3, all finished."""
    model = install_model(farm_home, tiny_model)
    better = submit(model, redis_url, "lr-2e-4", 2e-4, "1-3")
    worse = submit(model, redis_url, "lr-1e-3", 1e-3, "1-3")
    finish(better, BETTER)
    finish(worse, WORSE)
    return better, worse


def fingerprint_of(experiment_id: int) -> str:
    with session_scope() as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None
        return experiment.fingerprint
