"""The adherence probe's stop rule (`jobs.probe.decide`) and its spec
(`train.adherence_probe`): pure, no model, no database."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.experiment_spec import AdherenceProbe, ExperimentSpec, TrainSpec, load_spec
from jobs.probe import ProbeResult, decide
from jobs.problems import InputError
from tests.support.spec_files import VALID_SPEC, make_workspace

LOCKED = {"execute_code": 7, "wrong_tool": 1}
LOOPS = {"degenerate": 6, "empty": 2}


def probes(*points: tuple[int, float, dict[str, int]]) -> list[ProbeResult]:
    return [ProbeResult(k, a, labels) for k, a, labels in points]


def test_locked_needs_patience_consecutive_probes_at_the_threshold() -> None:
    rule = AdherenceProbe(stop_when_locked=0.9, patience=2)
    history = probes((100, 0.5, {}), (200, 0.95, LOCKED))
    assert decide(history, rule) is None  # one probe at 0.9 is not two
    history += probes((300, 0.9, LOCKED))  # exactly the threshold counts
    decision = decide(history, rule)
    assert decision is not None and (decision.how, decision.iteration) == ("locked", 300)
    assert decision.reason == "locked: adherence ≥ 0.90 on the probes at 200 and 300"


def test_a_dip_resets_the_count() -> None:
    rule = AdherenceProbe(stop_when_locked=0.8, patience=2)
    history = probes((100, 0.9, LOCKED), (200, 0.7, LOCKED), (300, 0.85, LOCKED))
    assert decide(history, rule) is None


def test_patience_one_and_three_read_well() -> None:
    one = decide(probes((100, 1.0, LOCKED)), AdherenceProbe(stop_when_locked=1.0, patience=1))
    assert one is not None and one.reason == "locked: adherence ≥ 1.00 on the probe at 100"
    three = decide(
        probes((100, 0.0, LOOPS), (200, 0.0, LOOPS), (300, 0.0, LOOPS)),
        AdherenceProbe(stop_when_collapsed=True, patience=3),
    )
    assert three is not None and three.how == "collapsed"
    assert three.reason == (
        "collapsed: every probe response looped or was empty at 100, 200 and 300"
    )


def test_collapsed_needs_every_response_to_loop_or_be_empty() -> None:
    rule = AdherenceProbe(stop_when_collapsed=True, patience=2)
    one_prose = {"degenerate": 7, "prose": 1}
    assert decide(probes((100, 0.0, LOOPS), (200, 0.0, one_prose)), rule) is None
    assert decide(probes((100, 0.0, LOOPS), (200, 0.0, {})), rule) is None  # no responses
    zero_counts = {"degenerate": 8, "prose": 0}
    decision = decide(probes((100, 0.0, LOOPS), (200, 0.0, zero_counts)), rule)
    assert decision is not None and decision.iteration == 200


def test_a_probe_without_a_stop_rule_never_stops() -> None:
    rule = AdherenceProbe()
    assert not rule.stops
    history = probes((100, 1.0, LOCKED), (200, 1.0, LOCKED), (300, 0.0, LOOPS), (400, 0.0, LOOPS))
    assert decide(history, rule) is None
    # Only the rules asked for: a locked-only probe ignores a collapse.
    assert decide(history, AdherenceProbe(stop_when_locked=0.9)) is None


# --------------------------------------------------------------------------- the spec


def test_probe_defaults_and_bounds() -> None:
    probe = TrainSpec.model_validate({"adherence_probe": {}}).adherence_probe
    assert probe == AdherenceProbe()
    assert (probe.prompts, probe.max_tokens, probe.patience) == (8, None, 2)
    assert TrainSpec().adherence_probe is None
    for bad in (
        {"stop_when_locked": 0.0},
        {"stop_when_locked": 1.5},
        {"prompts": 0},
        {"prompts": 1000},
        {"max_tokens": 0},
        {"stop_when_collapsed": True, "patience": 0},
        {"stop_when_locked": 0.9, "bogus": 1},
    ):
        with pytest.raises(ValidationError):
            AdherenceProbe.model_validate(bad)


def test_the_stored_spec_validates_again(tmp_path: Path) -> None:
    """The worker re-reads the spec as stored (a full dump, defaults included);
    without a probe the dump has no probe key, so old fingerprints stay."""
    make_workspace(tmp_path)
    for probe in ("{}", "{stop_when_collapsed: true}"):
        spec = load_spec(spec_with(tmp_path, probe, "  save_every: 10\n"))
        stored = spec.model_dump(mode="json", by_alias=True)
        assert ExperimentSpec.model_validate(stored) == spec
    plain = load_spec(tmp_path / "spec.yaml")
    assert "adherence_probe" not in plain.model_dump()["train"]


def spec_with(ws: Path, probe: str, train_extra: str = "") -> Path:
    text = VALID_SPEC.replace(
        "  mask_prompt: true\n", f"  mask_prompt: true\n{train_extra}  adherence_probe: {probe}\n"
    )
    path = ws / "probe.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[tuple[str, int | None, str]]:
    with pytest.raises(InputError) as info:
        load_spec(path)
    return [(p.field, p.line, p.message) for p in info.value.problems]


def test_spec_errors_point_at_the_probe(tmp_path: Path) -> None:
    make_workspace(tmp_path)
    spec = load_spec(spec_with(tmp_path, "{stop_when_locked: 0.9}", "  save_every: 10\n"))
    assert spec.train.adherence_probe == AdherenceProbe(stop_when_locked=0.9)

    found = problems(spec_with(tmp_path, "{stop_when_locked: 2}", "  save_every: 10\n"))
    assert found == [("train.adherence_probe.stop_when_locked", 12, "must be ≤ 1, got 2")]

    # save_every 100 > iters 50: no checkpoint, so no probe would ever run.
    [(field, _, message)] = problems(spec_with(tmp_path, "{prompts: 4}", "  save_every: 100\n"))
    assert field == "train.adherence_probe" and "lower train.save_every" in message

    # iters 50, save_every 20: probes at 20 and 40 can stop training, patience 3 never could.
    found = problems(
        spec_with(tmp_path, "{stop_when_collapsed: true, patience: 3}", "  save_every: 20\n")
    )
    [(field, _, message)] = found
    assert field == "train.adherence_probe.patience"
    assert message.startswith("3 probes in a row are needed to stop, but only 2 run")


def test_the_probe_takes_prompt_ids_and_an_interval(tmp_path: Path) -> None:
    """The contract's form: `{every: 20, prompts: [ids…]}`; ids are checked
    against the suite and `every` against the checkpoints it probes."""
    make_workspace(tmp_path)
    spec = load_spec(spec_with(tmp_path, "{every: 20, prompts: [p1]}", "  save_every: 10\n"))
    probe = spec.train.adherence_probe
    assert probe is not None and probe.prompts == ["p1"] and probe.every == 20
    assert [probe.due(i, 10) for i in (10, 20, 30, 40)] == [False, True, False, True]
    assert AdherenceProbe().due(10, 10)  # without `every`: every checkpoint

    [(field, _, message)] = problems(
        spec_with(tmp_path, "{prompts: [p1, nope]}", "  save_every: 10\n")
    )
    assert field == "train.adherence_probe.prompts[1]" and "'nope' is not in the suite" in message
    [(field, _, message)] = problems(spec_with(tmp_path, "{every: 15}", "  save_every: 10\n"))
    assert field == "train.adherence_probe.every" and "not a multiple" in message
    with pytest.raises(ValidationError):
        AdherenceProbe.model_validate({"prompts": ["a", "a"]})
