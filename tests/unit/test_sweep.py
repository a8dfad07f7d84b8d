"""Sweeps: a spec's `sweep:` expands to its grid, each point a spec with its own
fingerprint that pools with any experiment of the same config; bad sweeps are
refused at their YAML line; the sweep view finds the knob that moved adherence."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jobs import limits
from jobs.experiment_spec import config_fingerprint, load_spec, spec_to_yaml
from jobs.experiment_spec.sweep import KNOB_PATHS, expand_sweep, load_sweep
from jobs.problems import InputError
from jobs.stats import mean_interval
from read.sweep import (
    PointInfo,
    SeedScore,
    SweepInfo,
    build_view,
    knob_means,
    knob_points,
)
from tests.support.spec_files import VALID_SPEC, make_workspace

GRID = """\
sweep:
  train.learning_rate: [1.0e-4, 2.0e-4]
  train.lora.rank: [8, 16]
"""


def workspace(tmp_path: Path, sweep: str = GRID, spec: str = VALID_SPEC) -> Path:
    path = make_workspace(tmp_path)
    path.write_text(spec + sweep)
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(InputError) as caught:
        load_sweep(path)
    return [str(p) for p in caught.value.problems]


def test_a_sweep_expands_to_the_cartesian_grid_each_point_its_own_config(tmp_path: Path) -> None:
    spec, grid = load_sweep(workspace(tmp_path))
    points = [point for point, _ in grid]
    assert points == [
        {"train.learning_rate": 1e-4, "train.lora.rank": 8},
        {"train.learning_rate": 1e-4, "train.lora.rank": 16},
        {"train.learning_rate": 2e-4, "train.lora.rank": 8},
        {"train.learning_rate": 2e-4, "train.lora.rank": 16},
    ]
    specs = [s for _, s in grid]
    assert [(s.train.learning_rate, s.train.lora.rank) for s in specs] == [
        (1e-4, 8), (1e-4, 16), (2e-4, 8), (2e-4, 16)
    ]  # fmt: skip
    assert all(s.sweep is None and s.seeds == [1, 2, 3] for s in specs)
    assert specs[0].name == "code-mode-r8.learning_rate-0.0001.rank-8"
    # Everything not swept is the spec's own.
    assert {s.train.lora.scale for s in specs} == {spec.train.lora.scale}
    fingerprints = [config_fingerprint(s) for s in specs]
    assert len(set(fingerprints)) == 4


def test_a_grid_point_pools_with_a_plain_experiment_of_the_same_config(tmp_path: Path) -> None:
    _, grid = load_sweep(workspace(tmp_path))
    # The same config written by hand, under another name and other seeds.
    plain = tmp_path / "plain.yaml"
    plain.write_text(
        VALID_SPEC.replace("name: code-mode-r8", "name: by-hand")
        .replace("seeds: [1, 2, 3]", "seeds: [7]")
        .replace("learning_rate: 1.0e-4", "learning_rate: 2.0e-4")
        .replace("rank: 8", "rank: 16")
    )
    by_hand = config_fingerprint(load_spec(plain))
    assert [config_fingerprint(s) for _, s in grid].index(by_hand) == 3


def test_a_spec_without_a_sweep_is_one_point_and_stores_as_before(tmp_path: Path) -> None:
    spec = load_spec(workspace(tmp_path, sweep=""))
    assert expand_sweep(spec) == [({}, spec)]
    assert "\nsweep:" not in spec_to_yaml(spec)


@pytest.mark.parametrize(
    ("sweep", "expected"),
    [
        ("sweep:\n  train.lerning_rate: [1.0e-4]\n",
         "spec.yaml:24: sweep.train.lerning_rate: unknown knob 'train.lerning_rate' — did you "
         "mean 'train.learning_rate'?"),
        ("sweep:\n  seeds: [[1], [2]]\n",
         "spec.yaml:24: sweep.seeds: seeds are not a knob: every grid point already runs every "
         "seed in `seeds:` — list them there"),
        ("sweep:\n  train.lora.rank: []\n",
         "spec.yaml:24: sweep.train.lora.rank: is empty — give at least one value"),
        ("sweep:\n  train.lora.rank:\n    - 8\n    - 16\n    - 8\n",
         "spec.yaml:27: sweep.train.lora.rank[2]: value 8 is listed twice (also "
         "sweep.train.lora.rank[0]) — each value is one grid point; remove the duplicate"),
        ("sweep:\n  train.lora.rank:\n    - 8\n    - eight\n",
         "spec.yaml:26: sweep.train.lora.rank[1]: must be a whole number, got 'eight'"),
        ("sweep:\n  train.lora.rank: 8\n",
         "spec.yaml:24: sweep.train.lora.rank: must be a list of values, e.g. [1e-4, 2e-4], "
         "got 8"),
        ("sweep:\n  train.lora.dropout: [0.0, 1.5]\n",
         "spec.yaml:24: sweep.train.lora.dropout[1]: must be < 1, got 1.5"),
        ("sweep: [1, 2]\n",
         "spec.yaml:23: sweep: must be a mapping of knob paths to value lists, e.g. "
         "{train.learning_rate: [1e-4, 2e-4], train.lora.rank: [8, 16]}"),
    ],
)  # fmt: skip
def test_a_bad_sweep_is_refused_at_its_line(tmp_path: Path, sweep: str, expected: str) -> None:
    found = problems_of(workspace(tmp_path, sweep=sweep))
    assert [p.split("/")[-1] for p in found] == [expected]


def test_every_problem_of_a_sweep_is_reported_at_once(tmp_path: Path) -> None:
    sweep = "sweep:\n  seeds: [1]\n  train.rnak: [1]\n  train.iters: []\n"
    fields = [p.split(": ")[1] for p in problems_of(workspace(tmp_path, sweep=sweep))]
    assert fields == ["sweep.seeds", "sweep.train.rnak", "sweep.train.iters"]


def test_knobs_come_from_the_spec_model() -> None:
    assert {"train.learning_rate", "train.lora.rank", "fuse.from", "quantize"} <= set(KNOB_PATHS)
    assert not {"seeds", "name", "dataset", "quantize.bits"} & set(KNOB_PATHS)


def test_the_grid_is_held_to_the_run_limit_counted_not_built(tmp_path: Path) -> None:
    values = ", ".join(str(i) for i in range(1, 201))
    sweep = f"sweep:\n  train.iters: [{values}]\n  train.lora.rank: [{values}]\n"
    start = time.perf_counter()
    found = problems_of(workspace(tmp_path, sweep=sweep))
    assert time.perf_counter() - start < 5  # 40,000 points are never built
    assert [p.split("/")[-1] for p in found] == [
        f"spec.yaml:23: sweep: 120000 runs (3 seeds × 40000 grid points), at most "
        f"{limits.MAX_RUNS} per submission"
    ]


def test_learning_rate_next_to_a_schedule_is_not_a_knob(tmp_path: Path) -> None:
    spec = VALID_SPEC.replace(
        "  learning_rate: 1.0e-4\n",
        "  learning_rate: 1.0e-4\n  lr_schedule: {name: cosine_decay, arguments: [1.0e-4, 50]}\n",
    )
    sweep = "sweep:\n  train.learning_rate: [1.0e-4, 2.0e-4]\n"
    (found,) = problems_of(workspace(tmp_path, sweep=sweep, spec=spec))
    assert "sweep.train.learning_rate: is ignored when train.lr_schedule is set" in found


def test_the_sweep_view_finds_the_knob_that_moved_adherence_most() -> None:
    axes = {"train.learning_rate": [1e-4, 2e-4], "train.lora.rank": [8, 16]}
    grid = [(1e-4, 8), (1e-4, 16), (2e-4, 8), (2e-4, 16)]
    points = [
        PointInfo(i, {"train.learning_rate": lr, "train.lora.rank": r}, f"fp{i}")
        for i, (lr, r) in enumerate(grid, start=1)
    ]
    adherence = {1: (0.2, 0.22), 2: (0.2, 0.22), 3: (0.5, 0.6), 4: (0.6, 0.5)}
    scores = [
        SeedScore(e, seed, "adapter", a)
        for e, pair in adherence.items()
        for seed, a in zip((1, 2), pair, strict=True)
    ] + [SeedScore(1, 1, "q8", 0.0), SeedScore(1, 1, "ckpt-100", 0.9)]
    view = build_view(SweepInfo(1, "lr-rank", axes), points, scores)
    assert view.variant == "adapter" and view.variants == ["adapter", "q8"]
    assert [round(p.mean or 0, 2) for p in view.points] == [0.21, 0.21, 0.55, 0.55]
    assert view.points[0].seeds == {1: 0.2, 2: 0.22}
    lr, rank = view.knobs
    assert [round(v.mean or 0, 2) for v in lr.values] == [0.21, 0.55]
    assert round(lr.spread or 0, 2) == 0.34 and round(rank.spread or 0, 2) == 0.0
    assert view.strongest is lr
    # four seeds a value, 34 points apart with a spread of 5: an effect, and said so
    line = view.strongest_line()
    assert line.startswith(
        "learning_rate moved adherence most: 0.21 → 0.55 (0.0001 → 0.0002); "
        "learning_rate=0.0002 is better than learning_rate=0.0001 (95%): +34 points ["
    )
    # error bars: each value's 95% interval over its points and seeds
    bars = {m["value"]: m for m in knob_means(view) if m["knob"] == "learning_rate"}
    interval = mean_interval([0.5, 0.6, 0.6, 0.5])
    assert (bars["0.0002"]["low"], bars["0.0002"]["high"]) == (interval.low, interval.high)
    # Each seed of each point is a dot on each knob's chart.
    assert len(knob_points(view)) == 2 * 4 * 2
    # Another variant reads the same grid differently.
    assert build_view(SweepInfo(1, "s", axes), points, scores, "q8").strongest is None


def test_the_strongest_knob_is_no_effect_when_seeds_overlap() -> None:
    """The demo's own learning rates: 16 points apart, seeds overlapping."""
    axes = {"train.learning_rate": [2e-4, 1e-3]}
    points = [PointInfo(1, {"train.learning_rate": 2e-4}, "a"),
              PointInfo(2, {"train.learning_rate": 1e-3}, "b")]  # fmt: skip
    scores = [SeedScore(1, s, "adapter", a) for s, a in ((1, 0.65), (2, 0.46), (3, 0.44))]
    scores += [SeedScore(2, s, "adapter", a) for s, a in ((1, 0.25), (2, 0.35), (3, 0.46))]
    line = build_view(SweepInfo(1, "lr", axes), points, scores).strongest_line()
    assert line.startswith("no knob moved adherence beyond seed noise yet: learning_rate differs")
    assert "no difference shown" in line and "3 + 3 seeds" in line
    assert "seeds per configuration" in line and "80% power" in line
