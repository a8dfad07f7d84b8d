"""What a preflight check returns: the Finding, the failure patterns it names, and
the thresholds the checks apply.

The pattern names are the table "Failures the farm must catch" of
docs/architecture.md; run diagnostics (jobs.diagnostics) use the same names so a
preflight warning and a detection after the run line up in the UI.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# --------------------------------------------------------------------------- patterns

# The failure patterns of docs/architecture.md ("Failures the farm must catch"); run
# diagnostics (jobs.diagnostics) use the same names so a preflight warning and
# a detection after the run line up in the UI.
QUANTIZATION_SIGNAL_LOSS = "quantization signal loss"
TOKENIZER_MISMATCH = "tokenizer / format mismatch"
CONFLICTING_FORMATS = "conflicting formats in data"
DISTRIBUTION_GAPS = "training distribution gaps"
EOS_MISMATCH = "eos / stop mismatch"
THINK_INTERFERENCE = "think-mode interference"
PROSE_DRIFT = "prose drift / alignment override"
WRAPPER_NOT_LEARNED = "wrapper not learned"
MODE_COLLAPSE = "mode collapse"
STOCHASTIC_FORMAT_LOCK = "stochastic format lock"
MISLEADING_VAL_LOSS = "misleading val loss"
# Data and suite hygiene that the table's patterns do not name on their own.
DUPLICATE_EXAMPLES = "duplicate examples"
EVAL_LEAKAGE = "eval prompts in training data"
TRUNCATION = "truncated examples"
SHORT_MAX_TOKENS = "max_tokens too short"
SUITE_CONSISTENCY = "eval suite consistency"
# How mlx-lm will read and train on the dataset files (jobs.datasets).
DATA_LOADING = "how mlx-lm reads the data"

# --------------------------------------------------------------------------- thresholds

# Special tokens each suite format relies on: each must be ONE token of the
# base model's tokenizer (earlier runs' Qwen2.5 split <tool_response> into 5
# pieces: 0% tool calling).
_QWEN_TOOL_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<|im_start|>",
    "<|im_end|>",
)
FORMAT_TOKENS: dict[str, tuple[str, ...]] = {
    "code_mode": _QWEN_TOOL_TOKENS,  # both formats wrap calls in Qwen's tool-call tokens
    "json_tools": _QWEN_TOOL_TOKENS,
}
# Below 5 bits (32 levels) earlier runs' fused adapters were rounded away.
MIN_SAFE_BITS = 5
TWIN_BITS = 5
# Tool-call share of the training examples outside this range: warning.
TOOL_SHARE_RANGE = (0.10, 0.90)
# Generations cut by max_tokens: warn when this share of training answers is longer.
LONG_ANSWER_SHARE = 0.5
# Training examples whose system prompt differs from the suite's: warn above this share.
SYSTEM_PROMPT_MISMATCH_SHARE = 0.5
# Seeds needed to see seed-to-seed spread (earlier runs: 82.4%, 38.9%, 22.2%).
MIN_SEEDS = 3
# mlx-lm reports a val loss at `it - 1` for it in 1, k*steps_per_eval, iters; a
# checkpoint counts as having one when a report is at most this many steps away.
VAL_LOSS_TOLERANCE_STEPS = 1
# Findings of one kind listed before the rest are summarised.
MAX_LISTED = 20


# --------------------------------------------------------------------------- findings


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


def capped(findings: list[Finding]) -> list[Finding]:
    if len(findings) <= MAX_LISTED:
        return findings
    rest = findings[MAX_LISTED:]
    summary = Finding(
        rest[0].severity,
        rest[0].pattern,
        f"… and {len(rest)} more problems of this kind",
        evidence={"more": len(rest)},
    )
    return [*findings[:MAX_LISTED], summary]
