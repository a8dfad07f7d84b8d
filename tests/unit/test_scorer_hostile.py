"""Hostile responses: the scorer stays linear and total, `farm score` refuses a bad
line with one message, and an eval stage survives whatever a model wrote."""

from __future__ import annotations

import gc
import json
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs import scorer
from jobs.checks import find_calls
from jobs.formats import (
    MAX_CODE_CHARS,
    MAX_RESPONSE_CHARS,
    fence_blocks,
    function_blocks,
    parameters,
    split_think,
    strip_fence,
    tool_call_blocks,
)
from jobs.scorer import LABEL_SCORES, Score, score_response
from tools.cli import SCORE_LINE_BYTES, app

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "data" / "evals" / "code_mode.yaml"
TYPECHECK_CODE = 'result = typecheck("src/app.py")\nprint(result.error_count)'


def xml_wrapper(code: str) -> str:
    return (
        "<tool_call>\n<function=execute_code>\n<parameter=code>\n"
        f"{code}\n</parameter>\n</function>\n</tool_call>"
    )


def numbered(template: str, n: int) -> str:
    """`template` n times, each copy numbered, so no shape is a plain repetition loop."""
    return "".join(template.replace("#", str(i)) for i in range(n))


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


# --------------------------------------------------------------------------- linear time

# Each shape hits one way a response used to make the scorer slow or crash.
SHAPES: dict[str, Callable[[int], str]] = {
    "unclosed think tags": lambda n: numbered("<think>w# ", n),
    "tool_call opens": lambda n: numbered("<tool_call>w# ", n),
    "function opens without '>'": lambda n: numbered("<function=w#", n),
    "parameter opens": lambda n: (
        "<tool_call><function=execute_code>" + numbered("<parameter=p#>v# ", n)
    ),
    "fences without a newline": lambda n: numbered("```w#", n),
    "fenced code with a long blank": lambda n: "<tool_call>```\nx" + " " * (8 * n) + "y",
    "identifier run": lambda n: " ".join(f"x{i}" for i in range(n)),
    "identifier run in the wrapper": lambda n: xml_wrapper(" ".join(f"x{i}" for i in range(n))),
    "nested brackets in the wrapper": lambda n: xml_wrapper(numbered("f#(", n)),
    "nested brackets bare": lambda n: numbered("[w#, ", n),
    "deep JSON bare": lambda n: numbered('{"k#": ', n),
    "deep JSON in a tool_call": lambda n: (
        '<tool_call>{"name": "execute_code", "arguments": ' + numbered("[#, ", n)
    ),
    "JSON objects that fail late": lambda n: numbered('{"k#": "v#" x\n', n),
    "f-string fields in the wrapper": lambda n: xml_wrapper('x = f"' + numbered("{a#}", n) + '"'),
    "huge response": lambda n: words(20 * n),
}


def timed(text: str) -> tuple[float, str]:
    gc.disable()
    try:
        # CPU time of this process: other tests running on the same cores
        # cannot make a size look slower than it is.
        start = time.process_time()
        label = score_response(text, "tool", "typecheck").label
        return time.process_time() - start, label
    finally:
        gc.enable()


def best_times(texts: list[str], repeats: int = 3) -> tuple[list[float], set[str]]:
    """Fastest of a few runs per text, the texts taken in turn so that a busy
    moment on the shared machine slows all sizes alike; and the labels given."""
    best = [float("inf")] * len(texts)
    labels: set[str] = set()
    for _ in range(repeats):
        for i, text in enumerate(texts):
            elapsed, label = timed(text)
            best[i] = min(best[i], elapsed)
            labels.add(label)
    return best, labels


@pytest.mark.parametrize("shape", SHAPES)
def test_pathological_responses_are_scored_in_linear_time(shape: str) -> None:
    make = SHAPES[shape]
    # Grow n until the fastest of three scorings takes long enough to time
    # (> 20 ms): one slow moment on a busy machine must not pick too small an n.
    n = 500
    while min(timed(make(n))[0] for _ in range(3)) < 0.02 and n < 2_000_000:
        n *= 2
    times, labels = best_times([make(n), make(2 * n), make(4 * n)])
    assert labels <= set(LABEL_SCORES), labels
    ratio = times[2] / times[0]
    assert ratio < 8, f"{shape}: n={n}: {[f'{t:.3f}s' for t in times]} (x{ratio:.1f} for 4n)"


# --------------------------------------------------------------------------- labels, never crashes


def label(response: str, fmt: str = "code_mode") -> str:
    return score_response(response, "tool", "typecheck", fmt=fmt).label


def test_code_the_parser_gives_up_on_is_invalid_code_in_the_wrapper() -> None:
    # ast.parse raises MemoryError on a long run of names, RecursionError on a
    # long operator chain, SyntaxError on 200 nested brackets.
    assert label(xml_wrapper(" ".join(f"x{i}" for i in range(3000)))) == "invalid_code"
    assert label(xml_wrapper("y = a" + numbered("+a#", 50_000))) == "invalid_code"
    assert label(xml_wrapper(numbered("f#(", 300))) == "invalid_code"


def test_the_same_code_outside_the_wrapper_is_no_call() -> None:
    assert label(" ".join(f"x{i}" for i in range(3000))) == "prose"
    assert label("y = a" + numbered("+a#", 50_000)) == "prose"


def test_code_longer_than_the_cap_does_not_parse() -> None:
    filler = "\n".join(f"x{i} = {i}" for i in range(MAX_CODE_CHARS // 8))
    assert len(filler) > MAX_CODE_CHARS
    assert label(xml_wrapper(f"{filler}\n{TYPECHECK_CODE}")) == "invalid_code"
    # The same code below the cap is the wrapper.
    assert label(xml_wrapper(f"{filler[: MAX_CODE_CHARS // 2]}\n{TYPECHECK_CODE}")) == (
        "execute_code"
    )


def test_deep_json_in_a_tool_call_is_unreadable() -> None:
    deep = '<tool_call>{"name": "typecheck", "arguments": ' + "[" * 5000 + "]" * 5000 + "}"
    assert label(deep) == "degenerate"  # the brackets are a loop before anything else
    deep = '<tool_call>{"name": "typecheck", "arguments": ' + numbered("[#, ", 2000)
    assert label(deep) == "invalid_code"
    assert label(deep, fmt="json_tools") == "invalid_call"


def test_a_valid_call_among_hostile_text_keeps_its_label() -> None:
    hostile = numbered('{"k#": ', 3000) + numbered("<function=w#", 3000)
    assert label(xml_wrapper(TYPECHECK_CODE) + "\n" + hostile) == "execute_code"
    call = '{"name": "typecheck", "arguments": {"path": "src"}}'
    assert label(numbered("{x#} ", 5000) + call) == "direct_call"


def test_a_response_beyond_the_cap_is_read_up_to_the_cap() -> None:
    big = xml_wrapper(TYPECHECK_CODE) + "\n" + words(3_000_000)
    assert len(big) > 10 * MAX_RESPONSE_CHARS
    start = time.perf_counter()
    assert label(big) == "execute_code"
    assert time.perf_counter() - start < 10
    assert label(words(MAX_RESPONSE_CHARS) + xml_wrapper(TYPECHECK_CODE)) == "prose"


def test_an_exhausted_interpreter_is_degenerate(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(*_: object) -> list:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(scorer, "body_calls", exhausted)
    assert score_response(xml_wrapper(TYPECHECK_CODE), "tool", "typecheck") == Score(
        "degenerate", 0.0
    )


def test_checks_find_calls_is_bounded_too() -> None:
    start = time.perf_counter()
    assert find_calls(numbered("<think>w# ", 20_000), ["typecheck"]) == []
    assert find_calls(" ".join(f"x{i}" for i in range(3000)), ["typecheck"]) == []
    assert [c.family for c in find_calls(xml_wrapper(TYPECHECK_CODE), ["typecheck"])] == [
        "xml_wrapper"
    ]
    assert time.perf_counter() - start < 5


# --------------------------------------------------------------------------- same segmenting

# The regular expressions the scorer segmented responses with before it scanned
# them linearly: on short texts, the scans must find exactly what these found.
REFERENCE_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|(?=<tool_call>)|\Z)", re.S)
REFERENCE_FUNCTION = re.compile(
    r"<function=([^>\s]+)>(.*?)(?:</function>|(?=<function=)|(?=</tool_call>)|\Z)", re.S
)
REFERENCE_PARAMETER = re.compile(
    r"<parameter=([^>\s]+)>(.*?)(?:</parameter>|(?=<parameter=)|(?=</function>)|\Z)", re.S
)
REFERENCE_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)
PIECES = [
    "<tool_call>",
    "</tool_call>",
    "<function=",
    "execute_code",
    ">",
    "</function>",
    "<parameter=",
    "code",
    "</parameter>",
    "<think>",
    "</think>",
    "```",
    "```python",
    "\n",
    " ",
    "x",
    "typecheck('a')",
    "\t",
]


def reference_split_think(text: str) -> tuple[str, str]:
    thoughts: list[str] = []
    close, open_ = text.find("</think>"), text.find("<think>")
    if close != -1 and (open_ == -1 or close < open_):
        thoughts.append(text[:close])
        text = text[close + len("</think>") :]

    def take(match: re.Match[str]) -> str:
        thoughts.append(match.group(1))
        return "\n"

    text = re.sub(r"<think>(.*?)</think>", take, text, flags=re.S)
    open_ = text.find("<think>")
    if open_ != -1:
        thoughts.append(text[open_ + len("<think>") :])
        text = text[:open_]
    return "\n".join(thoughts), text


def reference_strip_fence(text: str) -> str:
    match = re.fullmatch(r"```[^\n]*\n(.*?)(?:```)?\s*", text, flags=re.S)
    return match.group(1).strip() if match else text


def test_linear_segmenting_finds_what_the_regular_expressions_found() -> None:
    rnd = random.Random(7)
    for _ in range(3000):
        text = "".join(rnd.choice(PIECES) for _ in range(rnd.randrange(1, 14)))
        assert [(b.start, b.end, b.content) for b in tool_call_blocks(text)] == [
            (m.start(), m.end(), m[1]) for m in REFERENCE_TOOL_CALL.finditer(text)
        ], text
        assert [(b.start, b.end, b.name, b.content) for b in function_blocks(text)] == [
            (m.start(), m.end(), m[1], m[2]) for m in REFERENCE_FUNCTION.finditer(text)
        ], text
        assert parameters(text) == {
            m[1]: m[2].removeprefix("\n").removesuffix("\n")
            for m in REFERENCE_PARAMETER.finditer(text)
        }, text
        assert [(b.start, b.end, b.content) for b in fence_blocks(text)] == [
            (m.start(), m.end(), m[1]) for m in REFERENCE_FENCE.finditer(text)
        ], text
        assert split_think(text) == reference_split_think(text), text
        assert strip_fence(text.strip()) == reference_strip_fence(text.strip()), text


def reference_has_token_loop(tokens: list[str]) -> bool:
    """The plain scan the loop detector replaced: every period over every pair."""
    ids: dict[str, int] = {}
    seq = [ids.setdefault(t, len(ids)) for t in tokens]
    for p in range(1, min(256, len(seq) // 4) + 1):
        need = (max(4, -(-32 // p)) - 1) * p
        run = 0
        for a, b in zip(seq, seq[p:], strict=False):
            run = run + 1 if a == b else 0
            if run >= need:
                return True
    return False


def test_anchored_loop_detection_finds_what_the_plain_scan_found() -> None:
    rnd = random.Random(11)
    loops = 0
    for _ in range(3000):
        unit = [str(rnd.randrange(20)) for _ in range(rnd.randrange(1, 30))]
        tokens = [str(rnd.randrange(20)) for _ in range(rnd.randrange(0, 40))]
        tokens += unit * rnd.randrange(1, 12) + [str(rnd.randrange(3)) for _ in range(60)]
        for _ in range(rnd.randrange(0, 3)):
            tokens[rnd.randrange(len(tokens))] = "x"
        expected = reference_has_token_loop(tokens)
        loops += expected
        assert scorer._has_token_loop(tokens) == expected, tokens
    assert 300 < loops < 2700  # both answers were exercised


# --------------------------------------------------------------------------- farm score


def record(rid: str, response: str) -> bytes:
    line = {"id": rid, "expect": "tool", "tool": "typecheck", "response": response}
    return json.dumps(line).encode() + b"\n"


BAD_LINES = {
    "invalid UTF-8": (b'{"id": "u", "response": "\xff\xfe"}\n', "not valid UTF-8"),
    "deep JSON": (b"[" * 100_000 + b"]" * 100_000 + b"\n", "JSON nested too deeply"),
    "not an object": (b"[1, 2]\n", "record must be a JSON object, got list"),
    "not JSON": (b"{id: 1\n", "not valid JSON"),
    "deep tool value": (
        b'{"id": 1, "expect": "tool", "tool": ' + b"[" * 900 + b"]" * 900 + b', "response": ""}\n',
        "tool must be a tool name or a list of tool names",
    ),
}


@pytest.mark.parametrize("case", BAD_LINES)
def test_farm_score_refuses_a_bad_line_with_file_and_line(tmp_path: Path, case: str) -> None:
    bad, message = BAD_LINES[case]
    path = tmp_path / "responses.jsonl"
    path.write_bytes(record("ok", xml_wrapper(TYPECHECK_CODE)) + b"\n" + bad)
    result = CliRunner().invoke(app, ["score", str(path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}:3: ") and message in lines[0], lines[0]
    assert len(lines[0]) < 300
    assert "Traceback" not in result.output


def test_farm_score_refuses_a_line_over_the_limit_without_reading_it_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "responses.jsonl"
    huge = record("big", "w " * (SCORE_LINE_BYTES // 2 + 10))
    path.write_bytes(huge + record("ok", xml_wrapper(TYPECHECK_CODE)))
    result = CliRunner().invoke(app, ["score", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{path}:1: line longer than 8 MB, the limit per response"
    ]


def test_farm_score_scores_hostile_responses(tmp_path: Path) -> None:
    path = tmp_path / "responses.jsonl"
    path.write_bytes(
        record("think", numbered("<think>w# ", 20_000))
        + record("names", xml_wrapper(" ".join(f"x{i}" for i in range(3000))))
        + record("json", numbered('{"k#": ', 20_000))
    )
    result = CliRunner().invoke(app, ["score", str(path)])
    assert result.exit_code == 0, result.output
    labels = {r["id"]: r["label"] for r in map(json.loads, result.stdout.splitlines())}
    assert labels == {"think": "think", "names": "invalid_code", "json": "prose"}


def test_farm_score_process_prints_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "responses.jsonl"
    path.write_bytes(b"".join(bad for bad, _ in BAD_LINES.values()))
    farm = Path(sys.executable).parent / "farm"
    done = subprocess.run(
        [str(farm), "score", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert [line.split(": ")[0] for line in done.stderr.splitlines()] == [
        f"{path}:{i}" for i in range(1, len(BAD_LINES) + 1)
    ]


# --------------------------------------------------------------------------- eval stage


def test_eval_scores_a_hostile_response_instead_of_failing() -> None:
    from jobs.suite import load_suite
    from worker.stages.eval import Generated, score_generated

    suite = load_suite(SUITE)
    prompt = next(p for p in suite.prompts if p.expect == "tool")
    for text in (
        xml_wrapper(" ".join(f"x{i}" for i in range(3000))),
        numbered("<think>w# ", 20_000),
        "[" * 100_000,
        numbered('{"k#": ', 20_000),
    ):
        score = score_generated(Generated(prompt, text, 100, False), suite)
        assert score.label in LABEL_SCORES


def test_eval_scores_a_response_the_scorer_fails_on_as_degenerate(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import worker.stages.eval
    from jobs.suite import load_suite

    def broken(*_: object, **__: object) -> Score:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(worker.stages.eval, "score_response", broken)
    suite = load_suite(SUITE)
    prompt = suite.prompts[0]
    item = worker.stages.eval.Generated(prompt, "anything", 3, False)
    assert worker.stages.eval.score_generated(item, suite) == Score("degenerate", 0.0)
    [record] = [r for r in caplog.records if r.name == "worker.stages.eval"]
    assert record.levelname == "WARNING"
    assert f"prompt {prompt.id}: scoring failed (RecursionError" in record.getMessage()
