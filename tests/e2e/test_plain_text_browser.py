"""Text from data stays text in a real browser: a run whose suite prompt id and
prompt, whose dataset-quoting finding and whose experiment name carry markdown
images and links to an outside address is opened in headless Chromium. No image
or link to that address is made, the browser asks it for nothing, and the
markdown shows as typed. In the CLI the same text loses its control characters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from jobs.db import Diagnostic, EvalResult, Experiment, Run, Stage, session_scope
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, LOAD_S, SHOTS, farm_web
from tests.support.verdicts import finish, submit
from tests.support.web import install_model
from tools.cli import app

pytestmark = pytest.mark.browser

EVIL = "evil.invalid"
IMAGE = f"![pixel](http://{EVIL}/pixel.png)"
LINK = f"[click](http://{EVIL}/login)"


@pytest.fixture
def hostile_run(farm_home: Path, redis_url: str, tiny_model: Path) -> int:
    model = install_model(farm_home, tiny_model)
    experiment_id = submit(model, redis_url, "hostile", 2e-4, "1")
    finish(experiment_id, {1: 0.5})
    with session_scope() as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None
        experiment.name = f"name {IMAGE}"
        session.add(experiment)
        run = session.exec(select(Run).where(Run.experiment_id == experiment_id)).one()
        stage = session.exec(
            select(Stage).where(Stage.run_id == run.id, Stage.kind == "eval")
        ).first()
        assert stage is not None
        for result in session.exec(select(EvalResult).where(EvalResult.stage_id == stage.id)):
            result.prompt_id = f"id {IMAGE}"
            result.prompt = f"prompt {LINK} <img src='http://{EVIL}/tag.png'>"
            session.add(result)
        message = f"system prompt says {IMAGE} and {LINK}\x1b]0;x\x07"
        session.add(Diagnostic(experiment_id=experiment_id, run_id=run.id, scope="run",
                               pattern="prose_drift", severity="warning",
                               message=message))  # fmt: skip
        return run.id or 0


@pytest.fixture
def web_url(hostile_run: int, tmp_path: Path) -> Iterator[str]:
    with farm_web(tmp_path) as url:
        yield url


def test_markdown_from_data_is_shown_as_text(web_url: str, hostile_run: int) -> None:
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=LOAD_S)
    asked: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.on("request", lambda request: asked.append(request.url))
        page.set_default_timeout(LOAD_S)
        try:
            page.goto(f"{web_url}/run?run={hostile_run}")
            expect(page.get_by_text("system prompt says").first).to_be_visible()
            # shown as typed (a word joiner, invisible, follows each scheme)
            expect(page.get_by_text("name ![pixel](http").first).to_be_visible()
            for expander in page.locator('[data-testid="stExpander"] summary').all():
                expander.click()
            page.wait_for_timeout(1500)
            assert page.locator(f'img[src*="{EVIL}"]').count() == 0
            assert page.locator(f'a[href*="{EVIL}"]').count() == 0
            page.screenshot(path=str(SHOTS / "plain-text.png"), full_page=True)
        except BaseException:
            page.screenshot(path=str(SHOTS / "plain-text-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert not [url for url in asked if EVIL in url]


def test_control_characters_from_data_never_reach_the_terminal(hostile_run: int) -> None:
    with session_scope() as session:
        run = session.get(Run, hostile_run)
        assert run is not None
        experiment_id = run.experiment_id
    result = CliRunner().invoke(app, ["status", str(experiment_id)])
    assert result.exit_code == 0, result.output
    assert "system prompt says" in result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
