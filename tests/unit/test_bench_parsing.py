"""`farm bench` reads mlx-lm's own training report: rows as mlx-lm prints them."""

from __future__ import annotations

from jobs.bench import tokens_per_sec_from_log

# Rows copied from an `mlx_lm lora` log on the tiny model (colours included).
LOG = (
    "\x1b[38;5;244m 433\x1b[0m    \x1b[1;33m3.404 ▲\x1b[0m    \x1b[1m2,011\x1b[0m    "
    "\x1b[38;5;244m 86.7k\x1b[0m\n"
    "  10    2.061 ▼    981.5    1,204\n"
    "Iter 10: Val loss 2.0, Val took 0.1s\n"
)


def test_tokens_per_second_with_and_without_thousands_separators() -> None:
    assert tokens_per_sec_from_log(LOG) == [2011.0, 981.5]
