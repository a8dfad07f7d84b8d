"""Run diagnostics: the failure patterns that only show after a run.

Computed when a run's evals finish (`record_run_diagnostics`) and per
configuration across seeds (`record_config_diagnostics`), stored as
`Diagnostic` rows, shown by `farm status`, the run page and as badges on the
leaderboard (`badges`).

`detect` holds the detections, pure functions over rows with the thresholds
in its docstring; `record` holds the queries and writes the `Diagnostic` rows.
This package re-exports what the rest of the farm uses.
"""

from jobs.diagnostics.detect import (
    DRIFT_RULES,
    Detection,
    SeedScore,
    VariantResult,
    config_detections,
    diagnosed,
    run_detections,
)
from jobs.diagnostics.record import (
    Badge,
    badges,
    record_config_diagnostics,
    record_run_diagnostics,
    seed_scores,
    variant_results,
)

__all__ = [
    "DRIFT_RULES",
    "Badge",
    "Detection",
    "SeedScore",
    "VariantResult",
    "badges",
    "config_detections",
    "diagnosed",
    "record_config_diagnostics",
    "record_run_diagnostics",
    "run_detections",
    "seed_scores",
    "variant_results",
]
