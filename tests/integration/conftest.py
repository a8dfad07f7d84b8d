"""Fixtures the integration tests share."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from redis import Redis
from sqlmodel import select

from jobs.db import Artifact, EvalResult, Metric, Run, Stage, session_scope, utcnow
from tests.support.web import install_model, quick_form
from web import form_bounds


@pytest.fixture
def finished_run(farm_home: Path, redis_url: str, tiny_model: Path) -> int:
    """A run whose stages have all reported, the way the worker stages write them."""
    model = install_model(farm_home, tiny_model)
    values = quick_form(model, seeds="1-2", quantize=["q8", "q4"])
    # The rows behind the pages; the tokenizer checks have tests of their own.
    checked = form_bounds.validate_form(values, run_preflight=False)
    result = form_bounds.submit_valid(checked, Redis.from_url(redis_url))
    assert result.experiment_id is not None, result.problems
    with session_scope() as session:
        run = session.exec(select(Run).where(Run.seed == 1)).one()
        stages = session.exec(select(Stage).where(Stage.run_id == run.id)).all()
        start = utcnow() - timedelta(minutes=10)
        ok = ["execute_code"] * 3
        labels = {"adapter": [*ok, "prose"], "fused": [*ok, "execute_code"],
                  "q8": [*ok, "wrong_tool"], "q4": ["prose"] * 3 + ["empty"]}  # fmt: skip
        for i, stage in enumerate(stages):
            stage.status, stage.worker = "done", "mac-a"
            stage.started_at = start + timedelta(seconds=30 * i)
            stage.finished_at = stage.started_at + timedelta(seconds=20)
            if stage.kind == "train":
                stage.progress = stage.total = 12
                stage.val_loss = 1.5
                for it, loss in ((2, 3.0), (6, 2.0), (12, 1.25)):
                    session.add(Metric(stage_id=stage.id or 0, run_id=run.id or 0, iteration=it,
                                       train_loss=loss, tokens_per_sec=900.0 + it,
                                       peak_memory_gb=0.5))  # fmt: skip
                session.add(Metric(stage_id=stage.id or 0, run_id=run.id or 0, iteration=12,
                                   val_loss=1.5))  # fmt: skip
                session.add(Artifact(run_id=run.id or 0, stage_id=stage.id, kind="adapter",
                                     variant="adapter", path="/farm/run-1/adapter", host="mac-a",
                                     bytes=2_500_000))  # fmt: skip
            if stage.kind == "eval":
                got = labels[stage.variant]
                scores = [1.0 if label == "execute_code" else 0.0 for label in got]
                stage.adherence = sum(scores) / len(scores)
                stage.label_counts = {label: got.count(label) for label in set(got)}
                stage.n_prompts = len(got)
                for p, (label, score) in enumerate(zip(got, scores, strict=True)):
                    session.add(EvalResult(
                        stage_id=stage.id or 0, run_id=run.id or 0, prompt_id=f"p{p}",
                        category="files" if p % 2 else "git", expect="tool",
                        prompt=f"prompt number {p}", response=f"response {p} of {stage.variant}",
                        label=label, score=score, tokens=10, latency_s=0.1,
                        stop_reason="max_tokens" if label == "prose" else "eos",
                    ))  # fmt: skip
            session.add(stage)
        run.status, run.host = "done", "mac-a"
        session.add(run)
        return run.id or 0
