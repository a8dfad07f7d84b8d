"""The experiment spec as pydantic models: every field, its bounds and its default.

The defaults are stated here and nowhere else (they mirror mlx-lm's `lora.py`
CONFIG_DEFAULTS); the cross checks, the file checks and the web form read them
from these models. Strict models: YAML's `"8"` is not the number 8.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from jobs import limits
from jobs.experiment_spec.cross_checks import cross_field_problems
from jobs.experiment_spec.notify import NotifySpec
from jobs.experiment_spec.options import (
    DEFAULT_GROUP_SIZE,
    DEFAULT_ITERS,
    DEFAULT_OPTIMIZER,
    DEFAULT_SAVE_EVERY,
    FLOAT_MODES,
    EvalVariant,
    QuantMode,
    QuantRecipe,
    ScheduleName,
    default_variants,
    quant_entry_problems,
    quant_variant,
    variant_bits,
)
from jobs.experiment_spec.probe import AdherenceProbe
from jobs.experiment_spec.words import dotted

_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")  # the whole name: fullmatch

# `parse_spec` runs the cross checks itself, on the raw YAML, to give each
# problem its line number; this validation context flag keeps the model from
# running them a second time.
SKIP_CROSS_CHECKS = "lorafarm.spec.skip_cross_checks"


def _not_zero(kind: str):  # type: ignore[no-untyped-def]
    def check(value: int) -> int:
        if value == 0:
            raise ValueError(f"must be -1 ({kind}) or at least 1, got 0")
        return value

    return AfterValidator(check)


NonEmptyStr = Annotated[str, Field(min_length=1)]
SpecPath = Annotated[Path, Field(strict=False)]

_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class LoraParams(BaseModel):
    """mlx-lm `lora_parameters`."""

    model_config = _CONFIG

    rank: int = Field(8, ge=1, le=1024)
    scale: float = Field(20.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    keys: list[NonEmptyStr] | None = Field(None, min_length=1)


class LrSchedule(BaseModel):
    """mlx-lm `lr_schedule`, built by `mlx_lm.tuner.utils.build_schedule`."""

    model_config = _CONFIG

    name: ScheduleName
    arguments: list[float] = Field(min_length=1)
    warmup: int = Field(0, ge=0)
    warmup_init: float = Field(0.0, ge=0)


class TrainSpec(BaseModel):
    """The knobs of `mlx_lm.lora --train`, defaults as in mlx-lm."""

    model_config = _CONFIG

    iters: int = Field(DEFAULT_ITERS, ge=1, le=limits.MAX_ITERS)
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(1e-5, gt=0, le=1)
    lr_schedule: LrSchedule | None = None
    num_layers: Annotated[int, Field(ge=-1), _not_zero("all layers")] = 16
    fine_tune_type: Literal["lora", "dora", "full"] = "lora"
    optimizer: Literal["adam", "adamw", "muon", "sgd", "adafactor"] = DEFAULT_OPTIMIZER
    # Keyword arguments of the chosen optimizer, e.g. {weight_decay: 0.1} for adamw.
    optimizer_config: dict[str, Any] = Field(default_factory=dict)
    mask_prompt: bool = False
    grad_accumulation_steps: int = Field(1, ge=1)
    grad_checkpoint: bool = False
    max_seq_length: int = Field(2048, ge=16)
    save_every: int = Field(DEFAULT_SAVE_EVERY, ge=1)
    steps_per_report: int = Field(10, ge=1)
    steps_per_eval: int = Field(200, ge=1)
    val_batches: Annotated[int, Field(ge=-1), _not_zero("the whole validation set")] = 25
    lora: LoraParams = Field(default_factory=LoraParams)
    # The farm's, not mlx-lm's: adherence of a few suite prompts at each checkpoint,
    # and early stopping on it (`jobs.experiment_spec.probe`). Left out of dumps when absent,
    # so a spec without one keeps its config fingerprint.
    adherence_probe: AdherenceProbe | None = Field(None, exclude_if=lambda value: value is None)
    # Experiment trackers mlx-lm reports to itself (`mlx_lm.lora --report-to`):
    # where the curves also go, not a knob, so not in the config fingerprint.
    report_to: list[Literal["wandb", "swanlab"]] = Field(
        default_factory=list, exclude_if=lambda value: not value
    )
    # Macs training this run together, data-parallel on MLX's ring backend
    # (`jobs.gang`): each takes batch_size / workers examples of every batch.
    # How many Macs train, not how the run trains: not in the config
    # fingerprint, and left out of dumps at 1 so older specs are unchanged.
    workers: int = Field(1, ge=1, le=limits.MAX_GANG_WORKERS, exclude_if=lambda value: value == 1)


class FuseSpec(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, validate_by_name=True, validate_by_alias=True
    )

    dequantize: bool = True
    from_: Literal["final", "best"] = Field("final", alias="from")


class QuantizeSpec(BaseModel):
    """One quantized variant, as mlx_lm.convert makes it: affine with bits and a group
    size of one's choice (or a mixed-bit `recipe`), or a float mode (mxfp4, nvfp4,
    mxfp8) whose bits and group size are fixed and so are not stored."""

    model_config = _CONFIG

    bits: Literal[2, 3, 4, 5, 6, 8] | None = None
    group_size: Literal[16, 32, 64, 128] | None = None
    mode: QuantMode = "affine"
    recipe: QuantRecipe | None = None

    @model_validator(mode="after")
    def _check_combination(self, info: ValidationInfo) -> Self:
        # Within parse_spec the cross checks report these with line numbers.
        if not (info.context and info.context.get(SKIP_CROSS_CHECKS)):
            found = quant_entry_problems(self.model_dump())
            if found:
                raise ValueError("; ".join(f"{key}: {msg}" for key, msg in found))
        if self.mode in FLOAT_MODES:
            # Fixed by the mode; left out so an entry never reads as an affine one.
            self.bits, self.group_size = None, None
        elif self.group_size is None:
            self.group_size = DEFAULT_GROUP_SIZE
        return self

    @property
    def variant(self) -> str:
        return quant_variant(self.mode, self.bits, self.group_size, self.recipe)

    @property
    def min_bits(self) -> int:
        """The fewest bits any weight gets: what decides whether LoRA deltas survive."""
        return variant_bits(self.variant) or 0

    @property
    def convert_args(self) -> dict[str, Any]:
        """mlx_lm.convert's quantization arguments (q_bits None: the recipe decides)."""
        bits, group = FLOAT_MODES.get(self.mode, (self.bits, self.group_size))
        return {
            "q_mode": self.mode,
            "q_bits": bits,
            "q_group_size": group,
            "quant_predicate": self.recipe,
        }


class EvalSpec(BaseModel):
    model_config = _CONFIG

    suite: SpecPath
    # Left out of the YAML, the default keeps only the variants the spec produces
    # (adapter, plus fused with a fuse section, plus quantized with a quantize list).
    variants: list[EvalVariant] = Field(
        default_factory=lambda: ["adapter", "fused", "quantized"], min_length=1
    )
    checkpoints: bool = False
    checkpoint_prompts: list[NonEmptyStr] | None = Field(None, min_length=1)
    max_tokens: int | None = Field(None, ge=1)


class Resources(BaseModel):
    model_config = _CONFIG

    min_memory_gb: float = Field(0.0, ge=0, le=limits.MAX_MEMORY_GB)
    timeout_hours: float = Field(24.0, ge=limits.MIN_TIMEOUT_HOURS, le=limits.MAX_TIMEOUT_HOURS)
    # Automatic retries of a stage that died (signal, lost worker, lost Redis);
    # a stage whose own code raised is not retried: it would fail the same way.
    retries: int = Field(2, ge=0, le=10)


class ExperimentSpec(BaseModel):
    model_config = _CONFIG

    name: str = Field(max_length=limits.MAX_NAME_CHARS)
    base_model: NonEmptyStr
    dataset: SpecPath
    seeds: list[Annotated[int, Field(ge=0, le=limits.MAX_SEED)]] = Field(
        min_length=1, max_length=limits.MAX_SEEDS
    )
    train: TrainSpec
    fuse: FuseSpec | None = Field(default_factory=FuseSpec)
    quantize: list[QuantizeSpec] = Field(default_factory=list)
    eval: EvalSpec
    resources: Resources = Field(default_factory=Resources)
    # A grid over knobs, dotted path → values (`jobs.experiment_spec.sweep` expands and checks
    # it). Left out of dumps when absent, so a plain spec's stored YAML is unchanged.
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] | None = Field(
        None, exclude_if=lambda value: value is None
    )
    # Where to POST when the experiment ends (`jobs.notify`); not part of the config.
    notify: NotifySpec | None = Field(None, exclude_if=lambda value: value is None)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.fullmatch(value):
            hint = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-") or "my-experiment"
            raise ValueError(
                f"may only contain letters, digits, '.', '_' and '-', got {value!r} — e.g. {hint!r}"
            )
        return value

    @model_validator(mode="after")
    def _defaults_and_cross_checks(self, info: ValidationInfo) -> Self:
        if "variants" not in self.eval.model_fields_set:
            self.eval = self.eval.model_copy(
                update={"variants": default_variants(self.fuse is not None, bool(self.quantize))}
            )
        if info.context and info.context.get(SKIP_CROSS_CHECKS):
            return self  # parse_spec runs them itself, with line numbers
        data = self.model_dump(by_alias=True)
        # A dumped spec always carries learning_rate; whether the user wrote one next
        # to lr_schedule is only known from the YAML, so parse_spec alone checks that.
        del data["train"]["learning_rate"]
        found = cross_field_problems(data)
        if found:
            raise ValueError("; ".join(f"{dotted(loc)}: {msg}" for loc, msg in found))
        return self

    @property
    def base_model_is_local(self) -> bool:
        """True when base_model is a (resolved, absolute) local folder, not an HF id."""
        return is_local_model(self.base_model)

    @property
    def quantize_variants(self) -> list[str]:
        return [q.variant for q in self.quantize]


def is_local_model(base_model: str) -> bool:
    return Path(base_model).expanduser().is_absolute()
