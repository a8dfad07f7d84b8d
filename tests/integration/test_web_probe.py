"""What the adherence probe shows: the curve and the early stop on the run page
and in `farm status`, and the run page's diagnostics grouped by pattern."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from jobs.db import Diagnostic, Metric, Run, Stage, session_scope
from read.run_detail import diagnostic_groups
from tests.support.web import RUN, open_page, shown, texts
from tools.cli import app

REASON = "locked: adherence ≥ 0.90 on the probes at 4 and 8"
LOOPS = "mode_collapse"
LONG_FINDING = (
    "67% of the 431 training examples are tool calls (290 tool-call, 141 direct-answer), "
    "train\x1b]0;retitled\x07 and the rest answer in prose"
)


@pytest.fixture
def probed_run(finished_run: int) -> int:
    """The finished run, stopped early at 8 of 12 by the probe, with one pattern
    found in three variants and another in one."""
    with session_scope() as session:
        run = session.get(Run, finished_run)
        assert run is not None
        train = session.exec(
            select(Stage).where(Stage.run_id == run.id, Stage.kind == "train")
        ).one()
        train.early_stop, train.progress = REASON, 8
        session.add(train)
        for iteration, adherence in ((4, 0.9), (8, 1.0)):
            session.add(Metric(stage_id=train.id or 0, run_id=run.id or 0, iteration=iteration,
                               probe_adherence=adherence,
                               probe_labels={"execute_code": 7, "wrong_tool": 1}))  # fmt: skip
        for variant, severity in (("q8", "warning"), ("adapter", "error"), ("q4", "warning")):
            session.add(Diagnostic(experiment_id=run.experiment_id, run_id=run.id, scope="run",
                                   pattern=LOOPS, severity=severity,
                                   message=f"{variant}: 3 of 4 generations are repetition loops",
                                   evidence={"variant": variant}))  # fmt: skip
        session.add(Diagnostic(experiment_id=run.experiment_id, run_id=None, scope="preflight",
                               pattern="conflicting_formats", severity="warning",
                               message=LONG_FINDING))  # fmt: skip
        session.add(Diagnostic(experiment_id=run.experiment_id, run_id=run.id, scope="run",
                               pattern="runaway_generation", severity="warning",
                               message="q4: runaway", evidence={"variant": "q4"}))  # fmt: skip
        return run.id or 0


def test_run_page_shows_the_probe_curve_the_early_stop_and_one_card_per_pattern(
    probed_run: int,
) -> None:
    at = open_page(RUN, run=str(probed_run))
    page = texts(at)
    assert f"training stopped early after iteration 8 of 12 — {REASON}" in page
    # loss, adherence probe, tokens/s + memory, stage timeline
    assert len(at.get("vega_lite_chart")) == 4
    assert "Adherence probe" in page

    cards = [shown(e.value) for e in [*at.error, *at.warning] if LOOPS in shown(e.value)]
    assert len(cards) == 1  # not one per variant
    (card,) = cards
    assert card.startswith(f"**{LOOPS}** — in adapter, q8, q4")
    assert "adapter: 3 of 4 generations are repetition loops" in card
    assert [shown(e.value) for e in at.error] == [card]  # the worst severity of the group
    assert any(shown(e.label) == f"{LOOPS}: all 3 findings" for e in at.expander)
    assert any("runaway_generation" in shown(w.value) for w in at.warning)


def test_farm_status_shows_the_early_stop_on_the_train_line(probed_run: int) -> None:
    with session_scope() as session:
        run = session.get(Run, probed_run)
        assert run is not None
        experiment_id = run.experiment_id
    result = CliRunner().invoke(app, ["status", str(experiment_id)])
    assert result.exit_code == 0, result.output
    # The train stage's line by what it is: its first word is the stage kind and
    # its status follows (a wrapped diagnostic may start with "training …").
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"run {probed_run} "))
    end = next((i for i, line in enumerate(lines) if i > start and line.startswith("run ")), None)
    (train,) = [line for line in lines[start:end] if line.split()[:1] == ["train"]]
    # A finding longer than the terminal stays one line (rich wrapped it at 80
    # columns when output is not a terminal, as on a fresh clone's CI).
    (finding,) = [line for line in lines if "conflicting_formats" in line]
    assert finding.endswith("and the rest answer in prose")
    assert "\x1b" not in result.output and "\x07" not in result.output  # data is text
    assert "8/12" in train and train.endswith(f"· stopped early: {REASON}")
    as_json = CliRunner().invoke(app, ["status", str(experiment_id), "--json"])
    (run,) = [r for r in json.loads(as_json.output)["runs"] if r["id"] == probed_run]
    assert [s["early_stop"] for s in run["stages"] if s["kind"] == "train"] == [REASON]


def test_diagnostic_groups_keep_preflight_apart_and_the_worst_first() -> None:
    found = [
        {"pattern": "p", "severity": "info", "scope": "run", "message": "q4: a", "variant": "q4"},
        {"pattern": "p", "severity": "info", "scope": "run", "message": "q4: a", "variant": "q4"},
        {"pattern": "p", "severity": "warning", "scope": "preflight", "message": "b"},
        {"pattern": "e", "severity": "error", "scope": "config", "message": "c", "variant": None},
    ]
    groups = diagnostic_groups(found)
    assert [(g["pattern"], g["scope"], g["severity"]) for g in groups] == [
        ("e", "run", "error"),
        ("p", "preflight", "warning"),
        ("p", "run", "info"),
    ]
    assert groups[2]["variants"] == ["q4"] and groups[2]["messages"] == ["q4: a"]
    assert groups[0]["variants"] == []
