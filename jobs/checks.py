"""Preflight checks: what can be refused or warned about before a job is queued.

Each check is a pure function over data (tokenizer facts, dataset rows, suite,
spec) that returns Findings; `preflight` gathers the inputs at the edge and
runs them all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jobs.spec import ExperimentSpec


@dataclass(frozen=True)
class Finding:
    """One preflight result: the failure pattern it guards against, the evidence, the fix."""

    severity: str  # error | warning | info
    pattern: str
    message: str
    fix: str = ""
    file: str = ""
    line: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        where = (
            f"{self.file}:{self.line}: " if self.line else (f"{self.file}: " if self.file else "")
        )
        text = f"{self.severity}: {where}[{self.pattern}] {self.message}"
        return text + (f" — {self.fix}" if self.fix else "")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def preflight(spec: ExperimentSpec, spec_path: Path | None = None) -> list[Finding]:
    """All preflight checks for a validated spec."""
    return []
