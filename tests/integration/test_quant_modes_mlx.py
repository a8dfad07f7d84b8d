"""The farm accepts exactly the quantize entries mlx-lm can make, on the tiny model.

Every combination of mode, bits, group size and recipe goes to both the farm's
`QuantizeSpec` and mlx-lm's own code (`mlx_lm.utils.quantize_model` with the
predicate `mlx_lm.convert` builds for a recipe, or `convert` itself where it is
convert that refuses); they must agree, except for the farm's two stricter rules
named below. An accepted entry must also quantize every layer: mlx-lm silently
skips a layer whose input width is not a multiple of the group size, which would
make a mode look like it works while it quantized nothing.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from jobs.experiment_spec import QuantizeSpec
from jobs.experiment_spec.options import (
    ALL_GROUP_SIZES,
    FLOAT_MODES,
    QUANT_BITS,
    QUANT_MODES,
    QUANT_RECIPES,
)

MODES = QUANT_MODES
BITS = (None, *QUANT_BITS)
GROUPS = (None, *ALL_GROUP_SIZES)
RECIPES = (None, *QUANT_RECIPES)


def farm_accepts(mode: str, bits: int | None, group: int | None, recipe: str | None) -> bool:
    try:
        QuantizeSpec(mode=mode, bits=bits, group_size=group, recipe=recipe)
    except ValidationError:
        return False
    return True


def farm_is_stricter(mode: str, bits: int | None, recipe: str | None) -> bool:
    """Entries mlx-lm takes that the farm refuses on purpose: affine without bits (mlx-lm
    silently picks 4; the farm wants the bits written), and bits next to a recipe
    (ignored by mlx-lm for every layer, so two such entries would be the same model)."""
    return (mode == "affine" and recipe is None and bits is None) or (
        recipe is not None and bits is not None
    )


def quantized_layers(model: Any) -> tuple[int, int, set[str]]:
    """(quantized layers, layers that could be, their modes)."""
    import mlx.nn as nn

    quantizable = quantized = 0
    modes = set()
    for _, module in model.named_modules():
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            quantized += 1
            quantizable += 1
            modes.add(module.mode)
        elif hasattr(module, "to_quantized"):
            quantizable += 1
    return quantized, quantizable, modes


def mlx_quantize(
    model_dir: Path, tmp: Path, mode: str, bits: int | None, group: int | None, recipe: str | None
) -> Any:
    """What mlx_lm.convert does with these arguments, in memory; raises where it refuses."""
    import mlx.core as mx
    from mlx_lm.convert import convert, mixed_quant_predicate_builder
    from mlx_lm.utils import load_model, quantize_model

    if recipe is not None and mode != "affine":
        # convert refuses this itself, before quantizing (and before saving anything)
        convert(str(model_dir), str(tmp / "never"), quantize=True, q_bits=bits,
                q_group_size=group, q_mode=mode, quant_predicate=recipe)  # fmt: skip
        raise AssertionError("convert accepted a recipe with a non-affine mode")
    model, config = load_model(model_dir, lazy=True)
    predicate = mixed_quant_predicate_builder(recipe, model, group) if recipe else None
    model, _ = quantize_model(model, config, group, bits, mode=mode, quant_predicate=predicate)
    mx.eval(model.parameters())
    return model


@pytest.fixture(scope="module")
def combinations() -> list[tuple[str, int | None, int | None, str | None]]:
    # A recipe with every bits value says nothing new: bits None or 4 is enough.
    return [
        (mode, bits, group, recipe)
        for mode, bits, group, recipe in itertools.product(MODES, BITS, GROUPS, RECIPES)
        if recipe is None or bits in (None, 4)
    ]


def test_the_farm_and_mlx_lm_agree(tiny_model: Path, tmp_path: Path, combinations) -> None:
    disagree = []
    accepted = 0
    for mode, bits, group, recipe in combinations:
        farm = farm_accepts(mode, bits, group, recipe)
        try:
            model = mlx_quantize(tiny_model, tmp_path, mode, bits, group, recipe)
        except (ValueError, RuntimeError):
            mlx = False
        else:
            mlx = True
        if farm != mlx and not (mlx and farm_is_stricter(mode, bits, recipe)):
            disagree.append((mode, bits, group, recipe, f"farm {farm}, mlx-lm {mlx}"))
        if farm:
            accepted += 1
            quantized, quantizable, modes = quantized_layers(model)
            # the tiny model's widths (128, 384) are multiples of every group size
            assert quantized == quantizable > 0, (mode, bits, group, recipe)
            assert modes == {mode}
    assert disagree == []
    # affine 6 bits x 3 group sizes (written or default), the float modes with and
    # without their fixed bits / group size, recipes x 3 group sizes: all accepted.
    assert accepted >= 6 * 3 + 3 + 4 * 3


@pytest.mark.parametrize("mode", sorted(FLOAT_MODES))
def test_float_modes_record_their_fixed_bits_and_group(tiny_model: Path, mode: str) -> None:
    from mlx_lm.utils import load_model, quantize_model

    args = QuantizeSpec(mode=mode).convert_args
    model, config = load_model(tiny_model, lazy=True)
    _, config = quantize_model(
        model, config, args["q_group_size"], args["q_bits"], mode=args["q_mode"]
    )
    assert config["quantization"] == {
        "group_size": FLOAT_MODES[mode][1],
        "bits": FLOAT_MODES[mode][0],
        "mode": mode,
    }


@pytest.mark.parametrize("recipe", sorted(QUANT_RECIPES))
def test_recipes_give_most_layers_the_low_bits(tiny_model: Path, recipe: str) -> None:
    from mlx_lm.convert import mixed_quant_predicate_builder
    from mlx_lm.utils import load_model, quantize_model

    q = QuantizeSpec(recipe=recipe)
    args = q.convert_args
    model, config = load_model(tiny_model, lazy=True)
    predicate = mixed_quant_predicate_builder(recipe, model, args["q_group_size"])
    _, config = quantize_model(
        model, config, args["q_group_size"], args["q_bits"], quant_predicate=predicate
    )
    per_layer = [v["bits"] for v in config["quantization"].values() if isinstance(v, dict)]
    low, high = QUANT_RECIPES[recipe]
    assert min(per_layer) == low == q.min_bits and max(per_layer) == high
