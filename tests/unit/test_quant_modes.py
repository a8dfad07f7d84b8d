"""Quantize entries beyond affine bits: mlx's float modes (mxfp4, nvfp4, mxfp8) and
mlx-lm's mixed-bit recipes. Validation, variant names, the planned stage params,
the signal-loss warning and the quantization twin. What mlx-lm itself accepts is
checked in tests/integration/test_quant_modes_mlx.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from jobs.checks import QUANTIZATION_SIGNAL_LOSS
from jobs.checks.quantization import check_quantization, ensure_quant_twin
from jobs.dag import plan_run
from jobs.experiment_spec import ExperimentSpec, QuantizeSpec, load_spec, parse_spec, spec_to_yaml
from jobs.experiment_spec.options import quant_variant, variant_bits
from jobs.problems import InputError, Problem
from tests.support.spec_files import VALID_SPEC, make_workspace

QUANT_LINES = "quantize:\n  - {bits: 4}\n  - {bits: 5, group_size: 32}\n"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    make_workspace(tmp_path)
    return tmp_path


def with_quantize(ws: Path, *entries: str, variants: str = "[adapter, fused, quantized]") -> str:
    """VALID_SPEC (line 15 `quantize:`, entries from line 16) with these entries."""
    lines = "quantize:\n" + "".join(f"  - {e}\n" for e in entries)
    text = VALID_SPEC.replace(QUANT_LINES, lines, 1)
    return text.replace("  variants: [adapter, fused, quantized]", f"  variants: {variants}")


def problems(ws: Path, text: str) -> list[Problem]:
    path = ws / "spec.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_spec(path)
    return info.value.problems


def spec_with(ws: Path, *entries: str, variants: str = "[adapter, fused, quantized]"):
    path = ws / "spec.yaml"
    path.write_text(with_quantize(ws, *entries, variants=variants))
    return load_spec(path)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("entry", "variant", "bits"),
    [
        ({"bits": 4}, "q4", 4),
        ({"bits": 4, "group_size": 32}, "q4g32", 4),
        ({"bits": 8, "group_size": 128}, "q8g128", 8),
        ({"mode": "mxfp4"}, "mxfp4", 4),
        ({"mode": "nvfp4"}, "nvfp4", 4),
        ({"mode": "mxfp8"}, "mxfp8", 8),
        ({"mode": "mxfp4", "bits": 4, "group_size": 32}, "mxfp4", 4),
        ({"recipe": "mixed_3_6"}, "mixed_3_6", 3),
        ({"recipe": "mixed_2_6", "mode": "affine", "group_size": 32}, "mixed_2_6g32", 2),
        ({"recipe": "mixed_4_6", "group_size": 64}, "mixed_4_6", 4),
        ({"recipe": "mixed_3_4"}, "mixed_3_4", 3),
    ],
)
def test_variant_names_and_bits(entry: dict[str, Any], variant: str, bits: int) -> None:
    q = QuantizeSpec(**entry)
    assert q.variant == variant and q.min_bits == bits
    assert variant_bits(variant) == bits


def test_variant_names_are_unique_across_every_accepted_entry() -> None:
    names = set()
    count = 0
    for mode in ("affine", "mxfp4", "nvfp4", "mxfp8"):
        for bits in (None, 2, 3, 4, 5, 6, 8):
            for group in (None, 16, 32, 64, 128):
                for recipe in (None, "mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6"):
                    try:
                        q = QuantizeSpec(mode=mode, bits=bits, group_size=group, recipe=recipe)
                    except ValidationError:
                        continue
                    count += 1
                    names.add((q.mode, q.bits, q.convert_args["q_group_size"], q.recipe, q.variant))
    # each distinct quantization has one name, each name one quantization
    assert len({n[-1] for n in names}) == len(names)
    # affine 6 bits x 3 groups, 3 float modes, 4 recipes x 3 groups
    assert len(names) == 18 + 3 + 12
    assert count > len(names)  # e.g. mxfp4 written with and without its bits


def test_variant_bits_of_other_variants() -> None:
    for variant in ("adapter", "fused", "base", "best", "ckpt-0000100", "mixed_9_9", "qx"):
        assert variant_bits(variant) is None
    assert quant_variant("affine", 5, 64) == "q5"


def test_float_modes_store_neither_bits_nor_group_size() -> None:
    # fixed by the mode, so a stored entry never reads as an affine q4g32
    q = QuantizeSpec(mode="mxfp4", bits=4, group_size=32)
    assert (q.bits, q.group_size) == (None, None)
    assert q.convert_args == {
        "q_mode": "mxfp4",
        "q_bits": 4,
        "q_group_size": 32,
        "quant_predicate": None,
    }
    assert QuantizeSpec(mode="nvfp4").convert_args["q_group_size"] == 16
    recipe = QuantizeSpec(recipe="mixed_3_6")
    assert recipe.convert_args == {
        "q_mode": "affine",
        "q_bits": None,
        "q_group_size": 64,
        "quant_predicate": "mixed_3_6",
    }


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (
            {"mode": "mxfp4", "bits": 8},
            "mxfp4 is 4-bit: mlx refuses 8 bits — remove bits or use mode mxfp8",
        ),
        (
            {"mode": "mxfp8", "bits": 4},
            "mxfp8 is 8-bit: mlx refuses 4 bits — remove bits or use mode mxfp4",
        ),
        ({"mode": "nvfp4", "bits": 5}, "nvfp4 is 4-bit: mlx refuses 5 bits — remove bits"),
        ({"mode": "mxfp4", "group_size": 64}, "mxfp4 uses group size 32: mlx refuses 64"),
        ({"mode": "nvfp4", "group_size": 32}, "nvfp4 uses group size 16: mlx refuses 32"),
        ({"mode": "mxfp8", "group_size": 16}, "mxfp8 uses group size 32: mlx refuses 16"),
        ({"bits": 4, "group_size": 16}, "affine quantization takes group size 32, 64, 128"),
        ({"recipe": "mixed_3_6", "mode": "mxfp4"}, "mixed_3_6 is an affine recipe"),
        ({"recipe": "mixed_3_6", "group_size": 16}, "mlx refuses 16"),
        ({"recipe": "mixed_3_6", "bits": 4}, "bits would be ignored — remove bits"),
        ({}, "affine quantization needs bits"),
        ({"group_size": 32}, "affine quantization needs bits"),
    ],
)
def test_refused_combinations(entry: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        QuantizeSpec(**entry)


def test_refusals_point_at_the_yaml_line(ws: Path) -> None:
    found = problems(
        ws,
        with_quantize(
            ws,
            "{bits: 8}",
            "{mode: mxfp4,\n     bits: 8}",
            "{recipe: mixed_3_6, mode: nvfp4}",
            "{mode: nvfp4, group_size: 64}",
        ),
    )
    by_field = {p.field: p for p in found}
    assert set(by_field) == {"quantize[1].bits", "quantize[2].recipe", "quantize[3].group_size"}
    assert by_field["quantize[1].bits"].line == 18  # the continuation line of the entry
    assert by_field["quantize[2].recipe"].line == 19
    assert "mixed_3_6 is an affine recipe" in by_field["quantize[2].recipe"].message
    assert by_field["quantize[3].group_size"].line == 20


def test_unknown_mode_and_recipe_are_type_problems(ws: Path) -> None:
    found = problems(ws, with_quantize(ws, "{mode: fp4}", "{recipe: mixed_5_6}"))
    fields = {p.field for p in found}
    assert fields == {"quantize[0].mode", "quantize[1].recipe"}, found


def test_duplicates_are_found_by_variant_name(ws: Path) -> None:
    found = problems(
        ws,
        with_quantize(
            ws, "{mode: mxfp4}", "{mode: mxfp4, bits: 4, group_size: 32}", "{recipe: mixed_3_6}"
        ),
    )
    (p,) = found
    assert p.field == "quantize[1]" and "duplicate quantize variant mxfp4" in p.message
    # an affine q4g32 is not the mxfp4 variant
    spec_with(ws, "{mode: mxfp4}", "{bits: 4, group_size: 32}")


def test_the_matrix_parses_round_trips_and_plans(ws: Path) -> None:
    spec = spec_with(
        ws,
        "{bits: 8}",
        "{bits: 4, group_size: 32}",
        "{mode: mxfp4}",
        "{mode: nvfp4}",
        "{mode: mxfp8}",
        "{recipe: mixed_3_6}",
    )
    assert spec.quantize_variants == ["q8", "q4g32", "mxfp4", "nvfp4", "mxfp8", "mixed_3_6"]
    assert parse_spec(spec_to_yaml(spec), "again", ws) == spec
    params = {s.variant: s.params for s in plan_run(spec) if s.kind == "quantize"}
    assert params["q4g32"] == {"bits": 4, "group_size": 32, "mode": "affine", "recipe": None}
    assert params["nvfp4"] == {"bits": 4, "group_size": 16, "mode": "nvfp4", "recipe": None}
    assert params["mxfp8"] == {"bits": 8, "group_size": 32, "mode": "mxfp8", "recipe": None}
    assert params["mixed_3_6"] == {
        "bits": None,
        "group_size": 64,
        "mode": "affine",
        "recipe": "mixed_3_6",
    }
    evals = {s.variant for s in plan_run(spec) if s.kind == "eval"}
    assert set(spec.quantize_variants) <= evals


def test_an_experiment_spec_built_in_code_is_checked_too(ws: Path) -> None:
    spec = spec_with(ws, "{bits: 8}")
    data = spec.model_dump(by_alias=True)
    data["quantize"] = [{"mode": "mxfp8", "bits": 8}, {"mode": "mxfp8"}]
    with pytest.raises(ValidationError, match="duplicate quantize variant mxfp8"):
        ExperimentSpec.model_validate(data)


# --------------------------------------------------------------------------- preflight


def signal_loss(spec: ExperimentSpec):
    found = [f for f in check_quantization(spec) if f.pattern == QUANTIZATION_SIGNAL_LOSS]
    return found[0] if found else None


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("{mode: mxfp4}", "mxfp4 quantizes the fused adapter to 4-bit floats (mxfp4, 16 levels)"),
        ("{mode: nvfp4}", "4-bit floats (nvfp4, 16 levels)"),
        ("{recipe: mixed_3_6}", "3 bits in most layers (8 levels; 6 bits in a few)"),
        ("{recipe: mixed_4_6}", "4 bits in most layers"),
        ("{recipe: mixed_2_6}", "2 bits in most layers"),
        ("{recipe: mixed_3_4}", "3 bits in most layers"),
        ("{bits: 4}", "q4 quantizes the fused adapter to 4 bits (16 levels)"),
    ],
)
def test_low_modes_and_recipes_warn(ws: Path, entry: str, words: str) -> None:
    finding = signal_loss(spec_with(ws, entry))
    assert finding is not None and finding.severity == "warning"
    assert words in finding.message and "earlier runs" in finding.message
    assert "the seeds" not in finding.message


def test_the_warning_points_at_what_makes_the_variant_low(ws: Path) -> None:
    spec = spec_with(ws, "{bits: 8}", "{recipe: mixed_3_6}")
    text = (ws / "spec.yaml").read_text()
    lines = text.splitlines()

    def line_of(loc: tuple[str | int, ...]) -> int | None:
        return 17 if loc == ("quantize", 1, "recipe") else None

    (finding,) = [f for f in check_quantization(spec, line_of=line_of)]
    assert finding.line == 17 and "mixed_3_6" in lines[16]
    assert finding.evidence["variants"] == ["mixed_3_6"]
    assert finding.evidence["bits"] == 3 and finding.evidence["recipes"] == ["mixed_3_6"]


@pytest.mark.parametrize(
    "entry", ["{bits: 8}", "{bits: 5}", "{mode: mxfp8}", "{bits: 6, group_size: 32}"]
)
def test_five_bits_and_more_do_not_warn(ws: Path, entry: str) -> None:
    assert signal_loss(spec_with(ws, entry)) is None


@pytest.mark.parametrize(
    ("entry", "twin"),
    [
        ("{mode: mxfp4}", "q5g32"),  # mxfp4's group size 32
        ("{mode: nvfp4}", "q5"),  # affine has no group size 16
        ("{recipe: mixed_3_6}", "q5"),
        ("{recipe: mixed_2_6, group_size: 128}", "q5g128"),
        ("{bits: 4, group_size: 32}", "q5g32"),
    ],
)
def test_low_variants_get_a_twin(ws: Path, entry: str, twin: str) -> None:
    spec = spec_with(ws, entry, variants="[adapter, quantized]")
    warning = signal_loss(spec)
    assert warning is not None and f"the farm adds a {twin} twin" in warning.message
    new, info = ensure_quant_twin(spec)
    assert info is not None and info.evidence["added"] == twin
    assert new.quantize_variants[-1] == twin
    assert ensure_quant_twin(new) == (new, None)  # the twin is enough


@pytest.mark.parametrize(
    ("entries", "variants"),
    [
        (("{mode: mxfp4}", "{mode: mxfp8}"), "[adapter, quantized]"),  # mxfp8 counts as 8 bits
        (("{recipe: mixed_3_6}", "{bits: 5}"), "[adapter, quantized]"),
        (("{mode: nvfp4}",), "[adapter, fused, quantized]"),  # the fused f16 model
    ],
)
def test_an_existing_twin_is_enough(ws: Path, entries: tuple[str, ...], variants: str) -> None:
    spec = spec_with(ws, *entries, variants=variants)
    assert ensure_quant_twin(spec) == (spec, None)
    warning = signal_loss(spec)
    assert warning is not None and "compared with the run's f16 / ≥ 5-bit twin" in warning.message


# --------------------------------------------------------------------------- the form


def test_the_form_offers_every_mode_and_recipe(tmp_path: Path) -> None:
    from tests.support.web import workspace
    from web import form_bounds, forms

    options = forms.QUANT_OPTIONS
    assert options[:6] == ("q8", "q6", "q5", "q4", "q3", "q2")
    assert {"q4g32", "mxfp8", "mxfp4", "nvfp4", "mixed_4_6", "mixed_3_6", "mixed_2_6"} <= set(
        options
    )
    # each choice is the spec entry of that very variant
    for option in options:
        assert QuantizeSpec(**forms._quantize_entry(option)).variant == option
    assert forms._quantize_entry("nvfp4") == {"mode": "nvfp4"}
    assert forms._quantize_entry("mixed_3_6") == {"recipe": "mixed_3_6"}

    values = workspace(tmp_path)
    values.update({"quantize": ["q8", "mxfp4", "nvfp4", "mxfp8", "mixed_3_6"]})
    result = form_bounds.validate_form(values, run_preflight=False)
    assert result.ok, result.problems
    assert result.spec is not None
    assert result.spec.quantize_variants == ["q8", "mxfp4", "nvfp4", "mxfp8", "mixed_3_6"]
    assert "- {mode: mxfp4}" in result.yaml and "- {recipe: mixed_3_6}" in result.yaml
