"""Verdicts in a real browser: a sweep of the demo's two learning rates, submitted
with `farm submit`, its evals written into the database the way eval stages write
them (seed scores 0.7 / 0.5 / 0.4 against 0.2 / 0.4 / 0.5), then `farm web` in
headless Chromium: the sweep chart draws each value's interval as error bars and
says no knob moved adherence beyond seed noise, the leaderboard decides between
two rows, and lists the prompts the seeds disagree on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from jobs.db import Experiment, session_scope
from jobs.stats import mean_interval
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, LOAD_S, SHOTS, farm_web
from tests.support.spec_files import write_spec
from tests.support.verdicts import BETTER, WORSE, finish
from tools.cli import app

pytestmark = pytest.mark.browser


@pytest.fixture
def web_url(farm_home: Path, redis_url: str, tiny_model: Path, tmp_path: Path) -> Iterator[str]:
    sweep = {"train.learning_rate": [2e-4, 1e-3]}
    spec = write_spec(tmp_path / "s.yaml", tiny_model, name="lr", seeds=[1, 2, 3], sweep=sweep)
    result = CliRunner().invoke(app, ["submit", str(spec)])
    assert result.exit_code == 0, result.output
    with session_scope() as session:
        experiments = session.exec(select(Experiment).order_by(Experiment.id)).all()
        rates = {e.id: e.spec["train"]["learning_rate"] for e in experiments}
    for experiment_id, rate in rates.items():
        finish(experiment_id or 0, BETTER if rate == 2e-4 else WORSE)
    with farm_web(tmp_path) as url:
        yield url


def test_error_bars_verdicts_and_fragile_prompts_in_a_browser(web_url: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=LOAD_S)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2600})
        page.set_default_timeout(LOAD_S)
        try:
            page.goto(web_url)  # the leaderboard is the home page
            sweep = page.locator(".st-key-sweep_section")
            expect(
                sweep.get_by_text("no knob moved adherence beyond seed noise yet")
            ).to_be_visible()
            chart = sweep.locator('[data-testid="stVegaLiteChart"]')
            expect(chart).to_have_count(1)  # adherence vs learning_rate
            # Vega draws each error bar as a mark described for screen readers:
            # "errorbar learning_rate: 0.0002; …; low: 15.4%; high: 91.3%".
            bars = chart.locator('[aria-roledescription="errorbar"]')
            expect(bars).to_have_count(2)
            interval = mean_interval(list(BETTER.values()))
            described = bars.first.get_attribute("aria-label") or ""
            assert f"low: {100 * interval.low:.1f}%" in described, described
            assert f"high: {100 * interval.high:.1f}%" in described, described
            expect(chart.get_by_text("95% interval")).to_have_count(1)  # the chart's title

            decide = page.locator(".st-key-decide")
            expect(decide.get_by_text("no difference shown between")).to_be_visible()
            expect(decide.get_by_text("3 + 3 seeds").first).to_be_visible()
            fragile = page.locator(".st-key-seed_fragile_a")
            expect(fragile.get_by_text("Seed-fragile prompts")).to_be_visible()
            expect(fragile.get_by_text("3 prompts some seeds got right")).to_be_visible()
            expect(fragile.locator('[data-testid="stDataFrame"]')).to_have_count(1)
            expect(page.locator(".st-key-runner_up").get_by_text("seeds per configuration"))
            page.screenshot(path=str(SHOTS / "verdicts.png"), full_page=True)
        except BaseException:
            page.screenshot(path=str(SHOTS / "verdicts-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
