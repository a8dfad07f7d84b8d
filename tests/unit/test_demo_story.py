"""The lines `farm demo` prints under the leaderboard, from facts (no DB)."""

from __future__ import annotations

from read.demo_story import RunFacts, StoryFacts, story_lines


def run(config: str, seed: int, adapter: float, **more: object) -> RunFacts:
    return RunFacts(config, seed, adapter, base=0.0, early_stop=None, probe_share=None, **more)  # type: ignore[arg-type]


def test_the_story_names_best_and_worst_configs_and_seeds_that_disagree() -> None:
    facts = StoryFacts(
        [
            run("lr=5e-05", 1, 0.10), run("lr=5e-05", 2, 0.15), run("lr=5e-05", 3, 0.12),
            run("lr=0.001", 1, 0.82, val_loss_pick=(300, 500, 18.0)),
            run("lr=0.001", 2, 0.22), run("lr=0.001", 3, 0.70),
        ],
        flagged={"quantization signal loss": ["mxfp4"]},
    )  # fmt: skip
    lines = story_lines(facts)
    assert lines[0] == (
        "configurations: best lr=0.001 at 0.58 mean adapter adherence [95%: 0.00, 1.00; 3 seeds], "
        "worst lr=5e-05 at 0.12 [95%: 0.06, 0.19; 3 seeds]"
    )
    # 46 points apart, but one config's seeds scored 0.82 and 0.22: not shown yet
    assert lines[1].startswith(
        "verdict: no difference shown between lr=0.001 and lr=5e-05 with 3 + 3 seeds: +46 points"
    )
    assert lines[2].startswith("seeds: about ") and "80% power" in lines[2]
    assert "lr=5e-05: seeds agree (5 points apart): seed 1 0.10, seed 3 0.12, seed 2 0.15" in lines
    assert "lr=0.001: seeds disagree (60 points apart): seed 2 0.22, seed 3 0.70, seed 1 0.82" in (
        lines
    )
    assert "untrained base: 0.00 adherence at best" in lines
    assert "flagged quantization signal loss: mxfp4" in lines
    assert (
        "lr=0.001 seed 1: val loss picks checkpoint 300, adherence picks 500 (18 points better)"
        in lines
    )


LOCKED = "locked: adherence ≥ 0.90 on the probes at 200 and 300"


def test_early_stops_and_the_probe_cost_are_told() -> None:
    facts = StoryFacts(
        [
            RunFacts(
                "a", 1, 0.9, 0.0, "locked: adherence ≥ 0.90 on the probes at 200 and 300", 0.04
            ),
            RunFacts("a", 2, 0.5, 0.0, None, 0.06),
        ]
    )
    lines = story_lines(facts)
    assert f"a seed 1: stopped early, {LOCKED}" in lines
    assert lines[-1] == "adherence probe: 5.0% of training time on average (at most 6.0%)"


def test_the_story_says_a_verdict_is_shown_and_how_to_add_seeds() -> None:
    apart = StoryFacts(
        [run("lr=0.0002", s, a, experiment_id=1) for s, a in ((1, 0.81), (2, 0.84), (3, 0.80))]
        + [run("lr=0.001", s, a, experiment_id=2) for s, a in ((1, 0.31), (2, 0.35), (3, 0.30))]
    )
    lines = story_lines(apart)
    assert lines[1].startswith("verdict: lr=0.0002 is better than lr=0.001 (95%): +50 points")
    assert not any(line.startswith("seeds:") for line in lines)  # settled
    close = StoryFacts(
        [run("lr=0.0002", s, a, experiment_id=1) for s, a in ((1, 0.65), (2, 0.46), (3, 0.44))]
        + [run("lr=0.001", s, a, experiment_id=2) for s, a in ((1, 0.25), (2, 0.35), (3, 0.46))]
    )
    seeds = next(line for line in story_lines(close) if line.startswith("seeds:"))
    assert seeds.endswith("(farm seeds add 1 6; farm seeds add 2 6)")
