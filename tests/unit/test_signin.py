"""Sign-in throttling: growing delays and a lock-out per address; overall, delays only,
which an address that signed in recently skips (fake clock); trusted proxies."""

from __future__ import annotations

import logging

import pytest

from jobs import settings
from web.signin import (
    EVERYONE,
    REMEMBER_S,
    Policy,
    Throttle,
    duration,
    policies_from_env,
    sign_in,
)

RIGHT = "correct horse"


class FakeClock:
    """Time that moves only when the code under test sleeps or the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def throttle(clock: FakeClock, lock_after: int = 10) -> Throttle:
    client = Policy(lock_after=lock_after, lock_s=900, window_s=900)
    everyone = Policy(max_delay_s=30.0, lock_after=None, window_s=900)
    return Throttle(client, everyone, clock=clock)


def guess(t: Throttle, clock: FakeClock, password: str, client: str = "10.0.0.5"):  # type: ignore[no-untyped-def]
    return sign_in(password, RIGHT, client, t, sleep=clock.sleep)


def test_policy_delays_double_up_to_the_cap() -> None:
    policy = Policy(base_delay_s=1.0, max_delay_s=10.0)
    assert [policy.delay(n) for n in range(0, 7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_each_wrong_password_is_answered_later_than_the_one_before(clock: FakeClock) -> None:
    t = throttle(clock)
    for n in range(1, 6):
        outcome = guess(t, clock, "nope")
        assert not outcome.signed_in
        assert outcome.message == f"Wrong password (failed attempt {n} from here)."
    # The address's own delays stop at 10 s; the overall key's (it has not signed
    # in) go on to 30 s.
    assert clock.slept == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_ten_failures_lock_the_address_even_against_the_right_password(clock: FakeClock) -> None:
    t = throttle(clock)
    outcomes = [guess(t, clock, f"guess {n}") for n in range(10)]
    assert "locked for 15 min" in outcomes[-1].message
    assert len(clock.slept) == 9  # the locking answer comes at once
    refused = guess(t, clock, RIGHT)
    assert not refused.signed_in and "locked for 15 min" in refused.message
    clock.now += 14 * 60
    assert "locked for 1 min" in guess(t, clock, RIGHT).message
    clock.now += 61
    assert guess(t, clock, RIGHT).signed_in


def test_a_parallel_attempt_inside_the_delay_is_refused_unchecked(clock: FakeClock) -> None:
    """A second session does not get to guess while the first one's delay runs."""
    t = throttle(clock)
    assert t.begin("10.0.0.5").allowed
    t.failed("10.0.0.5")  # 1 s before the next attempt may be checked
    clock.now += 0.5
    outcome = guess(t, clock, RIGHT)
    assert not outcome.signed_in and outcome.message == "Too many attempts: try again in 1 s."
    clock.now += 0.5
    assert guess(t, clock, RIGHT).signed_in


def test_an_attempt_holds_its_slot_until_it_is_answered(clock: FakeClock) -> None:
    t = throttle(clock)
    assert t.begin("10.0.0.5").allowed
    second = t.begin("10.0.0.6")  # another address, same password: the overall key
    assert not second.allowed and second.wait_s == pytest.approx(1.0)


def test_failures_from_many_addresses_slow_everyone_down_but_never_lock(
    clock: FakeClock,
) -> None:
    t = throttle(clock, lock_after=2)  # 2 per address; overall only delays
    outcomes = [guess(t, clock, "nope", client=f"10.0.1.{n}") for n in range(12)]
    assert all(o.message.startswith("Wrong password") for o in outcomes)
    assert clock.slept == [1.0, 2.0, 4.0, 8.0, 16.0] + [30.0] * 7
    # A new address with the right password waits for the slot, then signs in.
    refused = guess(t, clock, "right-horse", client="10.0.9.9")
    assert "locked" not in refused.message
    clock.now += 30
    assert guess(t, clock, RIGHT, client="10.0.9.9").signed_in


def test_the_owner_signs_in_at_once_during_a_guessing_attack(clock: FakeClock) -> None:
    t = throttle(clock, lock_after=2)
    assert guess(t, clock, RIGHT, client="192.0.2.1").signed_in  # the owner, earlier
    for n in range(40):  # a guesser spread over 40 addresses
        guess(t, clock, "nope", client=f"198.51.100.{n}")
    assert t.begin("198.51.100.200").allowed  # the next guess holds the overall slot
    assert not t.begin("198.51.100.201").allowed  # and every other address waits
    owner = guess(t, clock, RIGHT, client="192.0.2.1")
    assert owner.signed_in, owner.message
    assert clock.slept[-1] == 30.0  # the last guess was still answered late


def test_an_address_is_remembered_for_a_while_only(clock: FakeClock) -> None:
    t = throttle(clock)
    assert guess(t, clock, RIGHT, client="192.0.2.1").signed_in
    assert t.begin("198.51.100.1").allowed  # a guess holds the overall slot
    assert t.begin("192.0.2.1").allowed  # remembered: the slot does not hold it back
    clock.now += REMEMBER_S + 1
    assert t.begin("198.51.100.2").allowed
    later = t.begin("192.0.2.1")
    assert not later.allowed and later.wait_s > 0 and later.locked_for_s == 0


def test_success_clears_the_address_and_it_skips_the_overall_count(clock: FakeClock) -> None:
    t = throttle(clock)
    for _ in range(3):
        guess(t, clock, "nope")
    assert guess(t, clock, RIGHT).signed_in
    guess(t, clock, "nope")
    # The address starts again at 1 failure and no longer counts overall: 1 s.
    assert clock.slept[-1] == 1.0
    assert t._keys["10.0.0.5"].failures == [clock.now - 1.0]
    assert len(t._keys[EVERYONE].failures) == 3


def test_failures_older_than_the_window_are_forgotten(clock: FakeClock) -> None:
    t = throttle(clock)
    for _ in range(9):
        guess(t, clock, "nope")
    clock.now += 901
    assert guess(t, clock, "nope").message == "Wrong password (failed attempt 1 from here)."
    assert clock.slept[-1] == 1.0


def test_every_failure_is_logged_with_the_address(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    t = throttle(clock, lock_after=3)
    with caplog.at_level(logging.INFO, logger="lorafarm.signin"):
        for _ in range(3):
            guess(t, clock, "nope", client="192.0.2.77")
        guess(t, clock, RIGHT, client="192.0.2.77")
    failed = [r.getMessage() for r in caplog.records if "sign-in failed" in r.getMessage()]
    assert len(failed) == 3 and all("192.0.2.77" in line for line in failed)
    assert any("refused from 192.0.2.77: locked" in r.getMessage() for r in caplog.records)
    assert not any(RIGHT in r.getMessage() or "nope" in r.getMessage() for r in caplog.records)


def test_policy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARM_SIGNIN_LOCK_AFTER", "4")
    monkeypatch.setenv("FARM_SIGNIN_LOCK_MINUTES", "2")
    client, everyone = policies_from_env()
    assert (client.lock_after, client.lock_s) == (4, 120.0)
    assert (everyone.lock_after, everyone.max_delay_s) == (None, 30.0)  # never locks
    monkeypatch.delenv("FARM_SIGNIN_LOCK_AFTER")
    monkeypatch.delenv("FARM_SIGNIN_LOCK_MINUTES")
    client, _ = policies_from_env()
    assert (client.lock_after, client.lock_s) == (10, 900.0)
    assert (client.base_delay_s, client.max_delay_s) == (1.0, 10.0)
    monkeypatch.setenv("FARM_SIGNIN_DELAY_S", "0.5")
    client, everyone = policies_from_env()
    assert (client.base_delay_s, client.max_delay_s) == (0.5, 5.0)
    assert (everyone.base_delay_s, everyone.max_delay_s) == (0.5, 15.0)


def test_durations_read_well() -> None:
    assert [duration(s) for s in (0.2, 1.0, 59.5, 60, 899.1)] == [
        "1 s",
        "1 s",
        "1 min",
        "1 min",
        "15 min",
    ]


def test_forwarded_headers_are_trusted_only_from_configured_proxies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FARM_TRUSTED_PROXIES", raising=False)
    assert settings.trusted_proxies() == ()
    assert settings.forwarded_allow_ips() == ""  # uvicorn then believes no one's header
    monkeypatch.setenv("FARM_TRUSTED_PROXIES", " 10.0.0.1, 10.0.0.2 fd00::1 ")
    assert settings.trusted_proxies() == ("10.0.0.1", "10.0.0.2", "fd00::1")
    assert settings.forwarded_allow_ips() == "10.0.0.1,10.0.0.2,fd00::1"
