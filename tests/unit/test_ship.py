"""The pure parts of shipping: the recorded digest, where artifacts are looked
for, which artifacts an export takes, the model card and its curves."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobs.db import Artifact
from jobs.stats import FragilePrompt, mean_interval
from ship.card import CardData, CurveRow, render_card
from ship.curves import curves_csv, curves_png
from ship.digest import artifact_digest
from ship.files import candidates, verify
from ship.sources import ExportRefused, Source, exportable, plan_export
from worker.context import sha256_of


def test_the_digest_is_the_one_the_worker_records(tmp_path: Path) -> None:
    folder = tmp_path / "fused"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 9000)
    (folder / "sub" / "b.txt").write_text("b")
    whole = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "sub/b.txt"):
        whole.update(name.encode() + (folder / name).read_bytes())
    digest = artifact_digest(folder)
    assert digest.sha256 == whole.hexdigest() == sha256_of(folder)
    assert digest.files["sub/b.txt"] == hashlib.sha256(b"b").hexdigest()
    one = folder / "config.json"
    assert artifact_digest(one).sha256 == hashlib.sha256(b"{}").hexdigest() == sha256_of(one)


def test_a_refusal_names_the_file_by_its_recorded_digest(tmp_path: Path) -> None:
    folder = tmp_path / "run-1" / "fused"
    folder.mkdir(parents=True)
    for name in ("a.json", "b.safetensors", "c.txt"):
        (folder / name).write_text(name)
    digest = artifact_digest(folder)
    source = Source(1, "fused", "fused", str(folder), "w1", digest.sha256,
                    datetime(2999, 1, 1, tzinfo=UTC), file_sha256=digest.files)  # fmt: skip
    assert verify(source, folder, 1) == digest
    (folder / "b.safetensors").write_text("B")  # changed, though not "after" 2999
    with pytest.raises(ExportRefused, match=r"fused/b.safetensors: the fused model of run 1 "
                       r"no longer matches .*\(b.safetensors has changed\)"):  # fmt: skip
        verify(source, folder, 1)
    (folder / "c.txt").unlink()
    (folder / "d.txt").write_text("d")
    with pytest.raises(ExportRefused, match="c.txt is gone; d.txt was added"):
        verify(source, folder, 1)


def test_an_artifact_is_looked_for_where_written_then_under_each_root() -> None:
    found = candidates("/Users/a/.farm/artifacts/run-7/fused", 7, [Path("/shared")])
    assert found == [Path("/Users/a/.farm/artifacts/run-7/fused"), Path("/shared/run-7/fused")]
    assert candidates("/elsewhere/fused", 7, [Path("/shared")]) == [Path("/elsewhere/fused")]


def artifact(kind: str, variant: str, iteration: int | None = None, id: int = 1) -> Artifact:
    path = f"/f/run-1/adapter/{iteration:07d}_adapters.safetensors" if iteration else "/f/run-1/x"
    return Artifact(id=id, run_id=1, kind=kind, variant=variant, iteration=iteration,
                    path=path, host="w1", sha256="a" * 64)  # fmt: skip


ARTIFACTS = [
    artifact("adapter", "adapter"),
    artifact("checkpoint", "ckpt-0000003", 3, 2),
    artifact("checkpoint", "ckpt-0000006", 6, 3),
    artifact("fused", "fused", id=4),
    artifact("quantized", "q8", id=5),
    artifact("fused", "fused", id=9),  # a retried fuse: the newest is exported
]


def test_which_artifacts_an_export_takes() -> None:
    assert exportable(ARTIFACTS, 6) == ["adapter", "best", "ckpt-0000003", "ckpt-0000006",
                                        "fused", "q8"]  # fmt: skip
    assert "best" not in exportable(ARTIFACTS, None)  # no checkpoint scored yet
    plan = plan_export(1, "best", "base", ARTIFACTS, best_iteration=6)
    assert plan.shape == "adapter" and plan.iteration == 6
    weights, config = plan.sources
    assert weights.files == (("0000006_adapters.safetensors", "adapters.safetensors"),)
    assert config.files == (("adapter_config.json", "adapter_config.json"),)
    fused = plan_export(1, "fused", "base", ARTIFACTS, None)
    assert fused.shape == "model" and fused.sources[0].artifact_id == 9
    with pytest.raises(ExportRefused, match=r"run 1 has no q4 model \(it can export: adapter,"):
        plan_export(1, "q4", "base", ARTIFACTS, None)
    with pytest.raises(ExportRefused, match="no best checkpoint"):
        plan_export(1, "best", "base", ARTIFACTS, None)


def card(**overrides: object) -> CardData:
    values: dict[str, object] = dict(
        run_id=3, seed=2, experiment_id=1, experiment_name="code-mode", fingerprint="abcd" * 4,
        variant="q4", shape="model", base_model="org/base", iteration=None, suite="s.yaml",
        adherence=0.5, n_prompts=4, seed_scores={1: 0.75, 2: 0.5},
        interval=mean_interval([0.75, 0.5]), label_mix={"execute_code": 5, "prose": 3},
        twin="fused", points_lost=-25.0, mean_points_lost=-12.5,
        fragile=[FragilePrompt("p1", 1, 2, {1: "execute_code", 2: "prose"})],
        final_val_loss=1.25, spec_yaml="name: code-mode\nseeds: [2]\n",
        spec_file="lorafarm-spec.yaml", dataset="/d", dataset_digest="f" * 64,
        dataset_rows={"train": 10, "valid": 3}, dataset_matches=True,
        versions={"mlx-lm": "0.32.2", "mlx": "0.30", "lorafarm": "0.1.0"},
        curve_files=["curves.png", "curves.csv"],
    )  # fmt: skip
    values.update(overrides)
    return CardData(**values)  # type: ignore[arg-type]


def test_the_card_says_what_the_data_says() -> None:
    text = render_card(card())
    head = text.split("---")[1]
    assert 'base_model: "org/base"' in head and "library_name: mlx" in head
    assert "- lora\n- mlx\n- lorafarm" in head and "license" not in head
    assert "**62.5%** mean adherence" in text and "(1: 75.0%, 2: 50.0%)" in text
    assert "| execute_code | 5 | 62.5% |" in text
    assert "`q4` against `fused` in the same run: -25.0 points" in text and "-12.5" in text
    assert "| p1 | 1/2 | 1: execute_code, 2: prose |" in text
    assert "13 rows (train 10, valid 3)" in text and "farm submit lorafarm-spec.yaml" in text
    assert "![validation loss and adherence by iteration](curves.png)" in text
    assert 'license: "apache-2.0"' in render_card(card(license="apache-2.0"))
    local = render_card(card(base_model="/Users/me/models/base")).split("---")[1]
    assert "base_model" not in local and "library_name: mlx" in local
    adapter = render_card(card(shape="adapter", variant="adapter", twin=None, points_lost=None))
    assert "What quantization cost" not in adapter and "adapter_path=" in adapter


def test_curves_as_csv_and_png() -> None:
    rows = [
        CurveRow(2, train_loss=3.0),
        CurveRow(3, val_loss=2.5, adherence=0.25),
        CurveRow(6, train_loss=2.0, val_loss=2.0, adherence=0.5, probe_adherence=0.5),
    ]
    assert curves_csv(rows).splitlines()[2] == "3,,2.5,0.25,"
    png = curves_png(rows)
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert curves_png([]).startswith(b"\x89PNG")


def test_a_naive_recorded_time_is_utc(tmp_path: Path) -> None:
    from ship.files import changed_since

    (tmp_path / "a").write_text("a")
    assert changed_since(tmp_path, datetime(2000, 1, 1)) == ["a"]
    assert changed_since(tmp_path, datetime(2999, 1, 1, tzinfo=UTC)) == []


def test_the_license_is_the_base_models_own(tmp_path: Path) -> None:
    from ship.card_data import base_license

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert base_license(str(model)) is None
    (model / "README.md").write_text("---\nlicense: apache-2.0\ntags: [x]\n---\n# Model\n")
    assert base_license(str(model)) == "apache-2.0"
    (model / "README.md").write_text("# no front matter\nlicense: mit\n")
    (model / "config.json").write_text('{"license": "mit"}')
    assert base_license(str(model)) == "mit"
