"""Sign-in throttling for the web UI: growing delays, then a lock-out per address.

The UI has a single password, so there is no account name to count failures
against. Failures count against the client's address (growing delays, then a
lock-out of that address), and failures from addresses that have not signed in
recently also count against the sign-in itself (one key for every address), so
a guesser who spreads over many addresses is slowed down too. That overall key
only delays, it never locks: a lock shared by everyone would let a guesser shut
the owner out, and an address that signed in successfully within REMEMBER_S
skips it altogether, so the owner signs in at once during an attack.

The address is the socket's peer; `X-Forwarded-For` counts only from a proxy
named in FARM_TRUSTED_PROXIES (`jobs.settings.forwarded_allow_ips`, handed to
the server), so a client cannot pose as many by forging the header. The state
lives in the farm's database (`StoredThrottle`), not in Streamlit's caches,
which any websocket client can clear: a restart keeps a lock-out, and several
UI processes share the counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, update

from jobs import settings
from jobs.access import check_password
from jobs.db import SigninState, session_scope

log = logging.getLogger("lorafarm.signin")

EVERYONE = "*"  # the key failures from addresses not recently signed in also count against
MAX_TRACKED = 10_000  # addresses kept in memory; idle ones are dropped beyond this
CLIENT_MAX_DELAYS = 10  # one address's longest delay, in first-failure delays
EVERYONE_MAX_DELAYS = 30  # the overall key's longest delay between attempts, likewise
REMEMBER_S = 30 * 24 * 3600.0  # an address that signed in this recently skips the overall key


@dataclass(frozen=True)
class Policy:
    """How one key is throttled: failure n waits `delay(n)`; `lock_after` failures
    within `window_s` lock the key for `lock_s` (None: it never locks, only delays)."""

    base_delay_s: float = 1.0
    max_delay_s: float = 10.0
    lock_after: int | None = 10
    lock_s: float = 15 * 60
    window_s: float = 15 * 60

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(self.base_delay_s * 2 ** (failures - 1), self.max_delay_s)


@dataclass
class _KeyState:
    failures: list[float] = field(default_factory=list)  # times of recent failures
    not_before: float = 0.0  # no attempt is checked before this time
    locked_until: float = 0.0

    def idle(self, now: float) -> bool:
        return not self.failures and self.not_before <= now and self.locked_until <= now


@dataclass(frozen=True)
class Verdict:
    """Whether an attempt may be checked now; if not, why and for how long."""

    allowed: bool
    locked_for_s: float = 0.0
    wait_s: float = 0.0


@dataclass(frozen=True)
class Failure:
    """A recorded failure: how long to hold the answer back, and whether it locked."""

    client_failures: int
    all_failures: int
    delay_s: float
    locked_for_s: float


class Throttle:
    """Per-key failure counts, delays and lock-outs, safe across Streamlit's threads."""

    def __init__(
        self,
        client_policy: Policy,
        everyone_policy: Policy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_policy = client_policy
        self.everyone_policy = everyone_policy
        self.clock = clock
        self._keys: dict[str, _KeyState] = {}
        self._signed_in: dict[str, float] = {}  # address → time of its last sign-in
        self._lock = threading.Lock()

    def _policy(self, key: str) -> Policy:
        return self.everyone_policy if key == EVERYONE else self.client_policy

    def _state(self, key: str, now: float) -> _KeyState:
        state = self._keys.setdefault(key, _KeyState())
        window = self._policy(key).window_s
        state.failures = [t for t in state.failures if now - t < window]
        return state

    def _keys_of(self, client: str, now: float) -> tuple[str, ...]:
        """The keys an attempt from `client` counts against: its own, and the overall
        one unless it signed in within REMEMBER_S."""
        last = self._signed_in.get(client)
        return (client,) if last is not None and now - last < REMEMBER_S else (client, EVERYONE)

    def begin(self, client: str) -> Verdict:
        """May `client` have a password checked now? If so, the attempt holds its
        slot: a parallel attempt is refused until this one's delay has passed,
        so opening many sessions does not multiply the guessing rate."""
        with self._lock:
            now = self.clock()
            states = {key: self._state(key, now) for key in self._keys_of(client, now)}
            locked = max(s.locked_until - now for s in states.values())
            if locked > 0:
                return Verdict(False, locked_for_s=locked)
            wait = max(s.not_before - now for s in states.values())
            if wait > 0:
                return Verdict(False, wait_s=wait)
            for key, state in states.items():
                state.not_before = now + self._policy(key).delay(len(state.failures) + 1)
            return Verdict(True)

    def failed(self, client: str) -> Failure:
        """Count a wrong password; returns how long to hold the answer back."""
        with self._lock:
            now = self.clock()
            states = {key: self._state(key, now) for key in self._keys_of(client, now)}
            counts = {}
            delay = locked = 0.0
            for key, state in states.items():
                policy = self._policy(key)
                state.failures.append(now)
                counts[key] = len(state.failures)
                state.not_before = now + policy.delay(counts[key])
                delay = max(delay, policy.delay(counts[key]))
                if policy.lock_after is not None and counts[key] >= policy.lock_after:
                    state.locked_until = now + policy.lock_s
                    state.failures.clear()  # a fresh count once the lock expires
                locked = max(locked, state.locked_until - now)
            self._forget_idle(now)
            # Once locked, holding the answer back gains nothing: say so at once.
            overall = counts.get(EVERYONE, len(self._state(EVERYONE, now).failures))
            return Failure(counts[client], overall, 0.0 if locked else delay, locked)

    def succeeded(self, client: str) -> None:
        """The right password: this address starts afresh and skips the overall key
        from now on (REMEMBER_S); the overall count stays, so a guesser gains
        nothing from someone else's sign-in."""
        with self._lock:
            now = self.clock()
            self._keys.pop(client, None)
            self._signed_in.pop(client, None)
            self._signed_in[client] = now  # newest last: the oldest go first
            while len(self._signed_in) > MAX_TRACKED:
                self._signed_in.pop(next(iter(self._signed_in)))
            everyone = self._state(EVERYONE, now)
            everyone.not_before = min(everyone.not_before, now)

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON-able data (times on this throttle's clock)."""
        with self._lock:
            return {
                "keys": {k: {"failures": v.failures, "not_before": v.not_before,
                             "locked_until": v.locked_until} for k, v in self._keys.items()},
                "signed_in": dict(self._signed_in),
            }  # fmt: skip

    def restore(self, data: Mapping[str, Any]) -> None:
        """Replace the state with a snapshot's; anything malformed counts as empty."""
        keys: dict[str, _KeyState] = {}
        for key, value in dict(data.get("keys") or {}).items():
            try:
                keys[str(key)] = _KeyState([float(t) for t in value["failures"]],
                                           float(value["not_before"]),
                                           float(value["locked_until"]))  # fmt: skip
            except (KeyError, TypeError, ValueError):
                continue
        signed = {str(k): float(v) for k, v in dict(data.get("signed_in") or {}).items()
                  if isinstance(v, int | float)}  # fmt: skip
        with self._lock:
            self._keys, self._signed_in = keys, signed

    def _forget_idle(self, now: float) -> None:
        if len(self._keys) <= MAX_TRACKED:
            return
        for key in [k for k, s in self._keys.items() if k != EVERYONE and s.idle(now)]:
            del self._keys[key]


@dataclass(frozen=True)
class Outcome:
    """What the sign-in page shows after an attempt."""

    signed_in: bool
    message: str = ""


def sign_in(
    given: str,
    expected: str,
    client: str,
    throttle: Throttle | StoredThrottle,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Check a password under the throttle; wrong ones are logged and answered late."""
    verdict = throttle.begin(client)
    if verdict.locked_for_s > 0:
        log.warning("sign-in refused from %s: locked for %.0f s", client, verdict.locked_for_s)
        return Outcome(False, locked_message(verdict.locked_for_s))
    if verdict.wait_s > 0:
        log.warning("sign-in refused from %s: too soon, %.1f s to wait", client, verdict.wait_s)
        return Outcome(False, f"Too many attempts: try again in {duration(verdict.wait_s)}.")
    if check_password(given, expected):
        throttle.succeeded(client)
        log.info("sign-in from %s", client)
        return Outcome(True)
    failure = throttle.failed(client)
    log.warning(
        "sign-in failed from %s: wrong password (%d failures from this address, %d in all)",
        client,
        failure.client_failures,
        failure.all_failures,
    )
    if failure.locked_for_s > 0:
        log.warning("sign-in from %s locked for %.0f s", client, failure.locked_for_s)
        return Outcome(False, locked_message(failure.locked_for_s))
    sleep(failure.delay_s)  # the guesser waits for every answer
    return Outcome(False, f"Wrong password (failed attempt {failure.client_failures} from here).")


def locked_message(seconds: float) -> str:
    return f"Too many failed sign-ins: signing in is locked for {duration(seconds)}."


def duration(seconds: float) -> str:
    whole = max(int(seconds + 0.999), 1)
    minutes, rest = divmod(whole, 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def policies_from_env() -> tuple[Policy, Policy]:
    """FARM_SIGNIN_LOCK_AFTER failures (default 10) from one address lock it for
    FARM_SIGNIN_LOCK_MINUTES (default 15). Failures from everywhere else only
    slow signing in down, up to EVERYONE_MAX_DELAYS first-failure delays
    (FARM_SIGNIN_DELAY_S, default 1 s) between attempts: about as many guesses a
    day as the lock-out of three times as many failures allowed, without a lock
    a guesser could turn against the owner."""
    lock_after, lock_s = settings.signin_lock_after(), settings.signin_lock_s()
    first, window_s = settings.signin_delay_s(), max(lock_s, 60.0)
    client = Policy(base_delay_s=first, max_delay_s=CLIENT_MAX_DELAYS * first,
                    lock_after=lock_after, lock_s=lock_s, window_s=window_s)  # fmt: skip
    everyone = Policy(base_delay_s=first, max_delay_s=EVERYONE_MAX_DELAYS * first,
                      lock_after=None, window_s=window_s)  # fmt: skip
    return client, everyone


class StoredThrottle:
    """The throttle with its state in the database (`jobs.db.SigninState`): a UI
    restart keeps a lock-out, and every UI process on the farm's database shares
    the counts. Each attempt's check and each failure is one transaction that
    first bumps the row's version, which takes its write lock, then reads,
    changes and writes the state: two processes never lose each other's counts.
    Times are the wall clock (time.time), which a restart does not reset."""

    def __init__(self, client: Policy, everyone: Policy) -> None:
        self.throttle = Throttle(client, everyone, clock=time.time)
        self._lock = threading.Lock()  # one transaction at a time from this process

    def _apply(self, change: Callable[[str], Any], client: str) -> Any:
        client = str(client)  # a key of the stored JSON
        with self._lock:
            before: dict[str, Any] | None = None
            try:
                with session_scope() as session:
                    session.exec(update(SigninState).where(col(SigninState.id) == 1)  # type: ignore[call-overload]
                                 .values(version=SigninState.version + 1))  # fmt: skip
                    row = session.get(SigninState, 1)
                    if row is None:  # a schema made without the migration's row
                        row = SigninState(id=1, version=1, state={})
                        session.add(row)
                        session.flush()
                    self.throttle.restore(row.state)
                    before = self.throttle.snapshot()
                    result = change(client)
                    row.state = self.throttle.snapshot()
                    session.add(row)
                return result
            except SQLAlchemyError as exc:
                # The database is unreachable: throttle in this process meanwhile,
                # from the last state read (without the change that was not saved).
                log.warning("sign-in throttle kept in this process: %s", type(exc).__name__)
                if before is not None:
                    self.throttle.restore(before)
                return change(client)

    def begin(self, client: str) -> Verdict:
        return self._apply(self.throttle.begin, client)  # type: ignore[no-any-return]

    def failed(self, client: str) -> Failure:
        return self._apply(self.throttle.failed, client)  # type: ignore[no-any-return]

    def succeeded(self, client: str) -> None:
        self._apply(self.throttle.succeeded, client)


@cache
def process_throttle() -> StoredThrottle:
    """The UI's throttle, its state in the farm's database, shared by every
    browser session of every UI process."""
    client, everyone = policies_from_env()
    return StoredThrottle(client, everyone)
