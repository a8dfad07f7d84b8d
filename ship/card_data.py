"""Everything a model card says, read from the farm's database (and, for the
dataset's digest and row counts, the dataset folder the run's spec names,
checked against the run's config fingerprint, since the database keeps only
that fingerprint). `card.render_card` turns the result into markdown.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from sqlmodel import Session, select

from jobs.checkpoints import checkpoint_points
from jobs.datasets import SPLITS, dataset_digest
from jobs.db import Experiment, Metric, Run, Stage, WorkerRow
from jobs.experiment_spec import ExperimentSpec, config_fingerprint
from jobs.experiment_spec.model import is_local_model
from jobs.experiment_spec.parse import spec_to_yaml
from jobs.problems import InputError
from jobs.ranking import mean_points_lost, points_lost, twin_variant
from jobs.states import StageStatus
from jobs.stats import mean_interval
from read.verdicts import seed_fragile_prompts, seed_scores
from ship.card import CardData, CurveRow
from ship.sources import ExportPlan

SPEC_FILE = "lorafarm-spec.yaml"
_LICENSE = re.compile(r"^license:\s*[\"']?([^\"'\n#]+?)[\"']?\s*$", re.MULTILINE)


def installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def base_license(base_model: str) -> str | None:
    """The license the base model declares in its own README front matter or
    config.json: a local folder, or the Hugging Face cache (no download)."""
    readme = config = None
    if is_local_model(base_model):
        folder = Path(base_model).expanduser()
        readme, config = folder / "README.md", folder / "config.json"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(base_model, "README.md")
            readme = Path(found) if isinstance(found, str) else None
            found = try_to_load_from_cache(base_model, "config.json")
            config = Path(found) if isinstance(found, str) else None
        except Exception:  # an odd id or cache: the card just omits the license
            return None
    if readme is not None and readme.is_file():
        text = readme.read_text(errors="replace")
        if text.startswith("---") and (end := text.find("\n---", 3)) > 0:
            if match := _LICENSE.search(text[3:end]):
                return match.group(1).strip()
    if config is not None and config.is_file():
        try:
            value = json.loads(config.read_text()).get("license")
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, str) and value:
            return value
    return None


def dataset_rows(folder: Path) -> dict[str, int]:
    rows = {}
    for split in SPLITS:
        path = folder / f"{split}.jsonl"
        if path.is_file():
            with path.open("rb") as handle:
                rows[split] = sum(1 for line in handle if line.strip())
    return rows


def _dataset_matches(spec: ExperimentSpec, fingerprint: str) -> bool | None:
    try:
        return config_fingerprint(spec) == fingerprint
    except (InputError, OSError):
        return None


def curve_rows(session: Session, run_id: int) -> list[CurveRow]:
    """Per reported iteration: losses and probe adherence; per checkpoint: its eval."""
    rows: dict[int, dict[str, float | None]] = {}
    for m in session.exec(select(Metric).where(Metric.run_id == run_id).order_by(Metric.id)):
        row = rows.setdefault(m.iteration, {})
        for key in ("train_loss", "val_loss", "probe_adherence"):
            if getattr(m, key) is not None:
                row[key] = getattr(m, key)
    for point in checkpoint_points(session, run_id):
        if point.adherence is not None:
            rows.setdefault(point.iteration, {})["adherence"] = point.adherence
    return [CurveRow(it, **values) for it, values in sorted(rows.items())]  # type: ignore[arg-type]


def _config_adherence(session: Session, fingerprint: str) -> list[tuple[str, int, str, float]]:
    rows = session.exec(
        select(Run.fingerprint, Run.id, Stage.variant, Stage.adherence)
        .join(Run, Run.id == Stage.run_id)
        .where(Run.fingerprint == fingerprint, Stage.kind == "eval",
               Stage.status == StageStatus.DONE, Stage.adherence.is_not(None))  # type: ignore[union-attr]
    ).all()  # fmt: skip
    return [(fp, int(run_id or 0), variant, float(a)) for fp, run_id, variant, a in rows]


def _label_mix(session: Session, fingerprint: str, variant: str) -> dict[str, int]:
    mix: dict[str, int] = {}
    for counts in session.exec(
        select(Stage.label_counts)
        .join(Run, Run.id == Stage.run_id)
        .where(
            Run.fingerprint == fingerprint,
            Stage.kind == "eval",
            Stage.status == StageStatus.DONE,
            Stage.variant == variant,
        )  # fmt: skip
    ):
        for label, count in (counts or {}).items():
            mix[label] = mix.get(label, 0) + int(count)
    return mix


def load_card_data(session: Session, plan: ExportPlan) -> CardData:
    run = session.get(Run, plan.run_id)
    assert run is not None
    experiment = session.get(Experiment, run.experiment_id)
    assert experiment is not None
    spec = ExperimentSpec.model_validate(experiment.spec)
    variant = plan.scored_variant
    stages = session.exec(select(Stage).where(Stage.run_id == run.id)).all()
    evals = {s.variant: s for s in stages if s.kind == "eval" and s.status == StageStatus.DONE}
    train = next((s for s in stages if s.kind == "train"), None)
    mine = evals.get(variant)

    scores = seed_scores(session, run.fingerprint, variant)
    config_rows = _config_adherence(session, run.fingerprint)
    run_adherence = {v: a for _, rid, v, a in config_rows if rid == run.id}
    twin = twin_variant(variant, run_adherence)
    lost = points_lost(run_adherence).get(variant) if twin else None
    mean_lost = mean_points_lost(config_rows).get((run.fingerprint, variant)) if twin else None

    folder = Path(spec.dataset)
    trainer = session.exec(select(WorkerRow).where(WorkerRow.name == train.worker)).first() if (
        train is not None and train.worker) else None  # fmt: skip
    return CardData(
        run_id=run.id or 0,
        seed=run.seed,
        experiment_id=experiment.id or 0,
        experiment_name=experiment.name,
        fingerprint=run.fingerprint,
        variant=plan.variant,
        shape=plan.shape,
        base_model=plan.base_model,
        iteration=plan.iteration,
        suite=Path(spec.eval.suite).name,
        adherence=mine.adherence if mine else None,
        n_prompts=mine.n_prompts if mine else None,
        seed_scores=scores,
        interval=mean_interval(list(scores.values())) if scores else None,
        label_mix=_label_mix(session, run.fingerprint, variant),
        twin=twin,
        points_lost=lost,
        mean_points_lost=mean_lost,
        fragile=seed_fragile_prompts(session, run.fingerprint, variant),
        final_val_loss=train.val_loss if train else None,
        spec_yaml=spec_to_yaml(spec.model_copy(update={"seeds": [run.seed]})),
        spec_file=SPEC_FILE,
        dataset=str(folder),
        dataset_digest=dataset_digest(folder) if folder.is_dir() else None,
        dataset_rows=dataset_rows(folder) if folder.is_dir() else {},
        dataset_matches=_dataset_matches(spec, run.fingerprint),
        versions={
            "mlx-lm": installed("mlx-lm"),
            "mlx": (trainer.mlx_version if trainer else "") or installed("mlx"),
            "lorafarm": installed("lorafarm"),
        },
        curve_rows=curve_rows(session, run.id or 0),
        license=base_license(plan.base_model),
    )
