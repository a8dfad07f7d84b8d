"""Hostile clients against the real UI (`farm web`), in Debian's headless Chromium.

The UI listens on this machine's LAN address when it has one (so the server sees
a real client address, as a guesser on the LAN would have), with a password and a
lock-out after 4 failures. In the guessing test its database is a PostgreSQL it
cannot sign in to, so every page errors once signed in: the page must show a
short message, never a traceback, a server path or the database password. The
upload test talks to Streamlit's upload route as a script would, without signing in.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from websockets.sync.client import connect

from tests.support import PROJECT_ROOT
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, healthy
from tests.support.processes import wait_until
from tools.local.services import free_port

pytestmark = pytest.mark.browser

PASSWORD = "right-horse-battery"
DB_SECRET = "Db-Secret-not-for-browsers"
LOCK_AFTER = 4
FORGED = "203.0.113.77"  # an address a client claims in X-Forwarded-For
LOAD_MS = 90_000


@dataclass
class Web:
    url: str
    host: str
    client: str  # the address the server should log for this machine's browser
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def lan_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


@contextmanager
def farm_web(
    tmp_path: Path,
    database_url: str,
    bind: str | None = None,
    env_extra: dict[str, str] | None = None,
) -> Iterator[Web]:
    """`farm web` with a password and a lock-out after LOCK_AFTER failures (unless
    `env_extra` says otherwise), bound to this machine's LAN address or `bind`."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium")
    host = lan_address() or "127.0.0.1"
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "FARM_SHARED_ARTIFACTS", "FARM_TRUSTED_PROXIES")
    }
    env |= {
        "FARM_HOME": str(tmp_path / "farm"),
        "FARM_UI_PASSWORD": PASSWORD,
        "FARM_SIGNIN_LOCK_AFTER": str(LOCK_AFTER),
        "DATABASE_URL": database_url,
    } | (env_extra or {})
    log = tmp_path / "web.log"
    address = bind or host
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "web", "--address", address, "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://{host}:{port}"
    try:
        wait_until(lambda: process.poll() is not None or healthy(url), timeout=120, what="farm web")
        assert process.poll() is None, log.read_text(errors="replace")
        yield Web(url, host, host if host != "127.0.0.1" else "loopback", log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    """The UI over a PostgreSQL it cannot sign in to: every page errors."""
    url = f"postgresql://lorafarm_nobody:{DB_SECRET}@127.0.0.1:5432/no_such_db"
    with farm_web(tmp_path, url) as web:
        yield web


@pytest.fixture
def working_web(tmp_path: Path) -> Iterator[Web]:
    with farm_web(tmp_path, f"sqlite:///{tmp_path / 'farm.db'}") as web:
        yield web


def test_guessing_the_password_in_a_browser(web: Web) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=LOAD_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            signed_in_page_shows_no_details(web, browser.new_page(), expect)
            # The guesser forges X-Forwarded-For; its peer is no trusted proxy, so
            # every failure counts against the peer's address (asserted below).
            guesser = browser.new_page(extra_http_headers={"X-Forwarded-For": FORGED})
            answers = guess_until_locked(web, guesser, expect)
            clear_caches_anonymously(web)
            right_password_refused_while_locked(guesser, expect)
        finally:
            browser.close()

    # Each answer to a wrong password comes later than the one before.
    print("answer times (s):", [round(a, 2) for a in answers])
    # (The first answer also pays for the page's first render, so compare from the third.)
    assert answers[2] > answers[1] + 1.0 and answers[2] > answers[0] + 2.0, answers

    log = web.log_text()
    failures = [line for line in log.splitlines() if "sign-in failed" in line]
    assert len(failures) == LOCK_AFTER, log
    assert all(f"from {web.client}:" in line for line in failures), failures
    assert FORGED not in log
    assert re.search(rf"sign-in refused from {re.escape(web.client)}: locked", log)
    assert PASSWORD not in log and "wrong-guess" not in log and DB_SECRET not in log


def sign_in(page: Any, password: str) -> None:
    field = page.get_by_label("Password", exact=True)
    field.fill(password)
    page.get_by_role("button", name="Sign in").click()


def signed_in_page_shows_no_details(web: Web, page: Any, expect: Any) -> None:
    """Signed in, the leaderboard fails on the unreachable database: a short
    message, nothing of the server's insides."""
    page.set_default_timeout(LOAD_MS)
    open_sign_in(page, web.url)
    sign_in(page, PASSWORD)
    message = page.get_by_text(re.compile("This page could not be shown"))
    expect(message).to_be_visible()
    text = page.locator("body").inner_text()
    assert "cannot use the database postgresql://lorafarm_nobody:***@127.0.0.1:5432" in text
    for leak in (DB_SECRET, "Traceback", 'File "', str(PROJECT_ROOT), ".venv", "site-packages"):
        assert leak not in text, leak
    reference = re.search(r"See ([0-9a-f]{8}) in the server log", text)
    assert reference, text
    wait_until(lambda: f"page error {reference.group(1)}" in web.log_text(), timeout=10)

    # A link to a run opens it after signing in (a new session: sign in again),
    # and a run id no database could hold is no id at all, not an overflow.
    open_sign_in(page, f"{web.url}/run?run=9{'9' * 40}")
    sign_in(page, PASSWORD)
    expect(page.get_by_text("Open a run from the Runs page")).to_be_visible()
    assert "Traceback" not in page.locator("body").inner_text()


def guess_until_locked(web: Web, page: Any, expect: Any) -> list[float]:
    """Wrong passwords until the lock-out; returns how long each answer took."""
    page.set_default_timeout(LOAD_MS)
    open_sign_in(page, web.url)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    answers = []
    for attempt in range(1, LOCK_AFTER):
        started = time.monotonic()
        sign_in(page, f"wrong-guess-{attempt}")
        answer = page.get_by_text(f"Wrong password (failed attempt {attempt} from here).")
        expect(answer).to_be_visible(timeout=30_000)
        answers.append(time.monotonic() - started)
    sign_in(page, f"wrong-guess-{LOCK_AFTER}")
    expect(page.get_by_text("signing in is locked for 15 min")).to_be_visible(timeout=30_000)
    return answers


def clear_caches_anonymously(web: Web) -> None:
    """What any websocket client may send, signed in or not: Streamlit's
    "clear cache" message. The sign-in throttle must not be part of what it clears."""
    from streamlit.proto.BackMsg_pb2 import BackMsg

    ws_url = web.url.replace("http://", "ws://") + "/_stcore/stream"
    with connect(ws_url, subprotocols=["streamlit"]) as ws:  # type: ignore[list-item]
        message = BackMsg()
        message.clear_cache = True
        ws.send(message.SerializeToString())
        time.sleep(1.0)


def right_password_refused_while_locked(page: Any, expect: Any) -> None:
    page.reload()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    sign_in(page, PASSWORD)
    expect(page.get_by_text("signing in is locked for")).to_be_visible(timeout=30_000)
    page.wait_for_timeout(1000)
    assert page.get_by_role("link", name="Leaderboard").count() == 0
    assert "could not be shown" not in page.locator("body").inner_text()


def test_forwarded_for_counts_only_from_a_trusted_proxy_and_the_owner_signs_in_during_an_attack(
    tmp_path: Path,
) -> None:
    """The UI listens on every address, and trusts this machine's LAN address as its
    proxy. A client on loopback forging X-Forwarded-For is counted as loopback
    (two forged addresses, one lock-out after 2 failures). Through the proxy a
    guesser spreads over many forwarded addresses, past the count that once locked
    signing in for everyone (3 × 2 failures): the owner, who signed in through the
    proxy before, signs in at once while a guess is being held back. Delays start
    at FARM_SIGNIN_DELAY_S=0.2 (the sixth failure overall is held 6 s)."""
    from playwright.sync_api import expect, sync_playwright

    proxy = lan_address()
    if proxy is None:
        pytest.skip("needs an address besides loopback to play the proxy")
    env = {"FARM_SIGNIN_LOCK_AFTER": "2", "FARM_TRUSTED_PROXIES": proxy,
           "FARM_SIGNIN_DELAY_S": "0.2"}  # fmt: skip
    database = f"sqlite:///{tmp_path / 'farm.db'}"
    with farm_web(tmp_path, database, bind="0.0.0.0", env_extra=env) as web:
        port = web.url.rsplit(":", 1)[1]
        through_proxy, loopback = f"http://{proxy}:{port}", f"http://127.0.0.1:{port}"
        expect.set_options(timeout=LOAD_MS)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                # Forged on loopback: both addresses are loopback's, locked after 2.
                first = guesser_page(browser, loopback, "203.0.113.1")
                assert wrong_guess(first, expect) == "Wrong password (failed attempt 1 from here)."
                second = guesser_page(browser, loopback, "203.0.113.2")
                assert "signing in is locked for" in wrong_guess(second, expect)

                owner = owner_signs_in(browser, through_proxy, expect)
                owner.close()
                # Through the trusted proxy: each forwarded address is a client.
                for n in range(3, 6):
                    page = guesser_page(browser, through_proxy, f"198.51.100.{n}")
                    answer = wrong_guess(page, expect)
                    assert answer == "Wrong password (failed attempt 1 from here).", answer
                    page.close()
                # The sixth failure overall: held back 6 s while the owner, whose
                # page is already open, signs in.
                last = guesser_page(browser, through_proxy, "198.51.100.6")
                owner = owner_page(browser, through_proxy)
                sign_in(last, "wrong-guess-held")
                answered = last.get_by_text("Wrong password (failed attempt 1 from here).")
                owner_signs_in(browser, through_proxy, expect, owner)
                assert answered.count() == 0  # the owner is in; the guess still waits
                expect(answered).to_be_visible()
            finally:
                browser.close()
        log = web.log_text()
    failures = [line for line in log.splitlines() if "sign-in failed" in line]
    assert len(failures) == 6, log
    assert sum("sign-in failed from loopback:" in line for line in failures) == 2, failures
    assert "203.0.113." not in log  # forged on loopback: never believed
    for n in range(3, 7):
        assert f"sign-in failed from 198.51.100.{n}:" in log  # forwarded by the proxy
    locks = [line for line in log.splitlines() if "locked for" in line]
    assert locks and all("loopback" in line for line in locks), locks  # no one else's


def guesser_page(browser: Any, url: str, forwarded_for: str) -> Any:
    """A new browser context whose requests carry X-Forwarded-For: `forwarded_for`."""
    context = browser.new_context(extra_http_headers={"X-Forwarded-For": forwarded_for})
    page = context.new_page()
    page.set_default_timeout(LOAD_MS)
    open_sign_in(page, url)
    return page


def open_sign_in(page: Any, url: str) -> None:
    """Open the sign-in page at a LAN address, loading it again if the network
    changed meanwhile. Tests on the other pytest worker add and remove network
    interfaces (the partition tests' veth cables); Chromium then aborts the
    requests in flight to any non-loopback address (net::ERR_NETWORK_CHANGED),
    and a page that lost one of its scripts stays blank, as it would for a
    person on a LAN whose Wi-Fi changed, who reloads it. The page's own request
    may be the one aborted: then `goto` raises, and the page is loaded again."""
    aborted: list[str] = []

    def note(request: Any) -> None:
        if "ERR_NETWORK_CHANGED" in (request.failure or ""):
            aborted.append(request.url)

    page.on("requestfailed", note)
    field = page.get_by_label("Password", exact=True)
    for _ in range(5):
        aborted.clear()
        try:
            page.goto(url)
        except Exception as exc:  # playwright's Error; the page itself was aborted
            if "ERR_NETWORK_CHANGED" not in str(exc):
                raise
            aborted.append(url)
        deadline = time.monotonic() + LOAD_MS / 1000
        while time.monotonic() < deadline and not aborted and not field.count():
            page.wait_for_timeout(200)
        if field.count():
            break
        print(f"reloading {url}: the network changed under {len(aborted)} requests")
        page.wait_for_timeout(1000)  # interfaces change in bursts: let this one pass
    page.remove_listener("requestfailed", note)


def wrong_guess(page: Any, expect: Any) -> str:
    """A wrong password; waits out "try again in N s" (the overall delay) and tries
    again. Returns the answer."""
    answers = re.compile(
        r"Wrong password \(.*\)\.|Too many attempts: try again in .*|Too many failed sign-ins.*"
    )
    for _ in range(10):
        sign_in(page, "wrong-guess")
        answer = page.get_by_text(answers)
        expect(answer).to_be_visible(timeout=60_000)
        text = answer.inner_text()
        wait = re.search(r"try again in (\d+) s", text)
        if not wait:
            return text
        page.wait_for_timeout(int(wait.group(1)) * 1000 + 500)
    raise AssertionError("the overall delay never let the guess through")


def owner_page(browser: Any, url: str) -> Any:
    """The owner's sign-in page (no X-Forwarded-For), open and ready."""
    page = browser.new_page()
    page.set_default_timeout(LOAD_MS)
    open_sign_in(page, url)
    return page


def owner_signs_in(browser: Any, url: str, expect: Any, page: Any = None) -> Any:
    """The owner signs in with the right password (on `page`, or a new one),
    waiting out a "try again in N s" the overall delay may still ask of an
    address that has not signed in before, as a person would."""
    page = page or owner_page(browser, url)
    signed_in = page.get_by_role("link", name="Leaderboard")
    wait = page.get_by_text(re.compile(r"Too many attempts: try again in \d+ s"))
    for _ in range(5):
        sign_in(page, PASSWORD)
        expect(signed_in.or_(wait)).to_be_visible(timeout=30_000)
        if signed_in.count():
            return page
        seconds = int(re.findall(r"\d+", wait.inner_text())[0])
        page.wait_for_timeout(seconds * 1000 + 300)
    raise AssertionError("the owner never got past the overall delay")


def test_only_signed_in_sessions_upload(working_web: Web, tmp_path: Path) -> None:
    """Any websocket session may call Streamlit's upload route: one that has not
    signed in is refused, and a signed-in one uploads its spec."""
    from playwright.sync_api import expect, sync_playwright

    with anonymous_session(working_web) as (session_id, xsrf):
        assert upload(working_web, session_id, xsrf, 100_000) == 403
        assert upload(working_web, session_id, xsrf, 2 * 2**20) == 413  # server.maxUploadSize
    assert "upload refused: session" in working_web.log_text()

    expect.set_options(timeout=LOAD_MS)
    spec = PROJECT_ROOT / "data" / "specs" / "demo.yaml"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            open_sign_in(page, f"{working_web.url}/submit")
            sign_in(page, PASSWORD)
            page.get_by_text("Upload a spec YAML").click()
            page.locator('input[type="file"]').set_input_files(str(spec))
            expect(page.get_by_text("Loaded demo.yaml into the form.")).to_be_visible()
        finally:
            browser.close()


@contextmanager
def anonymous_session(web: Web) -> Iterator[tuple[str, str]]:
    """A websocket session that has run the app (so it shows the sign-in form),
    as any client can open, and the XSRF token the upload route wants."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{web.url}/_stcore/health").read()
    xsrf = next(c.value for c in jar if c.name == "_streamlit_xsrf")
    ws_url = web.url.replace("http://", "ws://") + "/_stcore/stream"
    with connect(ws_url, subprotocols=["streamlit", xsrf]) as ws:  # type: ignore[list-item]
        rerun = BackMsg()
        rerun.rerun_script.query_string = ""
        ws.send(rerun.SerializeToString())
        session_id, finished = "", False
        while not finished:
            message = ForwardMsg()
            message.ParseFromString(ws.recv(timeout=60))
            kind = message.WhichOneof("type")
            if kind == "new_session":
                session_id = message.new_session.initialize.session_id
            finished = kind == "script_finished"
        yield session_id, xsrf  # the session lives as long as its websocket


def upload(web: Web, session_id: str, xsrf: str, size: int) -> int:
    """PUT a spec of `size` bytes to Streamlit's upload route; the status it answers.

    The body is sent only once the server asks for it (`Expect: 100-continue`):
    Streamlit refuses an oversized upload by its Content-Length before reading
    it, and a body sent anyway would meet a closed connection, whose reset can
    swallow the 413 before the client reads it."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.yaml"\r\n'
            "Content-Type: application/x-yaml\r\n\r\n"
        ).encode()
        + b"#" * size
        + f"\r\n--{boundary}--\r\n".encode()
    )
    address = urllib.parse.urlsplit(web.url)
    head = (
        f"PUT /_stcore/upload_file/{session_id}/{uuid.uuid4().hex} HTTP/1.1\r\n"
        f"Host: {address.netloc}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Xsrftoken: {xsrf}\r\nCookie: _streamlit_xsrf={xsrf}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        reader = sock.makefile("rb")
        sock.sendall(head.encode())
        status = response_status(reader)
        if status == 100:
            sock.sendall(body)
            status = response_status(reader)
        return status


def response_status(reader: Any) -> int:
    """The status of the next response's head, its header lines read past."""
    status = int(reader.readline().split()[1])
    while reader.readline() not in (b"\r\n", b"\n", b""):
        pass
    return status


def test_the_lock_out_survives_a_ui_restart(tmp_path: Path) -> None:
    """Locked out, the UI is stopped and started again on the same database: the
    right password is still refused, from a new browser session."""
    from playwright.sync_api import expect, sync_playwright

    database = f"sqlite:///{tmp_path / 'farm.db'}"
    env = {"FARM_SIGNIN_LOCK_AFTER": "2"}
    expect.set_options(timeout=LOAD_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            with farm_web(tmp_path, database, env_extra=env) as web:
                page = browser.new_page()
                open_sign_in(page, web.url)
                sign_in(page, "wrong-guess-1")
                expect(
                    page.get_by_text("Wrong password (failed attempt 1 from here).")
                ).to_be_visible()
                sign_in(page, "wrong-guess-2")
                expect(page.get_by_text("signing in is locked for 15 min")).to_be_visible()
            with farm_web(tmp_path, database, env_extra=env) as web:  # the restarted UI
                page = browser.new_page()
                open_sign_in(page, web.url)
                sign_in(page, PASSWORD)
                expect(page.get_by_text("signing in is locked for")).to_be_visible()
                page.wait_for_timeout(1000)
                assert page.get_by_role("link", name="Leaderboard").count() == 0
                log = web.log_text()
        finally:
            browser.close()
    assert re.search(rf"sign-in refused from {re.escape(web.client)}: locked", log), log
    assert "sign-in failed" not in log  # the restarted UI counted nothing new: it refused
