"""The adherence probe's stop rule: from the probes so far, stop training or not.

Pure (no DB, no model): the train stage (`worker.probe`) feeds it the probes
of its run, oldest first, after each checkpoint, and a resumed attempt feeds it
the probes its predecessors stored, so both reach the same decision.

- **locked**: adherence ≥ `stop_when_locked` on the last `patience` probes;
- **collapsed**: every response of the last `patience` probes looped or was
  empty (the scorer's `degenerate` and `empty` labels): more training rarely
  brings a collapsed seed back, so its time is better spent on another seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from jobs.experiment_spec.probe import AdherenceProbe

# Scorer labels of a response with no content: a loop, or nothing at all.
COLLAPSED_LABELS = frozenset({"degenerate", "empty"})


@dataclass(frozen=True)
class ProbeResult:
    """One probe: the checkpoint's iteration, mean score and label counts."""

    iteration: int
    adherence: float
    labels: Mapping[str, int] = field(default_factory=dict)

    @property
    def collapsed(self) -> bool:
        """Every response looped or was empty (and there was at least one)."""
        counts = {k: v for k, v in self.labels.items() if v}
        return bool(counts) and set(counts) <= COLLAPSED_LABELS


@dataclass(frozen=True)
class StopDecision:
    how: Literal["locked", "collapsed"]
    iteration: int  # the checkpoint training ends on
    reason: str  # the sentence `Stage.early_stop` keeps


def _iterations(probes: Sequence[ProbeResult]) -> str:
    """100, 200 and 300 -> "100, 200 and 300"."""
    numbers = [str(p.iteration) for p in probes]
    return numbers[0] if len(numbers) == 1 else f"{', '.join(numbers[:-1])} and {numbers[-1]}"


def decide(probes: Sequence[ProbeResult], rule: AdherenceProbe) -> StopDecision | None:
    """Whether to stop after the newest probe in `probes` (oldest first, one per
    checkpoint); None to go on. Only the last `rule.patience` probes count."""
    if len(probes) < rule.patience:
        return None
    last = list(probes[-rule.patience :])
    at = _iterations(last)
    what = "probe" if len(last) == 1 else "probes"
    threshold = rule.stop_when_locked
    if threshold is not None and all(p.adherence >= threshold for p in last):
        reason = f"locked: adherence ≥ {threshold:.2f} on the {what} at {at}"
        return StopDecision("locked", last[-1].iteration, reason)
    if rule.stop_when_collapsed and all(p.collapsed for p in last):
        reason = f"collapsed: every probe response looped or was empty at {at}"
        return StopDecision("collapsed", last[-1].iteration, reason)
    return None
