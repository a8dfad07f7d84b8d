"""Text from data stays text: no terminal control sequences, no markdown."""

from __future__ import annotations

from jobs.plaintext import markdown_literal, printable, without_ansi


def test_printable_drops_terminal_controls_but_keeps_lines() -> None:
    text = "loss\x1b[2J\x1b]0;owned\x07 ok\ttab\nnext\x9b"
    shown = printable(text)
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert "\ttab\nnext" in shown and shown.startswith("loss\ufffd[2J")


def test_markdown_literal_leaves_no_image_link_html_or_colour() -> None:
    shown = markdown_literal("![x](http://evil.example/a.png) <img src=x> :red[hi] **b**")
    # every mark that would make an image, link, tag, colour or emphasis is escaped
    for escaped in ("!\\[x\\]\\(http\u2060\\://", "\\<img", "\\:red\\[", "\\*\\*b\\*\\*"):
        assert escaped in shown, escaped
    # what a reader sees once markdown drops the escapes is what was typed
    typed = "![x](http://evil.example/a.png) <img src=x> :red[hi] **b**"
    assert shown.replace("\\", "").replace("\u2060", "") == typed
    # bare addresses are not linked either: a word joiner breaks the scheme and "@"
    assert markdown_literal("see www.a.io or me@a.io") == "see www\u2060.a.io or me@\u2060a.io"


def test_a_stage_logs_colour_codes_do_not_reach_its_error_message() -> None:
    # mlx-lm's console header, as it lands in a stage's log
    line = "\x1b[34m│\x1b[0m    \x1b[39mbatch · iters\x1b[0m   \x1b[1m4 · 60\x1b[0m\n"
    assert without_ansi(line) == "│    batch · iters   4 · 60\n"
    assert without_ansi("RuntimeError: [ring] connection to a peer was lost") == (
        "RuntimeError: [ring] connection to a peer was lost"
    )
