"""The order tests run in under `-n N --dist worksteal`: longest first, dealt out
evenly, so the run does not end with one worker finishing a 90-second test
while the others sit idle.

pytest-xdist's work stealing hands each worker one contiguous share of the
collection and lets an idle worker steal from the end of another's. So the
collection is sorted by measured duration (`tests/durations.json`, written by
`pytest --record-durations tests/durations.json`) and dealt round-robin into
one share per worker: every share starts with its long tests, and what is
stolen at the end is short. Tests of a module with a module-scoped fixture (a
model trained once for the module) stay together, so none trains it twice.
A test not in the file counts by its folder: e2e long, unit short.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).resolve().parents[1] / "durations.json"
GUESS_S = {"e2e": 30.0, "integration": 3.0, "unit": 0.05}
FILLER_S = 0.5  # shorter tests only fill the shares up


def known_durations(path: Path = DURATIONS) -> dict[str, float]:
    return json.loads(path.read_text()) if path.exists() else {}


def _guess(nodeid: str) -> float:
    parts = nodeid.split("/")
    return GUESS_S.get(parts[1] if len(parts) > 1 else "", 1.0)


def _group_key(item: pytest.Item) -> str:
    """Tests sharing a module- or class-scoped fixture run as one block."""
    info = getattr(item, "_fixtureinfo", None)
    for definitions in info.name2fixturedefs.values() if info else []:
        if any(d.scope in ("module", "class") for d in definitions):
            return item.nodeid.split("::")[0]
    return item.nodeid


def deal(items: list[pytest.Item], workers: int, durations: dict[str, float]) -> list[pytest.Item]:
    """`items` reordered so that the contiguous shares work stealing cuts (by
    count) take about equal time and start with their longest tests: blocks
    longest first, each to the share with the least time so far, then the
    short tests fill every share up to its count."""
    blocks: dict[str, list[pytest.Item]] = defaultdict(list)
    for item in items:
        blocks[_group_key(item)].append(item)

    def seconds(block: list[pytest.Item]) -> float:
        return sum(durations.get(i.nodeid, _guess(i.nodeid)) for i in block)

    ordered = sorted(blocks.values(), key=lambda b: (-seconds(b), b[0].nodeid))
    long = [b for b in ordered if seconds(b) >= FILLER_S or len(b) > 1]
    filler = [i for b in ordered if not (seconds(b) >= FILLER_S or len(b) > 1) for i in b]
    shares: list[list[pytest.Item]] = [[] for _ in range(workers)]
    load = [0.0] * workers
    for block in long:
        lightest = load.index(min(load))
        shares[lightest] += block
        load[lightest] += seconds(block)
    # The counts xdist sends: len // workers to the first, then of the rest.
    left, sizes = len(items), []
    for remaining in range(workers, 0, -1):
        sizes.append(left // remaining)
        left -= sizes[-1]
    for share, size in zip(shares, sizes, strict=True):
        take = max(0, size - len(share))
        share += filler[:take]
        del filler[:take]
    shares[-1] += filler
    return [item for share in shares for item in share]


def order_for_workers(items: list[pytest.Item]) -> None:
    """In place, when running under xdist (each worker sorts alike: the
    collections must match)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        items[:] = deal(items, workers, known_durations())


class DurationRecorder:
    """`--record-durations PATH`: each test's setup + call + teardown seconds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] += report.duration

    def pytest_sessionfinish(self) -> None:
        ordered = {k: round(v, 2) for k, v in sorted(self.seconds.items())}
        self.path.write_text(json.dumps(ordered, indent=0) + "\n")
