"""The quantization matrix through a real worker: one run trains, fuses, then
quantizes to every mode (affine, mxfp4, nvfp4, mxfp8) and a mixed-bit recipe with
mlx_lm.convert on the tiny model, and evaluates each; the run page and the
leaderboard show what each variant lost against its twin."""

from __future__ import annotations

import json
from pathlib import Path

from sqlmodel import select

from jobs.db import Artifact, EvalResult, session_scope
from read.leaderboard import leaderboard
from read.run_detail import variant_summaries
from tests.support.farm import all_finished, stages_of, submit
from tests.support.processes import Workers, wait_until
from tests.support.spec_files import write_spec

MATRIX = [
    {"bits": 8},
    {"bits": 4, "group_size": 32},
    {"mode": "mxfp4"},
    {"mode": "nvfp4"},
    {"mode": "mxfp8"},
    {"recipe": "mixed_3_6"},
]
VARIANTS = ["q8", "q4g32", "mxfp4", "nvfp4", "mxfp8", "mixed_3_6"]
# What mlx-lm writes into each quantized model's config (the recipe: per layer).
CONFIGS = {
    "q8": ("affine", 8, 64),
    "q4g32": ("affine", 4, 32),
    "mxfp4": ("mxfp4", 4, 32),
    "nvfp4": ("nvfp4", 4, 16),
    "mxfp8": ("mxfp8", 8, 32),
}


def test_every_mode_trains_fuses_quantizes_and_evaluates(
    workers: Workers, tiny_model: Path, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tiny_model, quantize=MATRIX)
    experiment_id = submit(spec)
    workers.start("w1")
    wait_until(lambda: all_finished(experiment_id), timeout=600, what="the quantization matrix")
    stages = stages_of(experiment_id)
    problems = [(s.kind, s.variant, s.status, s.error) for s in stages if s.status != "done"]
    assert problems == []
    quantized = {s.variant: s for s in stages if s.kind == "quantize"}
    evals = {s.variant: s for s in stages if s.kind == "eval"}
    assert sorted(quantized) == sorted(VARIANTS)
    assert quantized["nvfp4"].params == {
        "bits": 4,
        "group_size": 16,
        "mode": "nvfp4",
        "recipe": None,
    }
    with session_scope() as session:
        artifacts = {
            a.variant: a for a in session.exec(select(Artifact).where(Artifact.kind == "quantized"))
        }
        assert sorted(artifacts) == sorted(VARIANTS)
        for variant in VARIANTS:
            assert quantized[variant].size_bytes, variant
            stage = evals[variant]
            assert stage.adherence is not None and stage.n_prompts == 27, variant
            rows = session.exec(select(EvalResult).where(EvalResult.stage_id == stage.id)).all()
            assert len(rows) == 27 and all(r.label for r in rows), variant
            config = json.loads((Path(artifacts[variant].path) / "config.json").read_text())
            quant = config["quantization"]
            if variant in CONFIGS:
                mode, bits, group = CONFIGS[variant]
                assert (quant["mode"], quant["bits"], quant["group_size"]) == (mode, bits, group)
            else:  # the recipe: 3 bits in most layers, 6 in a few
                per_layer = {v["bits"] for v in quant.values() if isinstance(v, dict)}
                assert per_layer == {3, 6}
        # The float32 fused model's unquantized weights stay float32.
        assert config["torch_dtype"] == "float32"

        run_id = evals["adapter"].run_id
        summaries = {s["variant"]: s for s in variant_summaries(session, run_id)}
        board = {r.variant: r for r in leaderboard(session)}
    fused = evals["fused"].adherence
    assert fused is not None
    for variant in VARIANTS:
        adherence = evals[variant].adherence
        assert adherence is not None
        expected = 100 * (adherence - fused)  # against the fused f16 twin
        assert abs(summaries[variant]["points_lost"] - expected) < 1e-6
        assert abs(board[variant].points_lost - expected) < 1e-6  # type: ignore[operator]
    assert summaries["adapter"]["points_lost"] is None
