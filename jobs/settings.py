"""Where the farm keeps things, read from the environment at the edges."""

from __future__ import annotations

import os
import re
from pathlib import Path


def farm_home() -> Path:
    """FARM_HOME, default ./.farm: SQLite DB, artifacts, logs, the tiny model."""
    return Path(os.environ.get("FARM_HOME", ".farm")).resolve()


def database_url() -> str:
    """DATABASE_URL, else SQLite under FARM_HOME."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{farm_home() / 'farm.db'}"


def worker_name() -> str | None:
    """FARM_WORKER_NAME: set by `farm worker` for its horse and stage children."""
    return os.environ.get("FARM_WORKER_NAME") or None


def spawn_horse(platform: str) -> bool:
    """FARM_SPAWN_HORSE=1: spawn the work horse instead of forking (the default on macOS)."""
    return os.environ.get("FARM_SPAWN_HORSE", "1" if platform == "darwin" else "0") == "1"


def ui_password() -> str | None:
    """FARM_UI_PASSWORD (else Streamlit secrets, read by `jobs.access`)."""
    return os.environ.get("FARM_UI_PASSWORD") or None


def signin_lock_after() -> int:
    """FARM_SIGNIN_LOCK_AFTER: failures from one address that lock it (default 10)."""
    return max(_count("FARM_SIGNIN_LOCK_AFTER", 10), 1)


def signin_lock_s() -> float:
    """FARM_SIGNIN_LOCK_MINUTES (default 15; 0 only delays), in seconds."""
    try:
        minutes = float(os.environ.get("FARM_SIGNIN_LOCK_MINUTES", 15.0))
    except ValueError:
        minutes = 15.0
    return max(minutes, 0.0) * 60


def signin_delay_s() -> float:
    """FARM_SIGNIN_DELAY_S (default 1): how long the first wrong password is held
    back; each further failure doubles it, up to 10 times this for one address
    and 30 times for the sign-in as a whole."""
    return _seconds("FARM_SIGNIN_DELAY_S", 1.0)


def lmstudio_models() -> Path:
    """FARM_LMSTUDIO_MODELS, else LM Studio's own ~/.lmstudio/models."""
    value = os.environ.get("FARM_LMSTUDIO_MODELS")
    return Path(value).expanduser() if value else Path.home() / ".lmstudio" / "models"


def redis_url() -> str | None:
    """REDIS_URL if set; None means the farm runs its own embedded server."""
    return os.environ.get("REDIS_URL") or None


def shared_artifacts() -> Path | None:
    """FARM_SHARED_ARTIFACTS: a folder every worker sees, lifting stage pinning."""
    value = os.environ.get("FARM_SHARED_ARTIFACTS")
    return Path(value).resolve() if value else None


def artifacts_root() -> Path:
    return shared_artifacts() or farm_home() / "artifacts"


def _seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def lost_after_s() -> float:
    """FARM_LOST_AFTER_S (default 60): a running stage whose worker has not beaten
    for this long is lost, and so is a worker."""
    return _seconds("FARM_LOST_AFTER_S", 60.0)


def stranded_after_s() -> float:
    """FARM_STRANDED_AFTER_S (default 600): how long work pinned to a gone worker
    (its artifacts are on that worker's disk) waits before the run is re-planned."""
    return _seconds("FARM_STRANDED_AFTER_S", 600.0)


def heartbeat_every_s() -> float:
    """Beats come several times per lost-after window, at most every 5 s."""
    return min(5.0, lost_after_s() / 4)


def reconcile_every_s() -> float:
    """FARM_RECONCILE_EVERY_S (default 30): how often each worker runs the reconciler."""
    return _seconds("FARM_RECONCILE_EVERY_S", 30.0)


def gang_form_s() -> float:
    """FARM_GANG_FORM_S (default 120): how long a claimed rank of a gang waits for
    the others before it lets its worker go and the rank is queued again."""
    return _seconds("FARM_GANG_FORM_S", 120.0)


def gang_stall_s() -> float:
    """FARM_GANG_STALL_S (default 600): a gang whose training has not advanced
    for this long while every rank beats is wedged in a collective (a peer
    frozen, a ring that deadlocked): its attempt ends and the gang forms again."""
    return _seconds("FARM_GANG_STALL_S", 600.0)


def advertise_address() -> str | None:
    """FARM_ADVERTISE_ADDRESS (`farm worker --advertise-address`): the address
    the other ranks of a gang reach this worker at; by default the address of
    the interface that reaches Redis (`worker.gang.reachable_address`)."""
    return os.environ.get("FARM_ADVERTISE_ADDRESS") or None


def check_template_s() -> float:
    """FARM_CHECK_TEMPLATE_S (default 60): how long the tokenizer checks (load the
    tokenizer, render sampled examples with its chat template) may take before
    they are stopped; a template with runaway loops is a finding, not a hang."""
    return _seconds("FARM_CHECK_TEMPLATE_S", 60.0)


def validate_timeout_s() -> float:
    """FARM_VALIDATE_TIMEOUT_S (default 120): how long the web form's Validate may
    check a big dataset (in a child process) before it is stopped."""
    return _seconds("FARM_VALIDATE_TIMEOUT_S", 120.0)


def _count(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value >= 0 else default


def max_queued_runs() -> int:
    """FARM_MAX_QUEUED_RUNS (default 5000): runs not yet finished the whole farm may
    hold; a submission that would go over is refused."""
    return _count("FARM_MAX_QUEUED_RUNS", 5000)


def max_queued_runs_per_submitter() -> int:
    """FARM_MAX_QUEUED_RUNS_PER_SUBMITTER (default 2000): the same, for one submitter,
    so one person's sweep cannot fill the farm's whole queue."""
    return _count("FARM_MAX_QUEUED_RUNS_PER_SUBMITTER", 2000)


def trusted_proxies() -> tuple[str, ...]:
    """FARM_TRUSTED_PROXIES: addresses (comma or space separated) of reverse proxies
    whose X-Forwarded-For the sign-in believes; default none (the socket's peer is
    the client)."""
    return tuple(a for a in re.split(r"[\s,]+", os.environ.get("FARM_TRUSTED_PROXIES", "")) if a)


def notify_url() -> str | None:
    """FARM_NOTIFY_URL: where every experiment's end is POSTed (`jobs.notify`),
    besides any `notify.url` of its own; unset: only those."""
    return os.environ.get("FARM_NOTIFY_URL") or None


def ui_url() -> str:
    """FARM_UI_URL (default http://127.0.0.1:8501): the web UI's address, for the
    links in notifications."""
    return os.environ.get("FARM_UI_URL", "http://127.0.0.1:8501").rstrip("/")


def forwarded_allow_ips() -> str:
    """The web server's FORWARDED_ALLOW_IPS (uvicorn, under Streamlit): the trusted
    proxies, or none, so X-Forwarded-For from anyone else is ignored (uvicorn's own
    default trusts every client on this host)."""
    return ",".join(trusted_proxies())


# --- keeping passwords out of output ------------------------------------------------

MASK = "***"
# scheme://user:password@ or scheme://:password@ anywhere in a text
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)[^@\s/]*(?=@)")
# password=… in a URL's query or a libpq connection string
_PARAM_PASSWORD = re.compile(r"(?P<head>\bpassword=)(?:'[^']*'|[^&\s]*)", re.IGNORECASE)


def redacted_url(url: str) -> str:
    """A DATABASE_URL or REDIS_URL fit to print, log or show: its password is `***`.

    The user info ends at the last `@` before the query, so a password with an
    unescaped `@` or `:` is masked whole, and so is one in a malformed URL."""
    address, question, query = url.partition("?")
    head, at, host = address.rpartition("@")
    before, slashes, userinfo = head.rpartition("//")
    if not at or ":" not in userinfo:
        return redact_text(url)
    user = userinfo.split(":", 1)[0]
    return f"{before}{slashes}{user}:{MASK}@{host}{question}{redact_text(query)}"


def redact_text(text: str) -> str:
    """Any text (an error message, a log line) with every URL password masked."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _PARAM_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
