"""One load per weights: a run's eval stages that share the base weights run in
one child, the base loaded once and each adapter swapped in.

Real mlx-lm on the tiny model: swapped adapters give exactly the outputs of a
fresh `load(..., adapter_path=...)`; through a real worker a run loads each of
its distinct weights once; a variant that fails leaves the others' results in
place and the session goes on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from redis import Redis
from sqlmodel import select

from jobs import eval_sessions, lifecycle
from jobs.db import EvalResult, Stage, session_scope
from jobs.experiment_spec import parse_spec
from jobs.host_identity import host_id
from jobs.queue import push_all
from jobs.submit import create_rows
from tests.support import PROJECT_ROOT
from tests.support.farm import all_finished, attempts_of, stages_of, submit
from tests.support.processes import Workers, wait_until
from tests.support.spec_files import write_spec
from worker.weights import ADAPTER_LEAVES, Weights

PROMPT = "Read the file setup.py and list the tools you can call."


def make_adapter(base: Path, folder: Path, seed: int, rank: int = 4) -> str:
    """An adapter folder as mlx-lm's trainer writes it, with random LoRA weights."""
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    model, _ = load(str(base))
    lora = {"rank": rank, "scale": 10.0, "dropout": 0.0}
    linear_to_lora_layers(model, 2, lora)
    mx.random.seed(seed)
    weights = {
        name: 0.05 * mx.random.normal(value.shape)
        for name, value in tree_flatten(model.parameters())
        if name.rsplit(".", 1)[-1] in ADAPTER_LEAVES
    }
    folder.mkdir(parents=True)
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    config = {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": lora}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return str(folder)


def logits(model: Any, tokenizer: Any) -> np.ndarray:
    tokens = mx.array(tokenizer.encode(PROMPT))[None]
    out = model(tokens)
    mx.eval(out)
    return np.array(out.astype(mx.float32))


def fresh(base: Path, adapter: str | None) -> np.ndarray:
    from mlx_lm.utils import load

    return logits(*load(str(base), adapter_path=adapter))


def test_swapped_adapters_give_the_outputs_of_a_fresh_load(
    tiny_model: Path, tmp_path: Path
) -> None:
    first = make_adapter(tiny_model, tmp_path / "first", seed=1)
    second = make_adapter(tiny_model, tmp_path / "second", seed=2)
    wider = make_adapter(tiny_model, tmp_path / "wider", seed=3, rank=8)
    weights = Weights()

    base = logits(*weights.get(str(tiny_model), None))
    one = logits(*weights.get(str(tiny_model), first))
    two = logits(*weights.get(str(tiny_model), second))
    one_again = logits(*weights.get(str(tiny_model), first))
    assert weights.loads == 1  # the base, the first adapter and the second: one load

    np.testing.assert_array_equal(base, fresh(tiny_model, None))
    np.testing.assert_array_equal(one, fresh(tiny_model, first))
    np.testing.assert_array_equal(two, fresh(tiny_model, second))
    np.testing.assert_array_equal(one_again, one)  # nothing of the second was left behind
    # The adapters really change the model (else the above proves nothing).
    assert not np.allclose(one, base) and not np.allclose(two, one)

    # Another adapter config, or the plain base after an adapter: loaded again.
    np.testing.assert_array_equal(
        logits(*weights.get(str(tiny_model), wider)), fresh(tiny_model, wider)
    )
    assert weights.loads == 2
    np.testing.assert_array_equal(logits(*weights.get(str(tiny_model), None)), base)
    assert weights.loads == 3


def test_an_adapter_that_does_not_fit_is_refused_not_half_applied(
    tiny_model: Path, tmp_path: Path
) -> None:
    good = make_adapter(tiny_model, tmp_path / "good", seed=1)
    broken = Path(make_adapter(tiny_model, tmp_path / "broken", seed=2))
    tensors = mx.load(str(broken / "adapters.safetensors"))
    dropped = sorted(tensors)[0]
    del tensors[dropped]  # one LoRA matrix short: the good adapter's would stay in place
    mx.save_safetensors(str(broken / "adapters.safetensors"), tensors)

    weights = Weights()
    weights.get(str(tiny_model), good)
    with pytest.raises(ValueError, match="does not match"):
        weights.get(str(tiny_model), str(broken))


def eval_logs(home: Path, stages: list[Stage]) -> str:
    return "".join(
        (home / "logs" / f"stage-{s.id}.log").read_text() for s in stages if s.kind == "eval"
    )


def test_a_run_loads_each_of_its_weights_once(
    workers: Workers, tiny_model: Path, tmp_path: Path, farm_home: Path
) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml",
        tiny_model,
        quantize=[],
        eval={"variants": ["base", "adapter", "fused"], "checkpoints": True},
    )
    experiment_id = submit(spec)
    workers.start("a")
    wait_until(lambda: all_finished(experiment_id), timeout=300, what="the run")
    stages = stages_of(experiment_id)
    assert {(s.variant, s.status) for s in stages if s.kind == "eval"} == {
        (v, "done") for v in ("base", "adapter", "ckpt-0000003", "ckpt-0000006", "best", "fused")
    }
    # Six eval stages, two distinct weights (the base with its adapters, the fused model).
    loads = re.findall(r"^loaded (\S+) in", eval_logs(farm_home, stages), re.MULTILINE)
    fused = farm_home / "artifacts" / f"run-{stages[0].run_id}" / "fused"
    assert sorted(loads) == sorted([str(tiny_model), str(fused)])
    # Every stage's log, sessions' included, opens with the child's line naming
    # that stage and attempt, in the format the worker and the horse log in too.
    for stage in stages:
        text = (farm_home / "logs" / f"stage-{stage.id}.log").read_text()
        header = rf"^\d\d:\d\d:\d\d INFO worker\.child \[stage {stage.id}, attempt 1\]: "
        assert re.search(header + f"{stage.kind} {stage.variant} of run", text, re.M), text[:300]
    # What evaluating the run cost, in `farm status` and its JSON.
    from typer.testing import CliRunner

    from tools.cli import app

    shown = CliRunner().invoke(app, ["status", str(experiment_id), "--json"])
    (run,) = json.loads(shown.stdout)["runs"]
    assert len(run["eval_seconds_by_variant"]) == 6
    assert run["eval_seconds"] == pytest.approx(sum(run["eval_seconds_by_variant"].values()))
    assert 0 < run["eval_seconds"] < 300
    told = CliRunner().invoke(app, ["status", str(experiment_id)]).stdout
    assert f"eval {run['eval_seconds']:.1f} s" in told
    # Each stage is still its own: one attempt, its own results.
    with session_scope() as session:
        for stage in stages:
            assert len(attempts_of(stage.id or 0)) == 1
            if stage.kind == "eval":
                rows = session.exec(select(EvalResult).where(EvalResult.stage_id == stage.id))
                assert len(rows.all()) > 0


def test_a_failing_variant_fails_alone_and_the_session_goes_on(
    workers: Workers, redis_url: str, tiny_model: Path, tmp_path: Path, farm_home: Path
) -> None:
    import subprocess
    import sys

    text = write_spec(
        tmp_path / "spec.yaml",
        tiny_model,
        fuse=None,
        quantize=[],
        eval={"variants": ["base", "adapter"], "checkpoints": True},
    )
    spec = parse_spec(text.read_text())
    with session_scope() as session:
        experiment = create_rows(session, spec)
        experiment_id = experiment.id or 0
        train = next(s for s in stages_of_session(session, experiment_id) if s.kind == "train")
        lifecycle.queue_stage(session, train)  # its ticket is not pushed: trained below
        train_id = train.id or 0
    with session_scope() as session:
        attempt = lifecycle.claim(session, train_id, "a", host_id())  # the worker below
    assert attempt == 1
    trained = subprocess.run(
        [sys.executable, "-m", "worker.child", str(train_id), "1"], cwd=PROJECT_ROOT, timeout=300
    )
    assert trained.returncode == 0
    # The first checkpoint's weights are damaged before its eval runs.
    run_dir = farm_home / "artifacts" / f"run-{train.run_id}" / "adapter"
    (run_dir / "0000003_adapters.safetensors").write_bytes(b"not a safetensors file")
    with session_scope() as session:
        tickets = lifecycle.finish(session, train_id, 1)
    push_all(Redis.from_url(redis_url), tickets)

    worker = workers.start("a")
    wait_until(lambda: all_finished(experiment_id), timeout=300, what="the evals")
    stages = {s.variant: s for s in stages_of(experiment_id) if s.kind == "eval"}
    assert stages["ckpt-0000003"].status == "failed"
    assert "exited with code 1" in (stages["ckpt-0000003"].error or "")
    # The others ran in the same session, before and after the failure, with
    # their results intact; `best` is the checkpoint that could be scored.
    for variant in ("base", "adapter", "ckpt-0000006", "best"):
        assert stages[variant].status == "done", stages[variant].error
        assert stages[variant].adherence is not None
    assert stages["best"].params["iteration"] == 6
    assert worker.poll() is None  # the worker keeps serving
    # One session: the base loaded once before the failure and once after it
    # (a failed stage may leave the model half-changed, so it is dropped).
    loads = re.findall(r"^loaded ", eval_logs(farm_home, list(stages.values())), re.MULTILINE)
    assert len(loads) == 2


def stages_of_session(session: Any, experiment_id: int) -> list[Stage]:
    from jobs.db import Run

    runs = session.exec(select(Run.id).where(Run.experiment_id == experiment_id)).all()
    return list(session.exec(select(Stage).where(Stage.run_id.in_(runs))))  # type: ignore[union-attr]


def test_a_session_takes_the_weights_it_holds_first_and_others_leave_them_to_it(
    farm_home: Path, tiny_model: Path, tmp_path: Path
) -> None:
    text = write_spec(
        tmp_path / "spec.yaml",
        tiny_model,
        eval={"variants": ["base", "adapter", "fused", "quantized"], "checkpoints": True},
    )
    with session_scope() as session:
        experiment = create_rows(session, parse_spec(text.read_text()))
        stages = stages_of_session(session, experiment.id or 0)
        by_key = {(s.kind, s.variant): s for s in stages}
        train = by_key[("train", "adapter")]
        lifecycle.queue_stage(session, train)
    with session_scope() as session:
        assert lifecycle.claim(session, train.id or 0, "a") == 1
    with session_scope() as session:
        lifecycle.finish(session, train.id or 0, 1)  # queues base, adapter, checkpoints, fuse
        queued = {
            s.variant: s
            for s in stages_of_session(session, experiment.id or 0)
            if s.kind == "eval" and s.status == "queued"
        }
        assert set(queued) == {"base", "adapter", "ckpt-0000003", "ckpt-0000006"}
        queue = queued["base"].queue or ""
        # Whatever it evaluated last, a session on the base weights takes the plain base first.
        assert eval_sessions.next_in_session(session, train.run_id, queue, "ckpt-0000006") == (
            queued["base"].id
        )
        # Another queue is another worker's: nothing for this session there.
        assert eval_sessions.next_in_session(session, train.run_id, "farm:host:b", "base") is None
    with session_scope() as session:
        assert lifecycle.claim(session, queued["base"].id or 0, "a") == 1
    with session_scope() as session:
        assert eval_sessions.next_in_session(session, train.run_id, queue, "base") == (
            queued["adapter"].id
        )
        # Worker b, holding the adapter's ticket, leaves it to a's session;
        # a itself (the session's own claim) does not.
        assert eval_sessions.held_for_session(session, queued["adapter"].id or 0, "b")
        assert not eval_sessions.held_for_session(session, queued["adapter"].id or 0, "a")
        # A fused eval is other weights: held for nobody, and after the base
        # weights for a session on them.
        fused = by_key[("eval", "fused")]
        lifecycle.queue_stage(session, fused, queue)
        assert not eval_sessions.held_for_session(session, fused.id or 0, "b")
        assert eval_sessions.next_in_session(session, train.run_id, queue, "adapter") == (
            queued["adapter"].id
        )
        assert eval_sessions.next_in_session(session, train.run_id, queue, "fused") == fused.id
