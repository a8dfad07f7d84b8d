"""`train.adherence_probe`: a few suite prompts generated at each checkpoint,
inside the train stage, and the rule that stops training on what they show.

Earlier runs found that format adherence locks in (or collapses into loops)
at a seed-dependent iteration, and that val loss does not show it: the probe
watches adherence itself, with the model already in memory, and can end
training once the format has locked or collapsed for `patience` checkpoints
in a row. The decision is `jobs.probe.decide`; the generation is `worker.probe`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Bounds that keep the probe a small share of training: it runs at every checkpoint.
MAX_PROBE_PROMPTS = 64
MAX_PROBE_TOKENS = 4096
MAX_PATIENCE = 100


class AdherenceProbe(BaseModel):
    """Generate the first `prompts` suite prompts greedily at every checkpoint
    (`train.save_every`) and score them; optionally stop training early."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    # Suite prompt ids to probe, or a count: the first N prompts in suite order.
    prompts: int | list[str] = Field(8)
    # Probe every N iterations (a multiple of train.save_every: probes run at
    # checkpoints); None: at every checkpoint.
    every: int | None = Field(None, ge=1)
    # None: eval.max_tokens, else the suite's own generation.max_tokens.
    max_tokens: int | None = Field(None, ge=1, le=MAX_PROBE_TOKENS)
    # Stop once adherence is at least this on `patience` probes in a row.
    stop_when_locked: float | None = Field(None, gt=0, le=1)
    # Stop once every probe response loops or is empty on `patience` probes in a row.
    stop_when_collapsed: bool = False
    # Probes in a row a stop rule needs (unused without one).
    patience: int = Field(2, ge=1, le=MAX_PATIENCE)

    @field_validator("prompts")
    @classmethod
    def _bounded_prompts(cls, value: int | list[str]) -> int | list[str]:
        count = value if isinstance(value, int) else len(value)
        if not 1 <= count <= MAX_PROBE_PROMPTS:
            raise ValueError(f"probe 1 to {MAX_PROBE_PROMPTS} prompts (got {count})")
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError("a prompt id is listed twice")
        return value

    def due(self, iteration: int, save_every: int) -> bool:
        """Whether the checkpoint at `iteration` is probed."""
        return iteration % (self.every or save_every) == 0

    @property
    def stops(self) -> bool:
        """True when the probe may end training, not only record adherence."""
        return self.stop_when_locked is not None or self.stop_when_collapsed
