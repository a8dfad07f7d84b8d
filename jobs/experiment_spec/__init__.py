"""Experiment specs: YAML in, a validated `ExperimentSpec` out, every problem reported.

A spec describes one experiment; each seed becomes one run. `parse_spec` reports
ALL problems at once, each pointing at the YAML line of the offending key, and
returns a spec whose dataset, suite and local base model are absolute paths.

One job per module:

- `model`: the pydantic models, their bounds and defaults (stated once);
- `options`: the closed choices mlx-lm accepts, variant names;
- `cross_checks`: checks spanning several fields;
- `yaml_source`: the bounded YAML loader and the one YAML line locator;
- `messages`: pydantic errors as messages a spec author can act on;
- `files`: paths made absolute, model / dataset / suite files checked;
- `parse`: `parse_spec`, `load_spec`, `spec_to_yaml`;
- `fingerprint`: `config_fingerprint`, what pools runs on the leaderboard;
- `sweep`: `sweep:` expanded into its grid of specs (`expand_sweep`, `load_sweep`);
- `probe`: `train.adherence_probe`, the adherence probe and its stop rule;
- `mlx_args`: the one mapping from a `TrainSpec` to mlx-lm's lora arguments;
- `words`: dotted field names and value wording shared by the messages.

Import from `jobs.experiment_spec`: these re-exports are the public surface.
"""

from __future__ import annotations

from jobs.experiment_spec.cross_checks import cross_field_problems
from jobs.experiment_spec.files import (
    TOKENIZER_FILES,
    looks_like_hf_id,
    model_dir_problems,
    resolve_path,
)
from jobs.experiment_spec.fingerprint import (
    FINGERPRINT_VERSION,
    MODEL_META_FILES,
    config_fingerprint,
    fingerprint_payload,
    model_identity,
)
from jobs.experiment_spec.mlx_args import lora_config, lora_run_config
from jobs.experiment_spec.model import (
    EvalSpec,
    ExperimentSpec,
    FuseSpec,
    LoraParams,
    LrSchedule,
    QuantizeSpec,
    Resources,
    TrainSpec,
    is_local_model,
)
from jobs.experiment_spec.options import (
    DEFAULT_GROUP_SIZE,
    OPTIMIZER_KWARGS,
    QUANT_BITS,
    QUANT_GROUP_SIZES,
    SCHEDULES,
    EvalVariant,
    default_variants,
    variant_name,
)
from jobs.experiment_spec.parse import load_spec, parse_spec, read_spec_file, spec_to_yaml
from jobs.experiment_spec.probe import AdherenceProbe
from jobs.experiment_spec.sweep import KNOB_PATHS, SweepPoint, expand_sweep, load_sweep, parse_sweep
from jobs.experiment_spec.words import Loc, dotted
from jobs.experiment_spec.yaml_source import LineOf, line_locator, read_yaml, yaml_locator

__all__ = [
    "AdherenceProbe",
    "DEFAULT_GROUP_SIZE",
    "FINGERPRINT_VERSION",
    "KNOB_PATHS",
    "MODEL_META_FILES",
    "OPTIMIZER_KWARGS",
    "QUANT_BITS",
    "QUANT_GROUP_SIZES",
    "SCHEDULES",
    "TOKENIZER_FILES",
    "EvalSpec",
    "EvalVariant",
    "ExperimentSpec",
    "FuseSpec",
    "LineOf",
    "Loc",
    "LoraParams",
    "LrSchedule",
    "QuantizeSpec",
    "Resources",
    "SweepPoint",
    "TrainSpec",
    "config_fingerprint",
    "cross_field_problems",
    "default_variants",
    "dotted",
    "expand_sweep",
    "fingerprint_payload",
    "is_local_model",
    "line_locator",
    "load_spec",
    "load_sweep",
    "looks_like_hf_id",
    "lora_config",
    "lora_run_config",
    "model_dir_problems",
    "model_identity",
    "parse_spec",
    "parse_sweep",
    "read_spec_file",
    "read_yaml",
    "resolve_path",
    "spec_to_yaml",
    "variant_name",
    "yaml_locator",
]
