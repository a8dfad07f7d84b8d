"""Which recorded artifacts make up an export of one run's variant, and which of
their files go into it under which names.

An adapter export (`adapter`, `best`, `ckpt-…`) is mlx-lm's adapter folder:
`adapters.safetensors` and `adapter_config.json`, which names the base model,
so `mlx_lm.load(base, adapter_path=DIR)` opens it. A checkpoint's weights are
their own artifact (`{N:07d}_adapters.safetensors`) and its config is the run's
adapter folder's. A `fused` or quantized export is the whole model folder.
`plan_export` is pure; `load_plan` reads the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from jobs.checkpoints import BEST, best_checkpoint
from jobs.dag import checkpoint_iteration, checkpoint_variant
from jobs.db import Artifact, Experiment, Run, Stage

ADAPTER_FILES = ("adapters.safetensors", "adapter_config.json")
CARD = "README.md"  # the model card; a model folder's own is replaced by the farm's


class ExportRefused(Exception):
    """The export cannot be made as asked; the message says why in one line."""


class OnAnotherWorker(ExportRefused):
    """An artifact sits on a worker's own disk that this machine cannot read:
    an `export` stage on that worker can make the export instead."""

    def __init__(self, message: str, host: str) -> None:
        super().__init__(message)
        self.host = host


@dataclass(frozen=True)
class Source:
    """One recorded artifact the export reads, and the files it takes from it:
    (name inside the artifact, name in the export); empty means every file."""

    artifact_id: int
    kind: str
    variant: str
    path: str
    host: str
    sha256: str
    created_at: datetime
    files: tuple[tuple[str, str], ...] = ()
    file_sha256: dict[str, str] | None = None  # each file's recorded digest, when kept

    @property
    def what(self) -> str:
        """'the adapter', 'checkpoint ckpt-0000300', 'the q4 model'…"""
        if self.kind == "checkpoint":
            return f"checkpoint {self.variant}"
        if self.kind in ("fused", "quantized"):
            return f"the {self.variant} model"
        return f"the {self.kind}"


@dataclass(frozen=True)
class ExportPlan:
    run_id: int
    variant: str  # as asked: adapter, best, ckpt-…, fused, q4…
    scored_variant: str  # the eval variant whose scores describe the export
    shape: str  # "adapter" (load with the base) or "model" (a model of its own)
    base_model: str
    iteration: int | None
    sources: tuple[Source, ...]


def _source(artifact: Artifact, files: tuple[tuple[str, str], ...] = ()) -> Source:
    return Source(
        artifact_id=artifact.id or 0,
        kind=artifact.kind,
        variant=artifact.variant,
        path=artifact.path,
        host=artifact.host,
        sha256=artifact.sha256,
        created_at=artifact.created_at,
        files=files,
        file_sha256=artifact.file_sha256,
    )


def _newest(artifacts: Sequence[Artifact], kind: str, variant: str | None = None,
            iteration: int | None = None) -> Artifact | None:  # fmt: skip
    found = [a for a in artifacts if a.kind == kind
             and (variant is None or a.variant == variant)
             and (iteration is None or a.iteration == iteration)]  # fmt: skip
    return max(found, key=lambda a: a.id or 0) if found else None


def exportable(artifacts: Sequence[Artifact], best_iteration: int | None = None) -> list[str]:
    """The variants a run's artifacts can be exported as (`best` once a checkpoint
    was scored)."""
    names = {a.variant for a in artifacts if a.kind in ("adapter", "fused", "quantized")}
    checkpoints = sorted({a.variant for a in artifacts if a.kind == "checkpoint"})
    return (
        [v for v in ("adapter",) if v in names]
        + ([BEST] if best_iteration is not None and checkpoints else [])
        + checkpoints
        + [v for v in ("fused",) if v in names]
        + sorted(names - {"adapter", "fused"})
    )


def plan_export(run_id: int, variant: str, base_model: str, artifacts: Sequence[Artifact],
                best_iteration: int | None) -> ExportPlan:  # fmt: skip
    """The sources of `variant` among a run's artifacts; `ExportRefused` naming the
    variants it has when the asked one is not there."""

    def missing(what: str) -> ExportRefused:
        have = ", ".join(exportable(artifacts, best_iteration)) or "none yet"
        return ExportRefused(f"run {run_id} has no {what} (it can export: {have})")

    if variant in ("adapter", BEST) or checkpoint_iteration(variant) is not None:
        adapter = _newest(artifacts, "adapter")
        if adapter is None:
            raise missing("adapter")
        if variant == "adapter":
            files = tuple((name, name) for name in ADAPTER_FILES)
            return ExportPlan(run_id, variant, variant, "adapter", base_model, None,
                              (_source(adapter, files),))  # fmt: skip
        iteration = best_iteration if variant == BEST else checkpoint_iteration(variant)
        if iteration is None:
            raise missing("best checkpoint (no checkpoint was scored)")
        checkpoint = _newest(artifacts, "checkpoint", iteration=iteration)
        if checkpoint is None:
            raise missing(f"checkpoint {checkpoint_variant(iteration)}")
        weights = (checkpoint.path.rsplit("/", 1)[-1], "adapters.safetensors")
        sources = (_source(checkpoint, (weights,)),
                   _source(adapter, (("adapter_config.json", "adapter_config.json"),)))  # fmt: skip
        return ExportPlan(run_id, variant, variant, "adapter", base_model, iteration, sources)
    kind = "fused" if variant == "fused" else "quantized"
    model = _newest(artifacts, kind, variant)
    if model is None:
        raise missing(f"{variant} model")
    return ExportPlan(run_id, variant, variant, "model", base_model, None, (_source(model),))


def best_iteration(session: Session, run_id: int) -> int | None:
    """The checkpoint the run's `best` eval used, else the best by adherence now."""
    stage = session.exec(
        select(Stage).where(Stage.run_id == run_id, Stage.kind == "eval", Stage.variant == BEST)
    ).first()
    if stage is not None and stage.params.get("iteration"):
        return int(stage.params["iteration"])
    return best_checkpoint(session, run_id)


def load_plan(session: Session, run_id: int, variant: str) -> ExportPlan:
    run = session.get(Run, run_id)
    if run is None:
        raise ExportRefused(f"run {run_id} not found in the farm's database")
    experiment = session.get(Experiment, run.experiment_id)
    assert experiment is not None
    artifacts = session.exec(select(Artifact).where(Artifact.run_id == run_id)).all()
    return plan_export(
        run_id, variant, experiment.base_model, artifacts, best_iteration(session, run_id)
    )


def exportable_variants(session: Session, run_id: int) -> list[str]:
    """What the run page offers to export: the variants its artifacts make up."""
    artifacts = session.exec(select(Artifact).where(Artifact.run_id == run_id)).all()
    return exportable(artifacts, best_iteration(session, run_id))
