"""Verdicts with the real database and Redis: intervals on the leaderboard,
`farm compare`, the runner-up sentence and `farm seeds add`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from scipy import stats as scipy_stats
from sqlmodel import select
from typer.testing import CliRunner

from jobs.db import Run, Stage, session_scope
from jobs.stats import mean_interval
from tests.support.verdicts import BETTER, WORSE, fingerprint_of, finish, two_learning_rates
from tools.cli import app

runner = CliRunner()


@pytest.fixture
def two_rates(farm_home: Path, redis_url: str, tiny_model: Path) -> tuple[int, int]:
    return two_learning_rates(farm_home, redis_url, tiny_model)


def test_leaderboard_json_carries_the_interval_and_seed_lock(two_rates: tuple[int, int]) -> None:
    result = runner.invoke(app, ["leaderboard", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output) if r["variant"] == "adapter"}
    better = rows["lr-2e-4"]
    interval = mean_interval(list(BETTER.values()))
    assert (better["ci_low"], better["ci_high"]) == pytest.approx((interval.low, interval.high))
    # prompts p0–p3 right in all 3 seeds, p4 in 2 (seeds 1, 2), p5–p6 in 1 (seed 1)
    assert better["seed_lock"]["3"] == pytest.approx(4 / 10)
    assert better["seed_lock"]["2"] == pytest.approx((4 * 3 + 1) / (3 * 10))
    assert better["seed_lock"]["1"] == pytest.approx(sum(BETTER.values()) / 3)


def test_farm_leaderboard_tells_top_from_runner_up_and_seeds_needed(
    two_rates: tuple[int, int],
) -> None:
    result = runner.invoke(app, ["leaderboard"])
    assert result.exit_code == 0, result.output
    assert "[0." in result.output  # the interval column
    lines = result.output.splitlines()
    verdict = next(line for line in lines if "no difference shown" in line)
    assert "lr-2e-4" in verdict and "lr-1e-3" in verdict and "3 + 3 seeds" in verdict
    assert any("seeds per configuration" in line and "80% power" in line for line in lines)


def test_farm_compare_gives_welchs_verdict(two_rates: tuple[int, int]) -> None:
    better, worse = two_rates
    result = runner.invoke(app, ["compare", str(better), fingerprint_of(worse)[:8], "--json"])
    assert result.exit_code == 0, result.output
    (comparison,) = json.loads(result.output)["comparisons"]  # no quantization: adapter only
    verdict = comparison["verdict"]
    welch = scipy_stats.ttest_ind(list(BETTER.values()), list(WORSE.values()), equal_var=False)
    assert verdict["p_value"] == pytest.approx(welch.pvalue)
    assert verdict["method"] == "Welch t" and verdict["shown"] is False
    assert comparison["seeds_needed"]["per_config"] > 3
    text = runner.invoke(app, ["compare", str(better), str(worse)])
    assert "adapter: no difference shown between lr-2e-4" in text.output


def test_farm_compare_refuses_unknown_configs(two_rates: tuple[int, int]) -> None:
    result = runner.invoke(app, ["compare", "999", str(two_rates[0])])
    assert result.exit_code == 2
    assert "no experiment 999" in result.output


def test_seeds_add_queues_only_the_new_runs_and_pools_them(
    two_rates: tuple[int, int], redis_url: str
) -> None:
    better, _ = two_rates
    queue = Queue("farm:mem:0", connection=Redis.from_url(redis_url), serializer=JSONSerializer)
    queued_before = queue.count
    with session_scope() as session:
        before = {(s.id, s.status) for s in session.exec(select(Stage)).all()}
    result = runner.invoke(app, ["seeds", "add", str(better), "2"])
    assert result.exit_code == 0, result.output
    assert "seeds 4, 5" in result.output
    assert queue.count == queued_before + 2  # two train stages, nothing else
    with session_scope() as session:
        after = {(s.id, s.status) for s in session.exec(select(Stage)).all()}
        new_runs = session.exec(select(Run).where(Run.seed.in_([4, 5]))).all()  # type: ignore[attr-defined]
    assert before <= after  # the runs already done were not touched
    assert len(new_runs) == 2 and {r.experiment_id for r in new_runs} == {better}
    finish(better, {4: 0.6, 5: 0.5})
    board = json.loads(runner.invoke(app, ["leaderboard", "--json"]).output)
    row = next(r for r in board if r["name"] == "lr-2e-4" and r["variant"] == "adapter")
    assert row["seeds"] == 5


def test_seeds_add_refuses_unknown_and_cancelled_experiments(
    two_rates: tuple[int, int], redis_url: str
) -> None:
    _, worse = two_rates
    queue = Queue("farm:mem:0", connection=Redis.from_url(redis_url), serializer=JSONSerializer)
    result = runner.invoke(app, ["seeds", "add", "999", "2"])
    assert result.exit_code == 2 and "no experiment 999" in result.output
    with session_scope() as session:
        run = session.exec(select(Run).where(Run.experiment_id == worse)).first()
        assert run is not None
        run.status = "cancelled"
        session.add(run)
    queued, runs = queue.count, _count_runs()
    result = runner.invoke(app, ["seeds", "add", str(worse), "2"])
    assert result.exit_code == 2 and "was cancelled" in result.output
    assert (queue.count, _count_runs()) == (queued, runs)  # nothing written


def _count_runs() -> int:
    with session_scope() as session:
        return len(session.exec(select(Run)).all())


def test_leaderboard_page_shows_intervals_verdicts_and_fragile_prompts(
    two_rates: tuple[int, int], redis_url: str
) -> None:
    from tests.support.web import open_page, texts

    at = open_page()
    table = next(d for d in at.dataframe if "mean" in d.value.columns).value
    assert table["config"][0].startswith("lr-2e-4")
    assert table["interval"][0].endswith("· 3 seeds") and table["interval"][0].startswith("[")
    assert table["seed_lock"][0] == pytest.approx(0.4)
    page = texts(at)
    assert "Top against runner-up: no difference shown between lr-2e-4" in page
    assert "seeds per configuration" in page
    # any two rows (the top two by default): the verdict and each one's fragile prompts
    decide = at.get("selectbox")
    assert [sb.key for sb in decide if sb.key in ("lb_verdict_a", "lb_verdict_b")]
    assert any("no difference shown between lr-2e-4" in i.value for i in at.info)
    fragile = next(d for d in at.dataframe if "prompt" in d.value.columns).value
    assert list(fragile["prompt"]) == ["p4", "p5", "p6"]  # p4: 2 of 3 seeds; p5, p6: 1 of 3
    assert list(fragile["seed 3"]) == ["prose", "prose", "prose"]
    # any other pair
    at.selectbox(key="lb_verdict_a").set_value(1)
    at.selectbox(key="lb_verdict_b").set_value(0)
    at.run()
    assert any("no difference shown between lr-1e-3" in i.value for i in at.info)
    # the button adds the seeds the sentence asks for, to both configurations
    runs = _count_runs()
    button = next(b for b in at.button if b.key == "lb_add_seeds")
    more = int(button.label.split()[1])
    button.click().run()
    assert _count_runs() == runs + 2 * more
