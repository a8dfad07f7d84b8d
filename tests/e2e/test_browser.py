"""End to end in a real browser: `uv run farm up --demo` on loopback, driven by headless
Chromium (Debian's package, through Playwright's Python API — never a browser download).

The test cancels the demo from the runs page (one worker, and the demo would keep it
busy for minutes), submits a small experiment through the form, watches its training
progress bar move, opens the run, exports its adapter and downloads the zip
and the model card, sees the run ranked on the leaderboard, and stops
the farm with Ctrl-C. Screenshots of every page go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support import PROJECT_ROOT
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, LOAD_S, SHOTS, healthy
from tests.support.processes import wait_until
from tools.local.services import free_port

pytestmark = pytest.mark.browser

ITERS = 80  # ~8 s of training here: the runs page (refreshed every 2 s) sees the bar move


@dataclass
class Farm:
    url: str
    home: Path
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.home / "farm.db", timeout=30) as conn:
            return list(conn.execute(sql, args))

    def stage_statuses(self, experiment_id: int) -> dict[str, str]:
        rows = self.query(
            "SELECT stage.kind || ':' || stage.variant, stage.status FROM stage "
            "JOIN run ON run.id = stage.run_id WHERE run.experiment_id = ?",
            experiment_id,
        )
        return {str(k): str(v) for k, v in rows}


def _default_sigint() -> None:
    """Ctrl-C must reach `farm up` even when pytest itself runs in the background
    (a non-interactive shell starts background jobs with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium chromium-driver")
    home = tmp_path / "farm"
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL", "FARM_UI_PASSWORD", "FARM_SHARED_ARTIFACTS")
    }
    env["FARM_HOME"] = str(home)
    log = tmp_path / "farm-up.log"
    process = subprocess.Popen(
        ["uv", "run", "farm", "up", "--demo", "--workers", "1", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, as in a terminal
        preexec_fn=_default_sigint,
    )
    farm = Farm(f"http://127.0.0.1:{port}", home, process, log)
    try:
        wait_until(
            lambda: process.poll() is not None or (healthy(farm.url) and b"submitted" in
                                                   log.read_bytes()),
            timeout=180, what="farm up --demo to serve the UI and submit the demo",
        )  # fmt: skip
        assert process.poll() is None, log.read_text(errors="replace")
        yield farm
    finally:
        started = psutil.Process(process.pid).children(recursive=True)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        _, alive = psutil.wait_procs(started, timeout=15)
        left = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        for p in left:
            p.kill()
        assert not left, f"Ctrl-C left processes behind: {[p.cmdline() for p in left]}"


def test_submit_watch_and_rank_in_a_browser(farm: Farm) -> None:
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=LOAD_S)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(LOAD_S)

        try:
            walk_through(farm, page, expect)
        except BaseException:
            page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()


# The demo's sweep is experiments 1 and 2 (one per learning rate); ours comes next.
DEMO_EXPERIMENTS = (1, 2)
OURS = 3


def walk_through(farm: Farm, page: Any, expect: Any) -> None:
    def shot(name: str) -> None:
        page.wait_for_timeout(600)  # let charts and tables paint
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    # The leaderboard is the home page; nothing is ranked yet.
    page.goto(farm.url)
    expect(page.get_by_text("No finished evals yet")).to_be_visible()
    shot("01-leaderboard-empty")

    # The demo (a sweep: one experiment per learning rate) runs on the only
    # worker: cancel both of its experiments from the runs page (each its own button).
    page.goto(f"{farm.url}/runs")
    finished = {"cancelled", "skipped", "done"}

    def cancelled(experiment_id: int) -> bool:
        """Click the experiment's Cancel all until the DB says it is cancelled (a
        click can land on a button the refreshing page is replacing)."""
        if set(farm.stage_statuses(experiment_id).values()) <= finished:
            return True
        button = page.locator(f".st-key-cancel_exp_{experiment_id} button")
        if button.count():
            try:
                button.first.click(timeout=5_000)
            except Exception:  # re-rendered under the click: the next poll clicks again
                pass
        return False

    for experiment_id in DEMO_EXPERIMENTS[::-1]:
        wait_until(
            lambda e=experiment_id: cancelled(e),
            timeout=120, interval=2.0, what=f"demo experiment {experiment_id} to be cancelled",
        )  # fmt: skip
    shot("02-runs-demo-cancelled")

    # The form: a problem shows under its field, then a valid submission.
    page.goto(f"{farm.url}/submit")
    seeds = page.get_by_label("Seeds", exact=True)
    seeds.fill("3-1")
    page.get_by_role("button", name="Validate").click()
    expect(page.get_by_text("range '3-1' runs backwards — write 1-3")).to_be_visible()
    shot("03-submit-problem-under-its-field")

    values = {"Name": "browser-e2e", "Seeds": "7", "Iterations": str(ITERS),
              "Batch size": "1", "Layers to adapt": "-1", "Max sequence length": "256",
              "Steps per report": "1", "Steps per validation": "100",
              "Validation batches": "1", "Save every": "1000", "Max tokens": "12"}  # fmt: skip
    for label, value in values.items():
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")
    page.get_by_text("Fuse the adapter", exact=True).click()
    for variant in ("q8", "q4", "fused", "quantized"):
        page.get_by_role("button", name=f"Remove {variant}").first.click()
    page.get_by_role("button", name="Validate").click()
    expect(page.get_by_text(re.compile(r"Valid: 1 runs × 2 stages"))).to_be_visible()
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text(re.compile(rf"Submitted experiment {OURS}: 1 runs"))).to_be_visible()
    shot("04-submit-done")
    (spec,) = farm.query("SELECT spec_yaml FROM experiment WHERE id = ?", OURS)
    assert f"iters: {ITERS}" in str(spec[0]) and "fuse: null" in str(spec[0])

    # The runs page refreshes itself: the training bar moves without a reload.
    page.goto(f"{farm.url}/runs")
    seen: list[int] = []

    def progress() -> bool:
        for text in page.locator('[data-testid="stProgress"]').all_inner_texts():
            match = re.search(rf"train (\d+)/{ITERS} · train loss", text)
            if match:
                if not seen or int(match.group(1)) != seen[-1]:
                    seen.append(int(match.group(1)))
                if len(seen) == 1:
                    shot("05-runs-training")
        return len(seen) >= 2

    wait_until(progress, timeout=240, interval=0.5, what="the training bar to move")
    assert seen == sorted(seen) and seen[-1] > seen[0], seen

    # The run's page: loss curves, stages, artifacts, eval rows.
    (run_id,) = farm.query("SELECT id FROM run WHERE experiment_id = ?", OURS)[0]
    wait_until(
        lambda: farm.stage_statuses(OURS).get("eval:adapter") in ("done", "failed"),
        timeout=300, what="the adapter eval to finish",
    )  # fmt: skip
    assert farm.stage_statuses(OURS) == {"train:adapter": "done", "eval:adapter": "done"}
    page.goto(f"{farm.url}/run?run={run_id}")
    expect(page.get_by_text("browser-e2e · seed 7")).to_be_visible()
    expect(page.get_by_text(re.compile(r"\d+ responses match"))).to_be_visible()
    # Loss curve, tokens/s and memory, stage timeline.
    expect(page.locator('[data-testid="stVegaLiteChart"]').nth(2)).to_be_visible()
    shot("06-run-detail")

    # Export the adapter: the worker holding it zips it with its model card and
    # sends the zip through the database; the page offers it for download.
    page.get_by_role("button", name="Export", exact=True).click()
    download = page.get_by_role("button", name=f"Download run-{run_id}-adapter.zip")
    expect(download).to_be_visible()
    shot("07-run-exported")
    with page.expect_download() as got:
        download.click()
    recorded = dict(
        farm.query(
            "SELECT kind, file_sha256 FROM artifact WHERE run_id = ? AND kind = 'adapter'", run_id
        )
    )
    weights_sha = json.loads(str(recorded["adapter"]))["adapters.safetensors"]  # fmt: skip
    with zipfile.ZipFile(got.value.path()) as archive:
        assert {"adapters.safetensors", "adapter_config.json", "README.md"} <= set(
            archive.namelist()
        )
        weights = archive.read("adapters.safetensors")
        card = archive.read("README.md").decode()
    assert hashlib.sha256(weights).hexdigest() == weights_sha
    assert card.startswith("---\n") and "browser-e2e" in card
    with page.expect_download() as got:
        page.get_by_role("button", name="Model card").click()
    assert Path(got.value.path()).read_text().startswith("---\n")
    (trainer,) = farm.query("SELECT worker FROM stage WHERE run_id = ? AND kind = 'train'", run_id)
    assert farm.query(
        "SELECT status, worker FROM stage WHERE run_id = ? AND kind = 'export'", run_id
    ) == [("done", trainer[0])]
    (status,) = farm.query("SELECT status FROM run WHERE id = ?", run_id)[0]
    assert status == "done"

    # Ranked on the leaderboard.
    page.goto(farm.url)
    cells = page.locator('[data-testid="stDataFrame"] td')
    expect(cells.filter(has_text="browser-e2e")).to_have_count(1)
    expect(page.get_by_text("Rows 1–1 of 1")).to_be_visible()
    shot("08-leaderboard")

    page.goto(f"{farm.url}/workers")
    expect(page.locator('[data-testid="stDataFrame"] td').filter(has_text="idle")).to_have_count(1)
    shot("09-workers")
