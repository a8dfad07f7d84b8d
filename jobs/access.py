"""Who may use the web UI: an optional password, compared in constant time."""

from __future__ import annotations

import hmac
import ipaddress

from jobs import settings


def configured_password(secrets: dict[str, str] | None = None) -> str | None:
    """FARM_UI_PASSWORD from the environment, else `password` in Streamlit secrets."""
    value = settings.ui_password()
    if value:
        return value
    if secrets and secrets.get("password"):
        return str(secrets["password"])
    return None


def password_configured() -> bool:
    return configured_password() is not None


def check_password(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def is_loopback(address: str) -> bool:
    if address in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
