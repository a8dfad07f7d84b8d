"""What a stage's child process knows about its stage, and how it writes to the DB.

Every write goes through `stage_write`, which refuses it (`StaleAttempt`) once
a newer attempt owns the stage: a worker that was cut off and comes back can
never overwrite the results of the attempt that replaced it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session

from jobs import host_identity, lifecycle, settings
from jobs.db import Artifact, Experiment, Metric, Run, Stage, session_scope
from jobs.experiment_spec import ExperimentSpec
from jobs.lifecycle import StaleAttempt as StaleAttempt
from ship.digest import artifact_digest


@dataclass(frozen=True)
class StageContext:
    stage_id: int
    run_id: int
    kind: str
    variant: str
    params: dict[str, Any]
    seed: int
    spec: ExperimentSpec
    run_dir: Path
    attempt: int = 0

    @property
    def adapter_dir(self) -> Path:
        # Another rank of a gang trains beside rank 0 and keeps nothing: its
        # own folder, so ranks on one disk never write the same files.
        return self.run_dir / (self.variant if self.kind == "rank" else "adapter")

    @property
    def fused_dir(self) -> Path:
        return self.run_dir / "fused"

    def quantized_dir(self, variant: str) -> Path:
        return self.run_dir / variant


def load_context(stage_id: int, attempt: int = 0) -> StageContext:
    with session_scope() as session:
        stage = session.get(Stage, stage_id)
        if stage is None:
            raise SystemExit(f"stage {stage_id} not found in the farm's database")
        run = session.get(Run, stage.run_id)
        assert run is not None
        experiment = session.get(Experiment, run.experiment_id)
        assert experiment is not None
        return StageContext(
            stage_id=stage_id,
            run_id=run.id or 0,
            kind=stage.kind,
            variant=stage.variant,
            params=dict(stage.params),
            seed=run.seed,
            # Validated (files included) at submission; here it only becomes typed
            # again. The worker's own checks are in worker.preflight.
            spec=ExperimentSpec.model_validate(experiment.spec),
            run_dir=settings.artifacts_root() / f"run-{run.id}",
            attempt=attempt or stage.attempt,
        )


@contextmanager
def stage_write(ctx: StageContext) -> Iterator[Session]:
    """A session for this attempt's writes, committed on exit; raises
    `StaleAttempt` (and writes nothing) once the attempt no longer owns the stage."""
    with session_scope() as session:
        lifecycle.guard(session, ctx.stage_id, ctx.attempt)
        yield session


def update_stage(ctx: StageContext, **values: Any) -> None:
    with stage_write(ctx) as session:
        _set_stage(session, ctx, values)


def record_metric(
    ctx: StageContext,
    iteration: int,
    stage: dict[str, Any] | None = None,
    **values: Any,
) -> None:
    """One Metric row of this attempt at `iteration` (`values`: its columns), and
    the stage's own figures (`stage`) with it, in one guarded transaction: the
    one place a stage writes its metrics."""
    with metric_write(ctx, iteration, stage, **values):
        pass


@contextmanager
def metric_write(
    ctx: StageContext,
    iteration: int,
    stage: dict[str, Any] | None = None,
    **values: Any,
) -> Iterator[Session]:
    """`record_metric` as a context: more writes may join the same transaction."""
    with stage_write(ctx) as session:
        session.add(Metric(stage_id=ctx.stage_id, attempt=ctx.attempt, run_id=ctx.run_id,
                           iteration=iteration, **values))  # fmt: skip
        if stage:
            _set_stage(session, ctx, stage)
        yield session


def _set_stage(session: Session, ctx: StageContext, values: dict[str, Any]) -> None:
    row = session.get(Stage, ctx.stage_id)
    assert row is not None
    for key, value in values.items():
        setattr(row, key, value)
    session.add(row)


def path_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a folder's files in name order (`ship.digest`,
    which `farm export` checks artifacts with)."""
    return artifact_digest(path).sha256


def record_artifact(
    ctx: StageContext, kind: str, path: Path, variant: str = "", iteration: int | None = None
) -> Artifact:
    digest = artifact_digest(path)
    artifact = Artifact(
        run_id=ctx.run_id,
        stage_id=ctx.stage_id,
        attempt=ctx.attempt,
        kind=kind,
        variant=variant,
        iteration=iteration,
        path=str(path),
        host=host_identity.host_id(),
        bytes=path_bytes(path),
        sha256=digest.sha256,
        file_sha256=digest.files,
    )
    with stage_write(ctx) as session:
        session.add(artifact)
    return artifact


def exit_with_parent() -> None:
    """Die if the work horse that started us goes away (it could be SIGKILLed
    alone, outside its process group), so no MLX process outlives its job."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def checkpoint_adapter(ctx: StageContext, iteration: int, workdir: Path) -> Path:
    """An adapter folder for one saved checkpoint: the run's adapter config next
    to a link to `{iteration:07d}_adapters.safetensors`."""
    checkpoint = ctx.adapter_dir / f"{iteration:07d}_adapters.safetensors"
    folder = workdir / f"checkpoint-{iteration:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_bytes(
        (ctx.adapter_dir / "adapter_config.json").read_bytes()
    )
    (folder / "adapters.safetensors").symlink_to(checkpoint)
    return folder
