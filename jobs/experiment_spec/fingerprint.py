"""A spec's config fingerprint: what can change a run's result, hashed.

`config_fingerprint` hashes the model's identity, the dataset's and suite's
bytes and every knob, but not the name, seeds or resources, so the
leaderboard can pool seeds across experiments that trained the same thing.
Knobs mlx-lm ignores (learning_rate next to a schedule, LoRA settings for a
full fine-tune) and orderings that mean nothing are left out or normalised.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from jobs.datasets import dataset_digest, file_digest
from jobs.experiment_spec.model import ExperimentSpec, is_local_model
from jobs.problems import InputError, Problem

# Bump when the payload changes shape: old and new fingerprints must not pool.
FINGERPRINT_VERSION = 1

# Files that define a local model's behaviour besides its weights (hashed by content).
MODEL_META_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "model.safetensors.index.json",
)


def model_identity(base_model: str) -> dict[str, Any]:
    """What identifies a base model: the HF id, or for a local folder the bytes of its
    config/tokenizer files and each weight file's name and size (weights are not read)."""
    if not is_local_model(base_model):
        return {"hf_id": base_model}
    path = Path(base_model)
    if not (path / "config.json").is_file():
        raise InputError(
            [Problem(str(path), "cannot fingerprint the model: no config.json", None, "base_model")]
        )
    files = {name: file_digest(path / name) for name in MODEL_META_FILES if (path / name).is_file()}
    weights = sorted((p.name, p.stat().st_size) for p in path.glob("*.safetensors") if p.is_file())
    return {"local": {"files": files, "weights": weights}}


def fingerprint_payload(spec: ExperimentSpec) -> dict[str, Any]:
    """The canonical data `config_fingerprint` hashes."""
    dataset = Path(spec.dataset)
    suite = Path(spec.eval.suite)
    missing: list[Problem] = []
    if not (dataset / "train.jsonl").is_file():
        missing.append(Problem(str(dataset), "cannot fingerprint: no train.jsonl", None, "dataset"))
    if not suite.is_file():
        missing.append(
            Problem(str(suite), "cannot fingerprint: suite not found", None, "eval.suite")
        )
    if missing:
        raise InputError(missing)

    train = spec.train.model_dump(mode="json")
    train.pop("report_to", None)  # where the curves are also sent, not how the run trains
    train.pop("workers", None)  # how many Macs share the same global batch
    train["lora"]["keys"] = sorted(train["lora"]["keys"]) if train["lora"]["keys"] else None
    if spec.train.lr_schedule is not None:
        train["learning_rate"] = None  # mlx-lm ignores it next to a schedule
    if spec.train.fine_tune_type == "full":
        train["lora"] = None  # mlx-lm ignores lora_parameters for full fine-tuning
    ev = spec.eval.model_dump(mode="json", exclude={"suite"})
    ev["variants"] = sorted(ev["variants"])
    if ev["checkpoint_prompts"] is not None:
        ev["checkpoint_prompts"] = sorted(ev["checkpoint_prompts"])
    return {
        "version": FINGERPRINT_VERSION,
        "base_model": model_identity(spec.base_model),
        "dataset": dataset_digest(dataset),
        "suite": file_digest(suite),
        "train": train,
        "fuse": spec.fuse.model_dump(mode="json", by_alias=True) if spec.fuse else None,
        "quantize": sorted(q.variant for q in spec.quantize),
        "eval": ev,
    }


def config_fingerprint(spec: ExperimentSpec) -> str:
    """16 hex chars of sha256 over `fingerprint_payload`: equal for specs that differ only
    in name, seeds or resources; different when any knob, dataset or suite byte changes."""
    canonical = json.dumps(
        fingerprint_payload(spec),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
