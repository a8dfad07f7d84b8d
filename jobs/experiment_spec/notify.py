"""`notify:`: where the farm POSTs a message when this experiment ends.

Only an http(s) address with a host is accepted: the farm calls it from every
worker's reconciler, so a `file:` or `gopher:` URL, or text that is not a URL
at all, is refused at submit like any other bad field.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_URL_CHARS = 2000


def check_notify_url(url: str) -> str:
    """The URL, or ValueError saying what is wrong with it."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// address, got {parts.scheme or 'none'}:")
    if not parts.hostname:
        raise ValueError("needs a host, e.g. https://ntfy.sh/my-farm")
    return url


class NotifySpec(BaseModel):
    """A JSON POST with a `text` field (what Slack, Discord and ntfy show) when the
    experiment finishes, fails, is cancelled, or a probe stops one of its runs."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(min_length=1, max_length=MAX_URL_CHARS)

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        return check_notify_url(value)
