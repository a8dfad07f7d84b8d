"""What every page shares: the database and Redis connections, formatting, links.

No farm logic lives here or in the pages; they call `jobs`.
"""

from __future__ import annotations

import logging
import secrets
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import streamlit as st
from redis import Redis
from sqlmodel import Session

from jobs import settings
from jobs.access import configured_password
from jobs.connection_errors import describe as describe_connection_error
from jobs.db import migrate, session_scope
from jobs.plaintext import markdown_literal
from web.signin import process_throttle, sign_in

log = logging.getLogger("lorafarm.web")

RUN_PAGE = "views/run.py"
SUBMIT_PAGE = "views/submit.py"
RUNS_PAGE = "views/runs.py"
LEADERBOARD_PAGE = "views/leaderboard.py"


# Process-wide state lives in plain module caches, not st.cache_resource: any
# websocket client, signed in or not, can send Streamlit's "clear cache"
# message, and that must not make the server migrate again or drop its clients.
_migrated: set[str] = set()
_migrating = threading.Lock()


def ensure_database() -> None:
    """Bring the schema up to date once per process and database."""
    url = settings.database_url()
    if url in _migrated:
        return
    with _migrating:
        if url not in _migrated:
            migrate(url)
            _migrated.add(url)


@contextmanager
def db() -> Iterator[Session]:
    ensure_database()
    with session_scope() as session:
        yield session


@cache
def _redis(url: str) -> Redis:
    return Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)


def redis() -> Redis | None:
    """The farm's Redis (REDIS_URL), or None when the UI runs without one."""
    url = settings.redis_url()
    return _redis(url) if url else None


# --- access -------------------------------------------------------------------


def _secrets() -> dict[str, Any]:
    try:
        return {k: st.secrets[k] for k in st.secrets}
    except Exception:  # no secrets.toml: Streamlit raises rather than return nothing
        return {}


def password() -> str | None:
    return configured_password(_secrets())


def signed_in() -> bool:
    return password() is None or bool(st.session_state.get("signed_in"))


def client_address() -> str:
    """The browser's address as the server sees it (Streamlit reports None for
    loopback): the socket's peer, or X-Forwarded-For when the peer is one of
    FARM_TRUSTED_PROXIES (the server is started with them as FORWARDED_ALLOW_IPS)."""
    return st.context.ip_address or "loopback"


def sign_in_page() -> None:
    st.title("lorafarm")
    with st.form("sign_in"):
        given = st.text_input("Password", type="password", key="password")
        if st.form_submit_button("Sign in"):
            expected = password()
            if expected is None:
                return
            try:
                ensure_database()  # the throttle's state is a row of it
            except Exception as exc:  # unreachable: the throttle works in this process
                log.warning("sign-in without the database: %s", type(exc).__name__)
            outcome = sign_in(given, expected, client_address(), process_throttle())
            if outcome.signed_in:
                st.session_state["signed_in"] = True
                st.rerun()
            st.error(outcome.message)


def run_page(navigation: Any) -> None:
    """Run the chosen page. Where error details are off (the farm's own server,
    see tools.local.stack), an error becomes a short message with a reference to the
    full, password-masked traceback in the server log; elsewhere (development,
    tests) Streamlit shows it in full."""
    try:
        navigation.run()
    except Exception as exc:
        if st.get_option("client.showErrorDetails") != "none":
            raise
        reference = secrets.token_hex(4)
        details = "".join(traceback.format_exception(exc))
        masked = settings.redact_text(details)
        log.error("page error %s (client %s)\n%s", reference, client_address(), masked)
        reason = describe_connection_error(exc) or "an unexpected error"
        st.error(f"This page could not be shown: {reason}. See {reference} in the server log.")


def log_to_stderr() -> None:
    """The farm's own log lines (sign-ins, failures) go to the server's stderr."""
    logger = logging.getLogger("lorafarm")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def failure_text(exc: BaseException) -> str:
    """An error to show in the UI: one line for a database or Redis outage, else
    its message; any password in a URL masked either way."""
    return describe_connection_error(exc) or settings.redact_text(str(exc))


# --- formatting -----------------------------------------------------------------

# Material icons ship with Streamlit, so they render everywhere (emoji need a font).
ICONS = {
    "leaderboard": ":material/leaderboard:",
    "runs": ":material/directions_run:",
    "submit": ":material/science:",
    "run": ":material/query_stats:",
    "workers": ":material/dns:",
    "clone": ":material/content_copy:",
    "lock": ":material/lock:",
}
STATUS_STYLE = {  # status → (badge colour, icon)
    "waiting": ("gray", ":material/hourglass_empty:"),
    "queued": ("gray", ":material/schedule:"),
    "running": ("blue", ":material/play_circle:"),
    "done": ("green", ":material/check_circle:"),
    "failed": ("red", ":material/error:"),
    "skipped": ("orange", ":material/skip_next:"),
    "cancelled": ("orange", ":material/cancel:"),
    "empty": ("gray", ":material/radio_button_unchecked:"),
}


def status_icon(status: str) -> str:
    return STATUS_STYLE.get(status, ("gray", ":material/help:"))[1]


def badge(status: str, text: str | None = None) -> str:
    """Markdown for a coloured status badge: `:green-badge[:material/check_circle: done]`."""
    colour, icon = STATUS_STYLE.get(status, ("gray", ":material/help:"))
    return f":{colour}-badge[{icon} {text if text is not None else status}]"


def plain(text: object) -> str:
    """Text from data (a dataset, suite, spec or model) for a markdown element:
    shown as typed, never as an image, link or HTML (`jobs.plaintext`)."""
    return markdown_literal(str(text))


def number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def run_link(run_id: int, label: str | None = None, icon: str | None = None, **params: str) -> None:
    st.page_link(
        RUN_PAGE,
        label=label or f"run {run_id}",
        icon=icon,
        query_params={"run": str(run_id), **params},
    )


MAX_ID = 2**63 - 1  # SQL's BIGINT; a larger id in a URL overflows the driver


def query_int(name: str) -> int | None:
    """An id from the URL; anything that is not one (too long, negative, text) is None."""
    value = st.query_params.get(name)
    if value is None or len(value) > 19 or not value.isdigit():
        return None
    number = int(value)
    return number if 0 < number <= MAX_ID else None


def page_count(total: int, per_page: int) -> int:
    return max((total + per_page - 1) // per_page, 1)


def page_offset(key: str, per_page: int) -> int:
    """The offset of the page a pagination widget is on, before the widget is drawn."""
    return ((st.session_state.get(key) or 1) - 1) * per_page


def paginate(total: int, per_page: int, key: str) -> int:
    """A pagination widget when there is more than one page; returns the offset."""
    pages = page_count(total, per_page)
    if pages == 1:
        return 0
    page = st.pagination(pages, key=key)
    return (page - 1) * per_page
