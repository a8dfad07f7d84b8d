"""Suite checks: prompts, tool API, stop strings and format are consistent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from jobs.checks.findings import (
    MISLEADING_VAL_LOSS,
    PROSE_DRIFT,
    SUITE_CONSISTENCY,
    Finding,
)
from jobs.formats import WRAPPER
from jobs.suite import EvalSuite

# --------------------------------------------------------------------------- suite checks

# Stop strings that would cut the call the format asks for before it is written.
_FORMAT_MARKERS: dict[str, tuple[str, ...]] = {
    "code_mode": ("<tool_call>", "<function=", "<parameter=", WRAPPER),
    "json_tools": ("<tool_call>", '{"name"'),
}


def check_suite(
    suite: EvalSuite,
    suite_file: str = "",
    line_of: Callable[[tuple[str | int, ...]], int | None] = lambda _loc: None,
    checkpoint_prompts: Sequence[str] | None = None,
) -> list[Finding]:
    """Prompts, tool API and format are consistent; every expected tool exists."""
    findings: list[Finding] = []
    names = set(suite.tool_names)
    for i, prompt in enumerate(suite.prompts):
        for tool in prompt.expected_tools:
            if tool not in names:
                findings.append(
                    Finding(
                        "error",
                        SUITE_CONSISTENCY,
                        f"prompt {prompt.id} expects tool {tool!r}, which is not in the "
                        "suite's tool API — it can never score 1.0",
                        "fix the prompt's tool or add the tool to tools",
                        suite_file,
                        line_of(("prompts", i)),
                        evidence={"prompt": prompt.id, "tool": tool},
                    )
                )
    for i, stop in enumerate(suite.generation.stop):
        if any(stop in marker or marker in stop for marker in _FORMAT_MARKERS[suite.format]):
            findings.append(
                Finding(
                    "error",
                    SUITE_CONSISTENCY,
                    f"stop string {stop!r} occurs in every {suite.format} call, so generation "
                    "would stop before the call is written",
                    "remove it from generation.stop",
                    suite_file,
                    line_of(("generation", "stop", i)),
                    evidence={"stop": stop},
                )
            )
    if suite.format == "code_mode" and WRAPPER in names:
        index = suite.tool_names.index(WRAPPER)
        findings.append(
            Finding(
                "error",
                SUITE_CONSISTENCY,
                "execute_code is the Code-Mode wrapper, not a tool of the runtime API",
                "remove it from tools",
                suite_file,
                line_of(("tools", index)),
            )
        )
    if suite.format == "code_mode" and WRAPPER not in suite.system_prompt:
        findings.append(
            Finding(
                "warning",
                PROSE_DRIFT,
                "the system prompt does not mention execute_code — without tool instructions "
                "earlier runs' 7B model answered every tool prompt in prose",
                "tell the model in the system prompt to write Python in the execute_code tool",
                suite_file,
                line_of(("system_prompt",)),
            )
        )
    kinds = Counter(p.expect for p in suite.prompts)
    if not kinds.get("tool"):
        findings.append(
            Finding(
                "warning",
                SUITE_CONSISTENCY,
                "the suite has no `expect: tool` prompts, so format adherence is not measured",
                "add tool prompts",
                suite_file,
                line_of(("prompts",)),
            )
        )
    if checkpoint_prompts:
        chosen = [p for p in suite.prompts if p.id in set(checkpoint_prompts)]
        if chosen and not any(p.expect == "tool" for p in chosen):
            findings.append(
                Finding(
                    "warning",
                    MISLEADING_VAL_LOSS,
                    "eval.checkpoint_prompts has no tool prompt, so the checkpoint adherence "
                    "curve cannot show whether the format was learned",
                    "include tool prompts in eval.checkpoint_prompts",
                    evidence={"checkpoint_prompts": list(checkpoint_prompts)},
                )
            )
    return findings
