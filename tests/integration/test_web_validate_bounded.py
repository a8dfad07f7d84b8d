"""The web form's Validate on a big dataset runs in a child process: the UI server's
own threads keep running, the result is the one the server would have computed,
and a check that overruns FARM_VALIDATE_TIMEOUT_S is stopped with a line saying
so. (The size above which the form hands over is lowered so the demo data counts
as big.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.spec_files import write_spec
from web import form_bounds, forms


def form_values(tiny_model: Path, tmp_path: Path) -> dict[str, Any]:
    spec = write_spec(tmp_path / "spec.yaml", tiny_model)
    values, notes = forms.spec_dict_to_form(yaml.safe_load(spec.read_text()))
    assert notes == []
    return values


def test_a_big_dataset_is_validated_in_a_child_while_the_server_keeps_running(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = form_values(tiny_model, tmp_path)
    here = forms.check_form(values)
    assert here.ok, here.problems
    monkeypatch.setattr(form_bounds, "IN_PROCESS_BYTES", 1000)
    assert form_bounds.dataset_bytes(values) > 1000

    gaps: list[float] = []
    done = threading.Event()

    def server_thread() -> None:  # another session of the UI server
        last = time.monotonic()
        while not done.is_set():
            time.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=server_thread)
    ticker.start()
    try:
        started = time.monotonic()
        child = form_bounds.validate_form(values)
        took = time.monotonic() - started
    finally:
        done.set()
        ticker.join()
    assert child.ok, child.problems
    assert child.fingerprint == here.fingerprint
    assert [f.render() for f in child.findings] == [f.render() for f in here.findings]
    print(
        f"validated in a child in {took:.1f} s; longest pause of the server thread "
        f"{max(gaps):.2f} s"
    )
    assert max(gaps) < 0.5  # the check did not hold the server's interpreter


def test_a_validation_over_its_time_limit_is_stopped_with_a_line_saying_so(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = form_values(tiny_model, tmp_path)
    monkeypatch.setattr(form_bounds, "IN_PROCESS_BYTES", 1000)
    monkeypatch.setenv("FARM_VALIDATE_TIMEOUT_S", "0.2")
    started = time.monotonic()
    result = form_bounds.validate_form(values)
    assert time.monotonic() - started < 10
    assert not result.ok and result.spec is None
    [message] = result.messages(forms.GENERAL)
    size = form_bounds.dataset_bytes(values)
    assert message == (
        f"checking the spec and its {size}-byte dataset took longer than 0.2 s and was "
        "stopped — run `farm check spec.yaml` from a terminal, or raise FARM_VALIDATE_TIMEOUT_S"
    )
