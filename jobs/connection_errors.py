"""Database and Redis connection errors as one line a user can act on.

Such errors are not bugs in the farm, so a traceback only hides the point; the
line names the server (its password masked, as everything printed, logged or
shown should) and the driver's reason.
"""

from __future__ import annotations

import re

from jobs import settings

# How OpenSSL (through libpq or Python's ssl) says a server's certificate is not
# signed by the CA given: unknown issuer, or an issuer of the same name whose
# signature does not check out.
_UNTRUSTED = re.compile(
    r"certificate verify failed|signature failure|unable to get local issuer|self.signed"
)


# How Redis (ACL) and PostgreSQL say a user was turned away: deleted, disabled,
# not allowed to log in, or a password that is not the one it was given.
_REFUSED = re.compile(
    r"WRONGPASS|invalid username-password pair|user is disabled|not permitted to log in"
    r"|password authentication failed"
)


def describe(exc: BaseException) -> str | None:
    """One line for a database or Redis connection error; None for anything else."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        reason = str(exc.orig) if exc.orig is not None else str(exc)
        return _line("cannot use the database", settings.database_url(), reason)
    if isinstance(exc, ArgumentError) and "URL" in str(exc):
        return _line("DATABASE_URL is not a valid URL", settings.database_url(), str(exc))
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return _line("cannot reach Redis", settings.redis_url() or "(embedded)", str(exc))
    return None


def is_refused_credential(exc: BaseException) -> bool:
    """Redis or PostgreSQL turned this Mac's user and password away."""
    return bool(_REFUSED.search(str(exc)))


def reason_line(reason: str) -> str:
    """The driver's reason as one line, with what to do where the farm knows."""
    first = next((line.strip() for line in reason.splitlines() if line.strip()), "")
    if _UNTRUSTED.search(reason):
        # TLS with a pinned CA (`farm tls`, a join token): the server is not
        # the coordinator this Mac was given the CA of.
        return (
            "its TLS certificate does not chain to the CA this Mac trusts (ssl_ca_certs / "
            "sslrootcert): not the coordinator you meant, or its CA changed; compare the CA's "
            f"sha256 with the one the coordinator printed ({first})"
        )
    if _REFUSED.search(reason):
        return (
            "this Mac's credential was refused: revoked on the coordinator (`farm workers "
            "revoke`) or not the one it was given; join again with a new token from "
            f"`farm workers add NAME` ({first})"
        )
    return first


def _line(what: str, url: str, reason: str) -> str:
    return settings.redact_text(f"{what} {settings.redacted_url(url)}: {reason_line(reason)}")
