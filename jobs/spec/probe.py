"""`train.adherence_probe`: a few suite prompts generated at each checkpoint,
inside the train stage, and the rule that stops training on what they show.

Earlier runs found that format adherence locks in (or collapses into loops)
at a seed-dependent iteration, and that val loss does not show it: the probe
watches adherence itself, with the model already in memory, and can end
training once the format has locked or collapsed for `patience` checkpoints
in a row. The decision is `jobs.probe.decide`; the generation is `worker.probe`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Bounds that keep the probe a small share of training: it runs at every checkpoint.
MAX_PROBE_PROMPTS = 64
MAX_PROBE_TOKENS = 4096
MAX_PATIENCE = 100


class AdherenceProbe(BaseModel):
    """Generate the first `prompts` suite prompts greedily at every checkpoint
    (`train.save_every`) and score them; optionally stop training early."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    # The first N prompts of the eval suite, in suite order.
    prompts: int = Field(8, ge=1, le=MAX_PROBE_PROMPTS)
    # None: eval.max_tokens, else the suite's own generation.max_tokens.
    max_tokens: int | None = Field(None, ge=1, le=MAX_PROBE_TOKENS)
    # Stop once adherence is at least this on `patience` probes in a row.
    stop_when_locked: float | None = Field(None, gt=0, le=1)
    # Stop once every probe response loops or is empty on `patience` probes in a row.
    stop_when_collapsed: bool = False
    # Probes in a row a stop rule needs (unused without one).
    patience: int = Field(2, ge=1, le=MAX_PATIENCE)

    @property
    def stops(self) -> bool:
        """True when the probe may end training, not only record adherence."""
        return self.stop_when_locked is not None or self.stop_when_collapsed
