"""The fuse and quantize stages keep a float32 base in float32: on a Linux CPU
float16 is emulated, and a fused eval in float16 would time the emulation."""

from __future__ import annotations

import json
from pathlib import Path

from worker.stages.fuse import fuse_model
from worker.stages.quantize import quantize_model


def random_adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter as mlx-lm saves one, with a non-zero delta."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    model, _ = load(str(base))
    model.freeze()
    lora = {"rank": 4, "scale": 10.0, "dropout": 0.0}
    linear_to_lora_layers(model, 2, lora)
    weights = {
        k: mx.random.normal(v.shape, key=mx.random.key(1)) * 0.01
        for k, v in tree_flatten(model.trainable_parameters())
    }
    out.mkdir(parents=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), weights)
    config = {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": lora}
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


def float_dtypes(model_dir: Path) -> set[str]:
    import mlx.core as mx

    weights = mx.load(str(model_dir / "model.safetensors"))
    return {str(v.dtype) for v in weights.values() if mx.issubdtype(v.dtype, mx.floating)}


def test_a_float32_base_stays_float32_through_fuse_and_quantize(
    tiny_model: Path, tmp_path: Path
) -> None:
    assert json.loads((tiny_model / "config.json").read_text())["torch_dtype"] == "float32"
    assert float_dtypes(tiny_model) == {"mlx.core.float32"}
    adapter = random_adapter(tiny_model, tmp_path / "adapter")

    fused = tmp_path / "fused"
    fuse_model(str(tiny_model), adapter, fused)
    assert float_dtypes(fused) == {"mlx.core.float32"}
    assert json.loads((fused / "config.json").read_text())["torch_dtype"] == "float32"

    q4 = tmp_path / "q4"
    quantize_model(fused, q4, 4, 64)
    config = json.loads((q4 / "config.json").read_text())
    assert config["quantization"]["bits"] == 4 and config["torch_dtype"] == "float32"
    assert float_dtypes(q4) == {"mlx.core.float32"}  # scales, biases and norms


def test_fusing_changes_only_the_adapted_layers(tiny_model: Path, tmp_path: Path) -> None:
    import mlx.core as mx

    adapter = random_adapter(tiny_model, tmp_path / "adapter")
    fuse_model(str(tiny_model), adapter, tmp_path / "fused")
    base = mx.load(str(tiny_model / "model.safetensors"))
    fused = mx.load(str(tmp_path / "fused" / "model.safetensors"))
    changed = [k for k in base if not mx.array_equal(base[k], fused[k]).item()]
    assert changed and all("layers" in k for k in changed)
