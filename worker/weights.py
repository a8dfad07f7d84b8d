"""One load per weights: the model an eval session holds, with adapters swapped in.

The eval stages of a run that share the base weights (base, adapter, every
checkpoint, best) run in one child process (see `worker/child.py`). The base
is loaded once; the first adapter wraps its layers for LoRA the way mlx-lm's
`load_adapters` does, and every later adapter with the same adapter config
only replaces the LoRA weights. A fused or quantized variant is a folder of
its own and is loaded once.

Anything that cannot be swapped safely loads again instead: an adapter config
that differs from the one the layers are wrapped for, a full fine-tune (its
"adapter" replaces base weights), DoRA, or the plain base after an adapter
(the session orders the base first, so this is rare).
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.tuner.utils import load_adapters
from mlx_lm.utils import load

ADAPTER_LEAVES = {"lora_a", "lora_b", "m"}


@dataclass
class Weights:
    """The model a session holds now, and how many times it has loaded weights."""

    path: str = ""
    model: Any = None
    tokenizer: Any = None
    wrapped: bool = False  # LoRA layers are in (an adapter was applied)
    adapter_config: str | None = None  # the swappable config they are wrapped for
    loads: int = 0
    load_s: list[float] = field(default_factory=list)

    def get(self, model_path: str, adapter_path: str | None) -> tuple[Any, Any]:
        """The model at `model_path` with the adapter at `adapter_path` (or none)."""
        config = _swappable_config(adapter_path)
        if self.model is None or self.path != model_path or not self._can_take(config):
            self._load(model_path)
        if adapter_path is not None:
            if not self.wrapped:
                load_adapters(self.model, adapter_path)
                self.wrapped, self.adapter_config = True, config
            else:
                _swap_adapter(self.model, Path(adapter_path))
            self.model.eval()
        return self.model, self.tokenizer

    def forget(self) -> None:
        """Drop the model (after a failure its state is not to be trusted)."""
        self.path, self.model, self.tokenizer = "", None, None
        self.wrapped, self.adapter_config = False, None
        gc.collect()
        mx.clear_cache()

    def _can_take(self, config: str | None) -> bool:
        if not self.wrapped:
            return True  # plain weights: any adapter can wrap them, or none
        # Wrapped: only another adapter of the same swappable config.
        return config is not None and config == self.adapter_config

    def _load(self, model_path: str) -> None:
        self.forget()
        tic = time.perf_counter()
        self.model, self.tokenizer = load(model_path)
        self.load_s.append(time.perf_counter() - tic)
        self.path = model_path
        self.loads += 1
        print(f"loaded {model_path} in {self.load_s[-1]:.2f} s (load {self.loads})", flush=True)


def _swappable_config(adapter_path: str | None) -> str | None:
    """The adapter config as canonical text when its weights can be swapped
    into layers wrapped for it; None when they cannot (or there is no adapter)."""
    if adapter_path is None:
        return None
    config = json.loads((Path(adapter_path) / "adapter_config.json").read_text())
    if config.get("fine_tune_type", "lora") != "lora":
        return None  # full replaces base weights; DoRA folds them into its magnitude
    keys = ("fine_tune_type", "num_layers", "lora_parameters")
    return json.dumps({k: config.get(k) for k in keys}, sort_keys=True)


def _swap_adapter(model: Any, adapter_path: Path) -> None:
    """Replace every LoRA weight of an already wrapped model; refuse a file that
    would leave any of the previous adapter's weights in place."""
    weights = mx.load(str(adapter_path / "adapters.safetensors"))
    params = {
        name: value
        for name, value in tree_flatten(model.parameters())
        if name.rsplit(".", 1)[-1] in ADAPTER_LEAVES
    }
    missing = sorted(set(params) - set(weights))
    extra = sorted(set(weights) - set(params))
    wrong = [n for n, w in weights.items() if n in params and w.shape != params[n].shape]
    if missing or extra or wrong:
        raise ValueError(
            f"adapter {adapter_path} does not match the layers it is swapped into: "
            f"missing {missing[:3]}, unexpected {extra[:3]}, wrong shape {wrong[:3]}"
        )
    model.load_weights(list(weights.items()), strict=False)
    mx.eval(model.parameters())
