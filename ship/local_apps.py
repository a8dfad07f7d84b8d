"""Exports for the apps that run models on the Mac itself: LM Studio and Ollama.

LM Studio finds MLX models in its models folder, one `publisher/model` folder
each, so `farm export --to lmstudio` writes a whole-model export there (an
adapter alone is not a model it can open). Ollama imports GGUF: mlx-lm writes
one for the architectures its converter knows (`mlx_lm.fuse --export-gguf`:
llama, mistral, mixtral), from unquantized weights only; for anything else
the farm says which it supports instead of writing a file that does not load.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from jobs import settings
from ship.sources import ExportPlan, ExportRefused

GGUF_MODEL_TYPES = ("llama", "mistral", "mixtral")  # what mlx_lm.gguf converts
GGUF_FILE = "ggml-model-f16.gguf"
LMSTUDIO = "lmstudio"  # `--to lmstudio`
LMSTUDIO_PUBLISHER = "lorafarm"


def lmstudio_models_dir() -> Path:
    """LM Studio's models folder (`jobs.settings.lmstudio_models`)."""
    return settings.lmstudio_models()


def lmstudio_folder(models_dir: Path, plan: ExportPlan, experiment_name: str, seed: int) -> Path:
    """Where LM Studio lists the export: `lorafarm/<experiment>-seed<S>-<variant>-mlx`."""
    if plan.shape != "model":
        raise ExportRefused(
            f"LM Studio opens whole models, not adapters: export run {plan.run_id} as "
            "`--variant fused` or a quantization (q4, q8…) to use it there"
        )
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{experiment_name}-seed{seed}-{plan.variant}-mlx")
    return models_dir / LMSTUDIO_PUBLISHER / name


def gguf_refusal(config: dict, plan: ExportPlan) -> str | None:
    """Why mlx-lm cannot write this export as GGUF, or None when it can."""
    if plan.shape != "model":
        return (f"GGUF is a whole model: export run {plan.run_id} as `--variant fused` "
                "with --gguf")  # fmt: skip
    if config.get("quantization"):
        return (f"mlx-lm writes GGUF from unquantized weights only: use `--variant fused`, "
                f"not {plan.variant}")  # fmt: skip
    model_type = str(config.get("model_type", "unknown"))
    if model_type not in GGUF_MODEL_TYPES:
        supported = ", ".join(GGUF_MODEL_TYPES)
        return (f"mlx-lm converts {supported} models to GGUF; this one is {model_type}: "
                "load the MLX export in LM Studio (--to lmstudio) or with mlx_lm")  # fmt: skip
    return None


def write_gguf(folder: Path, plan: ExportPlan) -> str:
    """mlx-lm's GGUF conversion of the model folder, written beside it, with an
    Ollama Modelfile that imports it; `ExportRefused` saying why it cannot."""
    config = json.loads((folder / "config.json").read_text())
    why = gguf_refusal(config, plan)
    if why is not None:
        raise ExportRefused(why)
    import mlx.core as mx
    from mlx_lm.gguf import convert_to_gguf

    weights: dict = {}
    for path in sorted(folder.glob("*.safetensors")):
        weights.update(mx.load(str(path)))
    convert_to_gguf(folder, weights, config, str(folder / GGUF_FILE))
    (folder / "Modelfile").write_text(f"FROM ./{GGUF_FILE}\n")  # `ollama create NAME -f Modelfile`
    return GGUF_FILE
