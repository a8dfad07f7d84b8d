"""Builders for spec tests: a fake model folder, a dataset, a suite and a spec file.

The fake model is only good for validation (config.json, a tiny .safetensors file
and tokenizer.json); nothing here loads it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import yaml

from tests.support import PROJECT_ROOT

CHAT_ROW: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "user", "content": "List the files."},
        {"role": "assistant", "content": "<tool_call>ls()</tool_call>"},
    ]
}


def write_safetensors(path: Path, floats: int = 4) -> None:
    """A minimal valid .safetensors file holding one float32 tensor."""
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [floats], "data_offsets": [0, 4 * floats]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(
        struct.pack("<Q", len(header)) + header + struct.pack(f"<{floats}f", *range(floats))
    )


def make_model_dir(root: Path, name: str = "model", layers: int = 4) -> Path:
    model = root / name
    model.mkdir(parents=True)
    (model / "config.json").write_text(
        json.dumps({"model_type": "qwen3", "num_hidden_layers": layers, "hidden_size": 8})
    )
    write_safetensors(model / "model.safetensors")
    (model / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    return model


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_dataset(root: Path, name: str = "data", rows: int = 8) -> Path:
    data = root / name
    write_jsonl(data / "train.jsonl", [CHAT_ROW] * rows)
    write_jsonl(data / "valid.jsonl", [CHAT_ROW] * rows)
    return data


SUITE_YAML = """\
name: tiny
format: code_mode
prompts:
  - {id: p1, category: files, prompt: List the files., expect: tool, tool: read_file}
  - {id: p2, category: chat, prompt: Hello, expect: direct}
"""


def make_suite(root: Path, name: str = "suite.yaml") -> Path:
    suite = root / name
    suite.write_text(SUITE_YAML)
    return suite


# A spec written with relative paths, for files laid out by `make_workspace`.
VALID_SPEC = """\
name: code-mode-r8
base_model: model
dataset: data
seeds: [1, 2, 3]
train:
  iters: 50
  batch_size: 2
  learning_rate: 1.0e-4
  num_layers: 4
  mask_prompt: true
  lora:
    rank: 8
    scale: 20.0
fuse: {dequantize: true}
quantize:
  - {bits: 4}
  - {bits: 5, group_size: 32}
eval:
  suite: suite.yaml
  variants: [adapter, fused, quantized]
  checkpoints: true
resources: {min_memory_gb: 8}
"""


def make_workspace(root: Path) -> Path:
    """model/, data/, suite.yaml and spec.yaml (VALID_SPEC) under root; returns the spec."""
    make_model_dir(root)
    make_dataset(root)
    make_suite(root)
    spec = root / "spec.yaml"
    spec.write_text(VALID_SPEC)
    return spec


def write_spec(path: Path, model: Path, **overrides: object) -> Path:
    """A small spec over the demo data that runs in seconds on the tiny model."""
    spec: dict[str, object] = {
        "name": "test-spec",
        "base_model": str(model),
        "dataset": str(PROJECT_ROOT / "data" / "datasets" / "code_mode"),
        "seeds": [1],
        "train": {
            "iters": 6,
            "batch_size": 2,
            "learning_rate": 1e-3,
            "num_layers": -1,
            "steps_per_report": 2,
            "steps_per_eval": 3,
            "val_batches": 2,
            "save_every": 3,
            "max_seq_length": 512,
            "lora": {"rank": 4, "scale": 10.0, "dropout": 0.0},
        },
        "fuse": {"dequantize": True},
        "quantize": [{"bits": 8, "group_size": 64}],
        "eval": {
            "suite": str(PROJECT_ROOT / "data" / "evals" / "code_mode.yaml"),
            "variants": ["adapter", "fused", "quantized"],
            "max_tokens": 24,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            merged = dict(spec[key])  # type: ignore[arg-type]
            merged.update(value)
            spec[key] = merged
        else:
            spec[key] = value
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
