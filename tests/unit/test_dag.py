"""The stage DAG planned from a spec (pure)."""

from __future__ import annotations

from pathlib import Path

from jobs.dag import checkpoint_iterations, plan_run
from jobs.experiment_spec import parse_spec

SPEC = """
name: dag
base_model: org/model
dataset: {dataset}
seeds: [1]
train: {{iters: 300, save_every: 100}}
fuse: {{dequantize: true}}
quantize: [{{bits: 8}}, {{bits: 4, group_size: 32}}]
eval: {{suite: {suite}, variants: [adapter, fused, quantized], checkpoints: {checkpoints}}}
"""


def spec(checkpoints: bool = False):  # type: ignore[no-untyped-def]
    root = Path(__file__).resolve().parents[2] / "data"
    text = SPEC.format(
        dataset=root / "datasets" / "code_mode",
        suite=root / "evals" / "code_mode.yaml",
        checkpoints=str(checkpoints).lower(),
    )
    return parse_spec(text, check_files=False)


def test_full_dag_has_every_stage_under_its_parent() -> None:
    stages = {s.key: s for s in plan_run(spec())}
    assert stages["train"].parent is None
    assert stages["eval:adapter"].parent == "train"
    assert stages["fuse"].parent == "train" and stages["fuse"].params == {"dequantize": True}
    assert stages["eval:fused"].parent == "fuse"
    assert stages["quantize:q8"].parent == "fuse" and stages["quantize:q8"].params["bits"] == 8
    assert stages["quantize:q4g32"].params == {
        "bits": 4,
        "group_size": 32,
        "mode": "affine",
        "recipe": None,
    }
    assert stages["eval:q4g32"].parent == "quantize:q4g32"
    assert len(stages) == 8


def test_parents_come_before_children() -> None:
    seen: set[str] = set()
    for stage in plan_run(spec(checkpoints=True)):
        assert stage.parent is None or stage.parent in seen
        seen.add(stage.key)


def test_each_checkpoint_gets_an_eval() -> None:
    assert checkpoint_iterations(300, 100) == [100, 200, 300]
    keys = [s.key for s in plan_run(spec(checkpoints=True))]
    assert {"eval:ckpt-0000100", "eval:ckpt-0000200", "eval:ckpt-0000300"} <= set(keys)
    assert not any(k.startswith("eval:ckpt") for k in (s.key for s in plan_run(spec())))
