"""The sign-in throttle's state in the database (web.signin.StoredThrottle): a
lock-out outlives the UI process that set it, several UI processes share the
counts without losing any, and an unreachable database still throttles."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import select

from jobs import db
from jobs.db import SigninState, session_scope
from web.signin import Policy, StoredThrottle

CLIENT = Policy(base_delay_s=0.0, max_delay_s=0.0, lock_after=3, lock_s=600, window_s=600)
EVERYONE = Policy(base_delay_s=0.0, max_delay_s=0.0, lock_after=None, window_s=600)


def test_a_lock_out_outlives_the_process_that_set_it(database: str) -> None:
    first = StoredThrottle(CLIENT, EVERYONE)  # one UI process…
    for _ in range(3):
        assert first.begin("10.0.0.9").allowed
        failure = first.failed("10.0.0.9")
    assert failure.locked_for_s > 590
    restarted = StoredThrottle(CLIENT, EVERYONE)  # …and the one after its restart
    verdict = restarted.begin("10.0.0.9")
    assert not verdict.allowed and verdict.locked_for_s > 590
    assert restarted.begin("10.0.0.10").allowed  # another address is not locked
    with session_scope() as session:
        row = session.exec(select(SigninState)).one()
        assert "10.0.0.9" in row.state["keys"] and row.version >= 5


def test_two_ui_processes_share_the_counts_without_losing_any(database: str) -> None:
    ui_a, ui_b = StoredThrottle(EVERYONE, EVERYONE), StoredThrottle(EVERYONE, EVERYONE)

    def guess(throttle: StoredThrottle, n: int) -> None:
        for i in range(n):
            throttle.failed(f"192.0.2.{i % 50}")

    threads = [threading.Thread(target=guess, args=(t, 15)) for t in (ui_a, ui_b, ui_a, ui_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert StoredThrottle(EVERYONE, EVERYONE).failed("192.0.2.200").all_failures == 61


def test_an_unreachable_database_still_throttles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    db.dispose_engines()
    throttle = StoredThrottle(CLIENT, EVERYONE)
    for _ in range(3):
        throttle.failed("10.0.0.7")
    assert not throttle.begin("10.0.0.7").allowed  # kept in this process meanwhile
    db.dispose_engines()
