"""Text that comes from data (datasets, suites, specs, model output) shown as
text: never as terminal control sequences in the CLI, never as markdown (images
that make a viewer's browser fetch an address, links) in the web UI."""

from __future__ import annotations

import re

# C0 and C1 controls but tab and newline; DEL. An escape sequence in a dataset
# line could otherwise move the cursor, retitle the terminal or hide text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# The characters that make markdown more than text as Streamlit renders it:
# links and images ([ ] ( )), HTML and autolinks (< > and the colon of a URL),
# emphasis, code, tables, LaTeX ($) and Streamlit's :colour[…] and :icon: marks.
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#|~$:])")


# ANSI colour and cursor sequences (ESC [ … letter), as mlx-lm's console writes
# them into a stage's log.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def without_ansi(text: str) -> str:
    """`text` without its terminal colour codes: a log's tail as an error message."""
    return _ANSI.sub("", text)


def printable(text: str) -> str:
    """`text` without control characters (each shown as U+FFFD), for a terminal."""
    return _CONTROL.sub("\ufffd", text)


# Streamlit's markdown links bare addresses (GFM autolinks) even with their
# colon escaped: a word joiner (U+2060, invisible) after the scheme, after
# "www" and after an email's "@" keeps them from being recognised.
_AUTOLINK = re.compile(r"(?i)(\b(?:https?|ftp|mailto|www)(?=[:.])|@)")


def markdown_literal(text: str) -> str:
    """`text` escaped so that markdown shows it as typed: no image, link, HTML or
    emphasis is made of it. Newlines stay (as line breaks)."""
    return _MARKDOWN.sub(r"\\\1", _AUTOLINK.sub("\\1\u2060", printable(text)))
