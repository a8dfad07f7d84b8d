"""Headless Chromium for the browser tests: where it is, how it starts, where
screenshots go, and whether a Streamlit server answers."""

from __future__ import annotations

import urllib.request

from tests.support import PROJECT_ROOT

SHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LOAD_S = 120_000  # ms: Streamlit's first page load on a slow 2-core machine


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.read().strip() == b"ok"
    except OSError:
        return False
