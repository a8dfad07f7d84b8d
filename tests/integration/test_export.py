"""`farm export` and `farm publish` on a run a real worker trained: the exports
load and generate with mlx-lm in a fresh process, the adapter export gives the
farm's own logits, a changed byte is refused by checksum, and a publish that
cannot reach the Hub records nothing. One training run serves the module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis
from sqlmodel import func, select
from typer.testing import CliRunner

from jobs import db
from jobs.db import Artifact, ExportChunk, ExportFile, Publication, Run, Stage, session_scope
from jobs.host_identity import host_id
from jobs.queue import host_queue_name
from ship.sources import ExportRefused
from ship.transfer import read_zip
from tests.conftest import REDIS_TEST_URL
from tests.support import PROJECT_ROOT
from tests.support.farm import all_finished, stages_of, submit
from tests.support.processes import Workers, wait_until
from tests.support.spec_files import write_spec
from tools.cli import app
from tools.local.services import free_port

runner = CliRunner()
# One training run serves every test here: keep them on one xdist worker.
pytestmark = pytest.mark.xdist_group("export")

# Loads a model (and adapter) in a fresh interpreter, generates a few tokens
# greedily and prints them with a digest of the logits of a fixed prompt.
PROBE = """
import hashlib, json, sys
import mlx.core as mx
import numpy as np
from mlx_lm import generate, load
model_path, adapter = sys.argv[1], (sys.argv[2] or None)
model, tokenizer = load(model_path, adapter_path=adapter)
prompt = tokenizer.apply_chat_template([{"role": "user", "content": "list the files"}],
                                       add_generation_prompt=True)
logits = model(mx.array([prompt]))
mx.eval(logits)
text = generate(model, tokenizer, prompt=prompt, max_tokens=8)
tokens = tokenizer.encode(text, add_special_tokens=False) if text else []
digest = hashlib.sha256(np.array(logits.astype(mx.float32)).tobytes()).hexdigest()
print(json.dumps({"logits": digest, "tokens": len(tokens), "text": text}))
"""


@dataclass(frozen=True)
class Trained:
    home: Path
    run_id: int
    experiment_id: int
    base_model: Path
    adapter_dir: Path


def probe(model: Path | str, adapter: Path | str | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(model), str(adapter or "")],
        capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """Two seeds of a small spec trained, fused, quantized (q8) and evaluated by
    one real `farm worker`."""
    root = tmp_path_factory.mktemp("ship")
    home = root / "farm"
    home.mkdir()
    patch = pytest.MonkeyPatch()
    patch.setenv("FARM_HOME", str(home))
    patch.setenv("DATABASE_URL", f"sqlite:///{home / 'farm.db'}")
    patch.setenv("REDIS_URL", REDIS_TEST_URL)
    patch.delenv("FARM_SHARED_ARTIFACTS", raising=False)
    redis = Redis.from_url(REDIS_TEST_URL)
    redis.flushdb()
    db.dispose_engines()
    db.migrate()
    checkpoints = {"checkpoints": True, "checkpoint_prompts": ["quality-01", "quality-02"]}
    spec = write_spec(root / "spec.yaml", tiny_model, seeds=[1, 2], eval=checkpoints)
    experiment_id = submit(spec)
    pool = Workers(home)
    try:
        pool.start("w1")
        wait_until(lambda: all_finished(experiment_id), timeout=900, what="two runs")
    finally:
        pool.stop_all()
    stages = stages_of(experiment_id)
    assert {s.status for s in stages} == {"done"}, [(s.kind, s.variant, s.error) for s in stages]
    with session_scope() as session:
        run = session.exec(select(Run).where(Run.seed == 1)).one()
        adapter = session.exec(
            select(Artifact).where(Artifact.run_id == run.id, Artifact.kind == "adapter")
        ).one()
    yield Trained(home, run.id or 0, experiment_id, tiny_model, Path(adapter.path))
    patch.undo()
    db.dispose_engines()
    redis.flushdb()


def test_adapter_export_loads_and_gives_the_farms_logits(trained: Trained, tmp_path: Path) -> None:
    dest = tmp_path / "adapter"
    result = runner.invoke(app, ["export", str(trained.run_id), "--to", str(dest)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in dest.iterdir())
    assert {"adapters.safetensors", "adapter_config.json", "README.md", "curves.png",
            "curves.csv", "lorafarm-spec.yaml"} == set(names)  # fmt: skip
    config = json.loads((dest / "adapter_config.json").read_text())
    assert config["model"] == str(trained.base_model)
    exported = probe(trained.base_model, dest)
    farms = probe(trained.base_model, trained.adapter_dir)
    assert exported["logits"] == farms["logits"]
    assert exported["tokens"] > 0 and exported["text"] == farms["text"]
    assert not list(tmp_path.glob(".adapter.export-*"))


def test_fused_quantized_and_checkpoint_exports_load_and_generate(
    trained: Trained, tmp_path: Path
) -> None:
    for variant, shape in (("fused", "model"), ("q8", "model"), ("ckpt-0000003", "adapter")):
        dest = tmp_path / variant
        result = runner.invoke(
            app, ["export", str(trained.run_id), "--variant", variant, "--to", str(dest)]
        )
        assert result.exit_code == 0, result.output
        assert (dest / "README.md").is_file()
        if shape == "model":
            assert (dest / "config.json").is_file()
            out = probe(dest)
        else:
            out = probe(trained.base_model, dest)
        assert out["tokens"] > 0, (variant, out)
    card = (tmp_path / "q8" / "README.md").read_text()
    assert "## What quantization cost" in card and "`q8` against `fused`" in card
    # best: the checkpoint the run's `best` eval chose by adherence.
    with session_scope() as session:
        best = session.exec(select(Stage).where(
            Stage.run_id == trained.run_id, Stage.variant == "best")).one()  # fmt: skip
    iteration = int(best.params["iteration"])
    dest = tmp_path / "best"
    result = runner.invoke(app, ["export", str(trained.run_id), "--variant", "best",
                                 "--to", str(dest)])  # fmt: skip
    assert result.exit_code == 0, result.output
    checkpoint = trained.adapter_dir / f"{iteration:07d}_adapters.safetensors"
    assert (dest / "adapters.safetensors").read_bytes() == checkpoint.read_bytes()
    assert f"checkpoint at iteration {iteration}" in (dest / "README.md").read_text()
    assert probe(trained.base_model, dest)["tokens"] > 0


def test_a_changed_byte_is_refused_by_checksum(trained: Trained, tmp_path: Path) -> None:
    weights = trained.adapter_dir / "adapters.safetensors"
    original = weights.read_bytes()
    flipped = bytearray(original)
    flipped[-1] ^= 0xFF
    weights.write_bytes(bytes(flipped))
    try:
        dest = tmp_path / "out"
        result = runner.invoke(app, ["export", str(trained.run_id), "--to", str(dest)])
        assert result.exit_code == 2
        assert "adapters.safetensors has changed" in result.stderr and "sha256" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not dest.exists() and not list(tmp_path.glob(".out.export-*"))
    finally:
        weights.write_bytes(original)
    checkpoint = trained.adapter_dir / "0000006_adapters.safetensors"
    original = checkpoint.read_bytes()
    checkpoint.write_bytes(original[:-1] + bytes([original[-1] ^ 0x01]))
    try:
        result = runner.invoke(app, ["export", str(trained.run_id), "--variant",
                                     "ckpt-0000006", "--to", str(tmp_path / "ck")])  # fmt: skip
        assert result.exit_code == 2
        assert str(checkpoint) in result.stderr
    finally:
        checkpoint.write_bytes(original)


def test_a_folder_that_is_not_empty_is_not_written_into(trained: Trained, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    result = runner.invoke(app, ["export", str(trained.run_id), "--to", str(tmp_path)])
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_an_artifact_on_another_worker_names_it(trained: Trained, tmp_path: Path) -> None:
    with session_scope() as session:
        far = Artifact(run_id=trained.run_id, kind="fused", variant="fused", host="mac-far",
                       path="/Users/far/.farm/artifacts/run-1/fused", sha256="0" * 64)  # fmt: skip
        session.add(far)
    try:
        result = runner.invoke(app, ["export", str(trained.run_id), "--variant", "fused",
                                     "--to", str(tmp_path / "fused")])  # fmt: skip
        assert result.exit_code == 2
        line = result.stderr.strip()
        assert "mac-far" in line and "FARM_SHARED_ARTIFACTS" in line
        assert "no worker is running" in line and len(result.stderr.strip().splitlines()) == 1
        with session_scope() as session:  # refused before asking: no export stage
            assert not session.exec(select(Stage).where(Stage.kind == "export")).all()
        assert not (tmp_path / "fused").exists()
        # The same folder seen through FARM_SHARED_ARTIFACTS is read from there.
        with session_scope() as session:
            fused = session.exec(select(Artifact).where(
                Artifact.run_id == trained.run_id, Artifact.kind == "fused",
                Artifact.host != "mac-far")).one()  # fmt: skip
            session.get(Artifact, far.id).sha256 = fused.sha256  # type: ignore[union-attr]
        env = {**os.environ, "FARM_SHARED_ARTIFACTS": str(trained.home / "artifacts")}
        out = subprocess.run(
            [sys.executable, "-m", "tools.cli", "export", str(trained.run_id), "--variant",
             "fused", "--to", str(tmp_path / "shared")],
            capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT, env=env,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "shared" / "model.safetensors").is_file()
    finally:
        with session_scope() as session:
            session.delete(session.get(Artifact, far.id))


def test_the_worker_holding_the_files_exports_them_through_the_database(
    trained: Trained, tmp_path: Path
) -> None:
    pool = Workers(trained.home)
    pool.start("w1")  # the worker whose own disk holds the run's artifacts
    try:
        # Asked before it beats, the farm would rightly say no worker runs there.
        wait_until(lambda: "Listening on" in pool.log("w1"), timeout=120, what="w1 up")
        dest = tmp_path / "via"
        result = runner.invoke(
            app, ["export", str(trained.run_id), "--via-worker", "--to", str(dest)]
        )
        assert result.exit_code == 0, result.output
        with session_scope() as session:
            stage = session.exec(select(Stage).where(Stage.kind == "export")).one()
            made = session.exec(select(ExportFile).where(ExportFile.stage_id == stage.id)).one()
            run = session.get(Run, trained.run_id)
            assert run is not None and run.status == "done"
        assert run.host == host_id(trained.home)  # the Mac's disk, not the worker's name
        assert (stage.status, stage.worker) == ("done", "w1")
        assert stage.queue == host_queue_name(run.host, 0)  # the spec asks for no memory
        assert stage.progress == stage.total == made.chunks >= 1
        assert (dest / "adapters.safetensors").read_bytes() == (
            trained.adapter_dir / "adapters.safetensors"
        ).read_bytes()
        assert (dest / "README.md").read_text().startswith("---\n")
        assert probe(trained.base_model, dest)["tokens"] > 0
        # A piece altered in the database is caught by the zip's sha256.
        with session_scope() as session:
            pieces = select(ExportChunk).where(ExportChunk.export_id == made.id)
            piece = session.exec(pieces).first()
            assert piece is not None
            piece.data = piece.data[:-1] + bytes([piece.data[-1] ^ 0x01])
        with session_scope() as session, pytest.raises(ExportRefused, match="sha256"):
            read_zip(session, stage.id or 0)

        # A file changed on the worker's disk fails the export stage, not the run.
        weights = trained.adapter_dir / "adapters.safetensors"
        original = weights.read_bytes()
        weights.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
        try:
            result = runner.invoke(
                app, ["export", str(trained.run_id), "--via-worker", "--to", str(tmp_path / "x")]
            )
        finally:
            weights.write_bytes(original)
        assert result.exit_code == 2, result.output
        assert "adapters.safetensors has changed" in result.stderr
        assert not (tmp_path / "x").exists()
        with session_scope() as session:
            failed = session.exec(
                select(Stage).where(Stage.kind == "export", Stage.status == "failed")
            ).one()
            run = session.get(Run, trained.run_id)
            assert run is not None and run.status == "done"
            assert failed.variant == "adapter"
    finally:
        pool.stop_all()


def test_lmstudio_gets_whole_models_and_gguf_says_what_mlx_lm_converts(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "lmstudio-models"
    monkeypatch.setenv("FARM_LMSTUDIO_MODELS", str(models))
    result = runner.invoke(
        app, ["export", str(trained.run_id), "--variant", "q8", "--to", "lmstudio"]
    )
    assert result.exit_code == 0, result.output
    (folder,) = (models / "lorafarm").iterdir()
    assert folder.name.endswith("-seed1-q8-mlx") and (folder / "config.json").is_file()
    assert probe(folder)["tokens"] > 0
    # An adapter is not a model LM Studio opens: refused, nothing written.
    result = runner.invoke(app, ["export", str(trained.run_id), "--to", "lmstudio"])
    assert result.exit_code == 2 and "LM Studio opens whole models" in result.stderr
    assert len(list((models / "lorafarm").iterdir())) == 1
    # GGUF: mlx-lm converts llama, mistral and mixtral; the tiny model is a qwen3.
    for variant, why in (("fused", "this one is qwen3"), ("q8", "unquantized weights only")):
        dest = tmp_path / f"gguf-{variant}"
        result = runner.invoke(app, ["export", str(trained.run_id), "--variant", variant,
                                     "--gguf", "--to", str(dest)])  # fmt: skip
        assert result.exit_code == 2, result.output
        assert (
            why in result.stderr
            and "llama, mistral, mixtral" in result.stderr
            or (variant == "q8" and why in result.stderr)
        )
        assert not dest.exists() and not list(tmp_path.glob(f".gguf-{variant}.export-*"))


def test_publish_dry_run_lists_the_files(trained: Trained) -> None:
    result = runner.invoke(
        app, ["publish", str(trained.run_id), "--repo", "someone/tiny-lora", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    for name in ("README.md", "adapters.safetensors", "adapter_config.json", "curves.png"):
        assert name in result.output
    assert "KB" in result.output or " B" in result.output
    with session_scope() as session:
        assert session.exec(select(func.count()).select_from(Publication)).one() == 0


def test_publish_without_a_hub_or_a_token_fails_in_one_line(
    trained: Trained, tmp_path: Path
) -> None:
    token = "hf_notarealtokenbutsecret"
    env = {**os.environ, "HF_TOKEN": token, "HF_HOME": str(tmp_path / "hf"),
           "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "tools.cli", "publish", str(trained.run_id), "--repo", "me/tiny"],
        capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT, env=env,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "nothing was published" in out.stderr
    assert token not in out.stdout + out.stderr
    env = {k: v for k, v in env.items() if k != "HF_TOKEN"}
    out = subprocess.run(
        [sys.executable, "-m", "tools.cli", "publish", str(trained.run_id), "--repo", "me/tiny"],
        capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT, env=env,
    )  # fmt: skip
    assert out.returncode == 2 and "no Hugging Face token" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    with session_scope() as session:
        assert session.exec(select(func.count()).select_from(Publication)).one() == 0


def test_the_card_matches_the_database(trained: Trained, tmp_path: Path) -> None:
    from jobs.datasets import dataset_digest
    from jobs.db import EvalResult, Metric
    from jobs.stats import mean_interval

    dest = tmp_path / "q8"
    result = runner.invoke(app, ["export", str(trained.run_id), "--variant", "q8",
                                 "--to", str(dest)])  # fmt: skip
    assert result.exit_code == 0, result.output
    card = (dest / "README.md").read_text()
    with session_scope() as session:
        evals = session.exec(
            select(Run.id, Run.seed, Stage).join(Stage, Stage.run_id == Run.id)
            .where(Stage.kind == "eval", Stage.status == "done")
        ).all()  # fmt: skip
        train = session.exec(
            select(Stage).where(Stage.run_id == trained.run_id, Stage.kind == "train")
        ).one()
        rows = session.exec(
            select(Run.seed, EvalResult.prompt_id, EvalResult.score)
            .join(Stage, Stage.id == EvalResult.stage_id).join(Run, Run.id == Stage.run_id)
            .where(Stage.variant == "q8")
        ).all()  # fmt: skip
        iterations = set(session.exec(select(Metric.iteration).where(
            Metric.run_id == trained.run_id)))  # fmt: skip
    adherence = {(rid, s.variant): s.adherence for rid, _, s in evals}
    mine = next(s for rid, _, s in evals if rid == trained.run_id and s.variant == "q8")
    assert f"scored **{100 * mine.adherence:.1f}%** on the {mine.n_prompts}-prompt suite" in card
    seeds = {seed: s.adherence for _, seed, s in evals if s.variant == "q8"}
    interval = mean_interval(list(seeds.values()))
    assert f"**{100 * interval.mean:.1f}%** mean adherence" in card
    assert f"[{100 * interval.low:.1f}%, {100 * interval.high:.1f}%] over 2 seeds" in card
    mix: dict[str, int] = {}
    for _, _, s in evals:
        if s.variant == "q8":
            for label, n in (s.label_counts or {}).items():
                mix[label] = mix.get(label, 0) + n
    for label, n in mix.items():
        assert f"| {label} | {n} | {100 * n / sum(mix.values()):.1f}% |" in card
    runs = {rid for rid, _ in adherence}
    lost = {r: 100 * (adherence[(r, "q8")] - adherence[(r, "fused")]) for r in runs}
    assert f"in the same run: {lost[trained.run_id]:+.1f} points" in card
    assert f"{sum(lost.values()) / len(lost):+.1f} points on average" in card
    by_prompt: dict[str, dict[int, bool]] = {}
    for seed, prompt_id, score in rows:
        by_prompt.setdefault(prompt_id, {})[seed] = score >= 1.0
    fragile = [p for p, s in by_prompt.items() if 0 < sum(s.values()) < len(s)]
    for prompt_id in fragile[:10]:
        assert f"| {prompt_id} | 1/2 |" in card
    if not fragile:
        assert "Seed-fragile prompts" not in card
    assert f"Final validation loss: {train.val_loss:.4f}" in card
    data = PROJECT_ROOT / "data" / "datasets" / "code_mode"
    counts = {s: sum(1 for line in (data / f"{s}.jsonl").open() if line.strip())
              for s in ("train", "valid", "test") if (data / f"{s}.jsonl").is_file()}  # fmt: skip
    assert f"sha256 `{dataset_digest(data)}`, {sum(counts.values())} rows" in card
    assert "the run's config fingerprint matches" in card
    assert "base_model" not in card.split("---")[1]  # a local folder is no Hub id
    assert f"- base model: `{trained.base_model}`" in card
    csv_iterations = {int(line.split(",")[0]) for line in
                      (dest / "curves.csv").read_text().splitlines()[1:]}  # fmt: skip
    assert iterations <= csv_iterations
    assert (dest / "curves.png").read_bytes().startswith(b"\x89PNG")
    respec = (dest / "lorafarm-spec.yaml").read_text()
    check = runner.invoke(app, ["submit", str(dest / "lorafarm-spec.yaml"), "--dry-run"])
    assert check.exit_code == 0, check.output
    assert "seeds:\n- 1\n" in respec
