"""`farm bench` reads mlx-lm's own training report: rows as mlx-lm prints them."""

from __future__ import annotations

from tools.bench import tokens_per_sec_from_log

# Rows copied from an `mlx_lm lora` log on the tiny model (colours included).
LOG = (
    "\x1b[38;5;244m 433\x1b[0m    \x1b[1;33m3.404 ▲\x1b[0m    \x1b[1m2,011\x1b[0m    "
    "\x1b[38;5;244m 86.7k\x1b[0m\n"
    "  10    2.061 ▼    981.5    1,204\n"
    "Iter 10: Val loss 2.0, Val took 0.1s\n"
)


def test_tokens_per_second_with_and_without_thousands_separators() -> None:
    assert tokens_per_sec_from_log(LOG) == [2011.0, 981.5]


def test_the_results_table_shows_the_reconcile_and_pages_figures() -> None:
    import io

    from rich.console import Console

    from tools.bench import print_results

    out = io.StringIO()
    results = {
        "reconcile": {"10000": {"stages": 10_000, "pass_all_carried_s": 0.35,
                                "pass_repushing_all_s": 3.3, "redis_commands": 10_002,
                                "redis_lrange": 1}},
        "pages": {"sqlite_leaderboard_page_s": 0.42},
    }  # fmt: skip
    print_results(results, Console(file=out, width=200))
    text = out.getvalue()
    assert "reconcile pass, 10,000 queued stages" in text and "0.35 s / 3.30 s" in text
    assert "pages: sqlite_leaderboard_page_s" in text and "0.420" in text
