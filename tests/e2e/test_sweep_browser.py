"""The sweep view in a real browser: a 2×2 sweep submitted with `farm submit`, its
adapter evals written into the database as the worker stages write their summaries
(no training), then `farm web` opened in headless Chromium (Debian's package via
Playwright's Python API, as tests/e2e/test_browser.py): the Leaderboard page shows
the sweep's line, a chart per knob and the grid table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from jobs.db import Experiment, Run, Stage, session_scope
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, LOAD_S, SHOTS, farm_web
from tests.support.spec_files import write_spec
from tools.cli import app

pytestmark = pytest.mark.browser

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GRID = {"train.learning_rate": [1e-4, 2e-4], "train.lora.rank": [4, 8]}


@pytest.fixture
def scored_sweep(farm_home: Path, redis_url: str, tiny_model: Path, tmp_path: Path) -> int:
    spec = write_spec(tmp_path / "s.yaml", tiny_model, name="lr-rank", seeds=[1, 2, 3], sweep=GRID)
    result = CliRunner().invoke(app, ["submit", str(spec)])
    assert result.exit_code == 0, result.output
    adherence = {1e-4: 0.2, 2e-4: 0.55}
    with session_scope() as session:
        rows = session.exec(
            select(Stage, Run, Experiment)
            .join(Run, Run.id == Stage.run_id)
            .join(Experiment, Experiment.id == Run.experiment_id)
            .where(Stage.kind == "eval", Stage.variant == "adapter")
        ).all()
        for stage, run, experiment in rows:
            stage.status = "done"
            stage.adherence = adherence[experiment.spec["train"]["learning_rate"]] + 0.01 * run.seed
            stage.label_counts = {"execute_code": 3, "prose": 1}
            stage.n_prompts = 4
            session.add(stage)
        return experiment.sweep_id or 0


@pytest.fixture
def web_url(scored_sweep: int, tmp_path: Path) -> Iterator[str]:
    with farm_web(tmp_path) as url:
        yield url


def test_the_sweep_view_renders_in_a_browser(web_url: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=LOAD_S)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        page.set_default_timeout(LOAD_S)
        try:
            page.goto(web_url)  # the leaderboard is the home page
            expect(page.get_by_role("heading", name="Sweeps")).to_be_visible()
            expect(
                page.get_by_text("learning_rate moved adherence most: 0.22 → 0.57")
            ).to_be_visible()
            section = page.locator(".st-key-sweep_section")
            charts = section.locator('[data-testid="stVegaLiteChart"]')
            expect(charts).to_have_count(2)  # adherence vs learning_rate, vs rank
            expect(section.locator('[data-testid="stDataFrame"]')).to_have_count(1)
            page.wait_for_timeout(1500)  # let the charts paint
            page.screenshot(path=str(SHOTS / "sweep-view.png"), full_page=True)
        except BaseException:
            page.screenshot(path=str(SHOTS / "sweep-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
