"""The leaderboard page: ranking, filters, per-seed plot, comparing configs; fast paging."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from sqlmodel import Session, select

from jobs import settings
from jobs.db import Experiment, Run, Stage, session_scope
from jobs.ranking import (
    SEED_DETAIL_COLUMNS,
    SORT_KEYS,
    LeaderboardRow,
    aggregate_query,
    attach_seed_details,
    count_rows,
    row_from_aggregate,
)
from read.leaderboard import leaderboard, leaderboard_page
from tests.support.web import open_page, texts
from tools.bench.pages import load_database

N_RUNS = 400  # 8 configurations × 50 seeds × 4 variants = 32 rows


@pytest.fixture
def farm_data(farm_home: Path) -> Path:
    load_database(settings.database_url(), N_RUNS)
    return farm_home


def table(at):  # type: ignore[no-untyped-def]
    return next(d for d in at.dataframe if "mean" in d.value.columns).value


def test_leaderboard_ranks_by_mean_then_worst(farm_data: Path) -> None:
    at = open_page()
    rows = table(at)
    with session_scope() as session:
        expected = leaderboard(session, limit=25)
        total = count_rows(session)
    assert len(rows) == 25 and total == 32
    assert f"Rows 1–25 of {total}" in texts(at)
    assert list(rows["variant"]) == [r.variant for r in expected]
    assert list(rows["mean"]) == pytest.approx([r.mean for r in expected])
    assert list(rows["worst"]) == pytest.approx([r.worst for r in expected])
    assert list(rows["mean"]) == sorted(rows["mean"], reverse=True)
    # Every finished seed's score, for the strip of each row.
    assert [list(s) for s in rows["per_seed"]] == [[x for _, x in r.seed_scores] for r in expected]
    assert [len(s) for s in rows["per_seed"]] == list(rows["seeds"])
    assert "execute_code" in rows["label_mix"][0]
    # The per-seed strip plot and the val-loss scatter are drawn.
    assert len(at.get("vega_lite_chart")) == 2

    at.pagination(key="lb_page").select(2).run()
    assert len(table(at)) == 7 and "Rows 26–32 of 32" in texts(at)


def test_leaderboard_filters_and_sorts(farm_data: Path) -> None:
    at = open_page()
    with session_scope() as session:
        models = sorted({e.base_model for e in session.exec(select(Experiment))})
    at.selectbox(key="lb_base_model").select(models[1])
    at.text_input(key="lb_variant").input("q4")
    at.run()
    rows = table(at)
    assert set(rows["base_model"]) == {models[1]} and set(rows["variant"]) == {"q4"}
    with session_scope() as session:
        assert len(rows) == count_rows(session, base_model=models[1], variant="q4") == 2

    at.selectbox(key="lb_base_model").select("all")
    at.text_input(key="lb_variant").input("")
    at.selectbox(key="lb_sort").select("worst")
    at.run()
    worst = list(table(at)["worst"])
    assert worst == sorted(worst, reverse=True)


def test_selecting_rows_compares_their_configs(farm_data: Path) -> None:
    at = open_page()
    assert "Select two or more rows" in texts(at)
    at.session_state["lb_table"] = {"selection": {"rows": [0, 1], "columns": []}}
    at.run()
    diff = next(d for d in at.dataframe if "field" in d.value.columns).value
    fields = dict(zip(diff["field"], diff["differs"], strict=True))
    assert fields["train.max_seq_length"] is False  # the same in every config
    assert any(fields.values())  # … and the ones that differ are marked
    assert "name" not in fields and "seeds" not in fields  # not part of a configuration
    assert f"{sum(fields.values())} of {len(fields)} fields differ" in texts(at)
    assert len(at.get("vega_lite_chart")) == 3  # + label mixes side by side

    at.toggle(key="lb_only_diff").set_value(True).run()
    diff = next(d for d in at.dataframe if "field" in d.value.columns).value
    assert diff["differs"].all()


def test_empty_leaderboard_points_to_the_forms(farm_home: Path) -> None:
    at = open_page()
    assert "Nothing ranked yet" in texts(at)


def same(row: LeaderboardRow) -> tuple[object, ...]:
    """A row with its floats rounded: PostgreSQL may sum in another order."""

    def r(value: object) -> object:
        if isinstance(value, float):
            return round(value, 9)
        if isinstance(value, dict):
            return {k: r(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(r(v) for v in value)
        return value

    return tuple(repr(r(v)) for v in asdict(row).values())


def key(row: LeaderboardRow, sort: str) -> tuple[object, ...]:
    value = getattr(row, sort)
    rounded = round(value, 9) if isinstance(value, float) else value
    return (rounded, round(row.worst, 9)) if sort == "mean" else (rounded,)


def reference_rows(session: Session, **filters: str | None) -> list[LeaderboardRow]:
    """Every row the slow, plain way: the whole aggregation in one query, each
    row's details from every finished eval of its configuration."""
    rows = [row_from_aggregate(r) for r in session.execute(aggregate_query(
        filters.get("base_model"), filters.get("dataset"), filters.get("suite"),
        filters.get("variant"),
    ))]  # fmt: skip
    fingerprints = {r.fingerprint for r in rows}
    per_seed = session.execute(
        select(*SEED_DETAIL_COLUMNS)
        .join(Run, Run.id == Stage.run_id)
        .where(Stage.kind == "eval", Stage.status == "done", Stage.adherence.is_not(None))  # type: ignore[union-attr]
        .where(Run.fingerprint.in_(fingerprints))  # type: ignore[attr-defined]
        .order_by(Run.seed)
    )
    attach_seed_details(rows, per_seed)
    return rows


@pytest.mark.parametrize("sort", SORT_KEYS)
def test_the_ranker_pages_through_every_row_in_order(database: str, sort: str) -> None:
    """Paging through `leaderboard_page` gives every row of the plain aggregation
    once, with the same figures, in the chosen order, on both backends."""
    load_database(database, 150)
    with session_scope() as session:
        for filters in ({}, {"variant": "q8"}, {"base_model": "mlx-community/Qwen3-8B-4bit"}):
            reference = reference_rows(session, **filters)
            assert reference and count_rows(session, **filters) == len(reference)
            for descending in (True, False):
                paged: list[LeaderboardRow] = []
                while page := leaderboard_page(
                    session, sort=sort, descending=descending, limit=5, offset=len(paged),
                    **filters,
                ).rows:  # fmt: skip
                    paged += page
                assert sorted(map(same, paged)) == sorted(map(same, reference))
                # In order (PostgreSQL sums floats in any order: ties may fall either way).
                keys = [key(r, sort) for r in paged if getattr(r, sort) is not None]
                assert keys == sorted(keys, reverse=descending), (sort, descending)
                total = leaderboard_page(session, sort=sort, limit=5, **filters).total
                assert total == len(reference)
        assert leaderboard_page(session, offset=10_000).rows == []


def test_points_lost_column(farm_data: Path) -> None:
    """Each quantized / fused row shows its adherence minus its twin's (fused for q8 and
    q4, the adapter for fused), in points, averaged over the runs that have both."""
    from jobs.db import Run, Stage
    from jobs.diagnostics import VariantResult
    from jobs.diagnostics.detect import quantization_twin
    from jobs.ranking import twin_variant

    at = open_page()
    rows = table(at)
    columns = list(rows.columns)
    assert columns.index("points_lost") == columns.index("mean") + 1  # one glance
    with session_scope() as session:
        evals = session.exec(
            select(Run.fingerprint, Run.id, Stage.variant, Stage.adherence)
            .join(Run, Run.id == Stage.run_id)
            .where(Stage.kind == "eval", Stage.status == "done")
        ).all()
    runs: dict[tuple[str, int], dict[str, float]] = {}
    for fp, run_id, variant, adherence in evals:
        runs.setdefault((fp, run_id), {})[variant] = adherence
    drops: dict[tuple[str, str], list[float]] = {}
    for (fp, _), scores in runs.items():
        for variant, twin in (("q8", "fused"), ("q4", "fused"), ("fused", "adapter")):
            if variant in scores and twin in scores:
                drops.setdefault((fp, variant), []).append(100 * (scores[variant] - scores[twin]))
        # the same twin the quantization signal-loss diagnostic compares with
        results = {v: VariantResult(v, a, 10, {}) for v, a in scores.items()}
        for variant in ("q8", "q4"):
            if variant in scores:
                twin = quantization_twin(variant, results)
                assert twin is not None and twin_variant(variant, scores) == twin.variant
    with session_scope() as session:
        shown = leaderboard(session, limit=25)  # the page's rows, in its order
    assert list(rows["variant"]) == [r.variant for r in shown]
    seen_loss = False
    for row, lost in zip(shown, rows["points_lost"], strict=True):
        if row.variant == "adapter":
            assert lost is None or lost != lost  # None, or NaN in the frame
            continue
        expected = drops[(row.fingerprint, row.variant)]
        assert lost == pytest.approx(sum(expected) / len(expected))
        seen_loss |= row.variant == "q4" and lost < 0
    assert seen_loss


def test_each_row_names_its_best_seeds_run_to_export(farm_data: Path) -> None:
    from jobs.db import Run
    from read.leaderboard import best_seed_run

    with session_scope() as session:
        rows = leaderboard(session, limit=5)
        for row in rows:
            run_id = best_seed_run(session, row)
            assert run_id is not None
            run = session.get(Run, run_id)
            assert run is not None and run.fingerprint == row.fingerprint
            assert run.seed == max(row.seed_scores, key=lambda pair: pair[1])[0]
    assert "Select a row to export its best seed." in texts(open_page())
