"""The farm's dataset verdict agrees with mlx-lm's own, case by case.

For each case a small dataset folder is built, and two verdicts are taken:

* the farm's: what `farm submit` decides (spec validation, then the preflight
  checks): refused if either reports an error, else accepted (with warnings);
* mlx-lm's: its own `load_dataset` and two iterations of its own `train` on a
  LoRA-wrapped tiny model, run in a child process per case (a failed compiled
  training step leaves MLX unusable for the next run in the same process):
  it trains if both finish with a finite loss, it fails if anything raises.

Both are compared with each other and with the expected outcome. Nothing is
downloaded: the tiny model is built locally (conftest `tiny_model`).

Run as a script (`python tests/test_dataset_agreement.py JOBS.json`, or `--one
JOB` for a single case), this file is mlx-lm's side: it prints one JSON verdict
per case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "data" / "evals" / "code_mode.yaml"
TRAIN_ITERS = 2
MAX_SEQ_LENGTH = 64
VERDICT = "mlx-lm verdict: "  # marks the child process's answer lines


# --------------------------------------------------------------------------- cases


def jsonl(*rows: Any) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def chat(*turns: tuple[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


GOOD = chat(("user", "List the files."), ("assistant", "a.py b.py"))
GOOD_VALID = chat(("user", "Hello"), ("assistant", "Hi there"))
NO_REPLY = chat(("system", "You are terse."), ("user", "List the files."))
BOT_TURN = chat(("user", "List the files."), ("bot", "zzz"), ("assistant", "a.py"))


@dataclass(frozen=True)
class Case:
    """A dataset folder, the knobs it is trained with, and the expected outcome."""

    id: str
    files: dict[str, str | bytes]
    trains: bool  # what mlx-lm does (and so what the farm must decide)
    warning: str = ""  # accepted with a warning containing this
    batch_size: int = 1
    mask_prompt: bool = False


def case(id: str, train: str | bytes, valid: str | bytes | None = None, **kw: Any) -> Case:
    files: dict[str, str | bytes] = {"train.jsonl": train}
    if valid is not None:
        files["valid.jsonl"] = valid
    if "test" in kw:
        files["test.jsonl"] = kw.pop("test")
    return Case(id, files, **kw)


TWO = jsonl(GOOD, GOOD)
VALID = jsonl(GOOD_VALID)

CASES = [
    # The baseline: every other case changes one thing.
    case("good", TWO, VALID, trains=True),
    case("crlf_line_endings", TWO.replace("\n", "\r\n"), VALID, trains=True),
    case("no_final_newline", TWO.rstrip("\n"), VALID, trains=True),
    # What mlx-lm's loader refuses.
    case("bom", "\ufeff" + TWO, VALID, trains=False),
    case("blank_line", jsonl(GOOD) + "\n" + jsonl(GOOD), VALID, trains=False),
    case("blank_line_at_end_of_valid", TWO, VALID + "\n", trains=False),
    case("not_utf8", jsonl(GOOD).encode() + b'{"text": "caf\xe9"}\n', VALID, trains=False),
    case("empty_train", "", VALID, trains=False),
    case("empty_valid", TWO, "", trains=False),
    case("empty_test", TWO, VALID, test="", trains=False),
    case("broken_json_in_test", TWO, VALID, test=jsonl(GOOD) + "{oops\n", trains=False),
    case("non_object_first_row", jsonl([1, 2], GOOD), VALID, trains=False),
    case("non_object_row", jsonl(GOOD, [1, 2]), VALID, trains=False),
    case("first_row_without_format", jsonl({"input": "x"}, GOOD), VALID, trains=False),
    case("test_first_row_without_format", TWO, VALID, test=jsonl({"q": 1}), trains=False),
    case("mixed_formats_in_train", jsonl(GOOD, {"text": "plain"}), VALID, trains=False),
    case("mixed_formats_in_valid", TWO, jsonl(GOOD_VALID, {"text": "x"}), trains=False),
    case(
        "fewer_train_rows_than_batch_size",
        jsonl(GOOD),
        jsonl(GOOD, GOOD),
        trains=False,
        batch_size=2,
    ),
    case("fewer_valid_rows_than_batch_size", TWO, VALID, trains=False, batch_size=2),
    case("messages_not_a_list", jsonl(GOOD, {"messages": "hi"}), VALID, trains=False),
    case(
        "message_not_an_object",
        jsonl(GOOD, {"messages": [1, *GOOD["messages"]]}),
        VALID,
        trains=False,
    ),
    case("tools_not_a_list", jsonl(GOOD, {**GOOD, "tools": "ls"}), VALID, trains=False),
    case(
        "content_the_template_cannot_render",
        jsonl(GOOD, chat(("user", 5), ("assistant", "x"))),
        VALID,
        trains=False,
    ),
    case("every_message_dropped", jsonl(chat(("bot", "zzz"))), VALID, trains=False),
    case(
        "text_valid_with_mask_prompt", TWO, jsonl({"text": "hello"}), trains=False, mask_prompt=True
    ),
    case(
        "one_message_with_mask_prompt",
        jsonl(chat(("user", "hi")), GOOD),
        VALID,
        trains=False,
        mask_prompt=True,
    ),
    # What mlx-lm trains on, and the farm accepts saying what will happen.
    case("no_valid_jsonl", TWO, None, trains=True, warning="no validation loss will be reported"),
    case(
        "valid_in_text_format",
        TWO,
        jsonl({"text": "hello there"}),
        trains=True,
        warning="valid.jsonl is 'text' format",
    ),
    case(
        "valid_in_completions_format",
        TWO,
        jsonl({"prompt": "a", "completion": "b"}),
        trains=True,
        warning="valid.jsonl is 'completions' format",
    ),
    case(
        "bad_rows_in_test",
        TWO,
        VALID,
        test=jsonl(GOOD, {"text": 5}, {"q": 1}, [1]),
        trains=True,
        warning="never reads test.jsonl",
    ),
    case(
        "message_the_template_drops",
        jsonl(BOT_TURN, GOOD),
        VALID,
        trains=True,
        warning="drops messages[1] (role 'bot')",
    ),
    case(
        "no_assistant_turn_mask_prompt_off",
        jsonl(NO_REPLY, GOOD),
        VALID,
        trains=True,
        warning="no assistant message",
    ),
    case(
        "no_assistant_turn_mask_prompt_on",
        jsonl(NO_REPLY, GOOD),
        VALID,
        trains=True,
        warning="trains only on the last message",
        mask_prompt=True,
    ),
    case(
        "chat_row_with_completion_keys_too",
        jsonl(GOOD, {**GOOD, "prompt": "p", "completion": "c"}),
        VALID,
        trains=True,
    ),
    case(
        "completion_a_number_the_template_renders",
        jsonl({"prompt": "a", "completion": 5}, {"prompt": "a", "completion": "b"}),
        jsonl({"prompt": "c", "completion": "d"}),
        trains=True,
    ),
]


def build(root: Path, c: Case) -> Path:
    folder = root / c.id
    folder.mkdir(parents=True)
    for name, content in c.files.items():
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


# --------------------------------------------------------------------------- the farm's verdict


def write_spec(path: Path, model: Path, data: Path, c: Case) -> Path:
    import yaml

    train = {
        "iters": TRAIN_ITERS,
        "batch_size": c.batch_size,
        "mask_prompt": c.mask_prompt,
        "num_layers": -1,
        "max_seq_length": MAX_SEQ_LENGTH,
        "lora": {"rank": 2, "scale": 10.0},
    }
    spec = {
        "name": f"agree-{c.id}".replace("_", "-"),
        "base_model": str(model),
        "dataset": str(data),
        "seeds": [1, 2, 3],
        "train": train,
        "eval": {"suite": str(SUITE), "variants": ["adapter"]},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def farm_verdict(spec_path: Path) -> tuple[bool, list[str], list[str]]:
    """(accepted, errors, warnings) as `farm submit` decides them."""
    from jobs.checks import preflight
    from jobs.experiment_spec import load_spec
    from jobs.problems import InputError

    try:
        spec = load_spec(spec_path)
    except InputError as exc:
        return False, [str(p) for p in exc.problems], []
    findings = preflight(spec, spec_path)
    errors = [f.render() for f in findings if f.severity == "error"]
    warnings = [f.render() for f in findings if f.severity == "warning"]
    return not errors, errors, warnings


# --------------------------------------------------------------------------- mlx-lm's verdict


def mlx_lm_trains(model_dir: str, data: str, batch_size: int, mask_prompt: bool) -> dict[str, Any]:
    """mlx-lm's own loader and trainer on one dataset folder (in this process)."""
    import types

    import mlx.core as mx
    import mlx.optimizers as optim
    import numpy as np
    from mlx_lm.tuner.datasets import CacheDataset, load_dataset
    from mlx_lm.tuner.trainer import TrainingArgs, train
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    class Losses:
        def __init__(self) -> None:
            self.train: list[float] = []

        def on_train_loss_report(self, info: dict[str, Any]) -> None:
            self.train.append(float(info["train_loss"]))

        def on_val_loss_report(self, info: dict[str, Any]) -> None:
            pass

    mx.random.seed(0)
    np.random.seed(0)
    model, tokenizer = load(model_dir)
    args = types.SimpleNamespace(data=data, train=True, test=False, mask_prompt=mask_prompt)
    train_set, valid_set, _ = load_dataset(args, tokenizer)
    model.freeze()
    linear_to_lora_layers(model, -1, {"rank": 2, "scale": 10.0, "dropout": 0.0})
    losses = Losses()
    train(
        model,
        optim.Adam(learning_rate=1e-4),
        CacheDataset(train_set),
        CacheDataset(valid_set),
        TrainingArgs(
            batch_size=batch_size,
            iters=TRAIN_ITERS,
            steps_per_report=1,
            max_seq_length=MAX_SEQ_LENGTH,
            adapter_file=str(Path(data).parent / f"{Path(data).name}.safetensors"),
        ),
        training_callback=losses,
    )
    finite = bool(losses.train) and all(np.isfinite(losses.train))
    return {"trains": finite, "error": "" if finite else f"train losses {losses.train}"}


def _verdict_here(job: dict[str, Any], model_dir: str) -> dict[str, Any]:
    try:
        return mlx_lm_trains(model_dir, job["data"], job["batch_size"], job["mask_prompt"])
    except BaseException as exc:  # noqa: BLE001 - whatever mlx-lm raises is its verdict
        return {"trains": False, "error": f"{type(exc).__name__}: {exc}"[:300]}


def _in_forked_child(job: dict[str, Any], model_dir: str) -> dict[str, Any]:
    """Fork, run one case in the child, and read its verdict back through a pipe."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        os.write(write_fd, json.dumps(_verdict_here(job, model_dir)).encode())
        os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        return {"trains": False, "error": f"the child died (wait status {status})"}
    return json.loads(b"".join(chunks))


def _in_new_process(job: dict[str, Any], model_dir: str) -> dict[str, Any]:
    """Slower: a fresh interpreter per case, for macOS, where forking after MLX has
    loaded Metal is not safe."""
    one = json.dumps({"model": model_dir, "job": job})
    done = subprocess.run(
        [sys.executable, __file__, "--one", one], capture_output=True, text=True, check=False
    )
    answers = [x for x in done.stdout.splitlines() if x.startswith(VERDICT)]
    if not answers:
        return {"trains": False, "error": f"exit {done.returncode}: {done.stderr[-300:]}"}
    return json.loads(answers[-1].removeprefix(VERDICT))


def main(argv: list[str]) -> None:
    import contextlib

    if argv[0] == "--one":
        one = json.loads(argv[1])
        with contextlib.redirect_stdout(sys.stderr):  # mlx-lm's progress output
            verdict = _verdict_here(one["job"], one["model"])
        print(VERDICT + json.dumps(verdict), flush=True)
        return
    spec = json.loads(Path(argv[0]).read_text())
    isolated = _in_forked_child if sys.platform == "linux" else _in_new_process
    # Imported once here, so each forked case starts warm.
    import mlx_lm.tuner.trainer  # noqa: F401
    import transformers  # noqa: F401

    for job in spec["jobs"]:
        with contextlib.redirect_stdout(sys.stderr):
            verdict = isolated(job, spec["model"])
        print(VERDICT + json.dumps({"id": job["id"], **verdict}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)


# --------------------------------------------------------------------------- tests

import pytest  # noqa: E402

from jobs.checks import DATA_LOADING  # noqa: E402
from jobs.datasets import MB, Line, iter_lines, parse_line, scan_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def case_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("agreement")
    for c in CASES:
        build(root / "data", c)
    return root


@pytest.fixture(scope="module")
def mlx_lm_verdicts(case_root: Path, tiny_model: Path) -> dict[str, dict[str, Any]]:
    """mlx-lm's verdict on every case, from one child process (one fork per case)."""
    jobs = [
        {
            "id": c.id,
            "data": str(case_root / "data" / c.id),
            "batch_size": c.batch_size,
            "mask_prompt": c.mask_prompt,
        }
        for c in CASES
    ]
    jobs_file = case_root / "jobs.json"
    jobs_file.write_text(json.dumps({"model": str(tiny_model), "jobs": jobs}))
    done = subprocess.run(
        [sys.executable, str(Path(__file__)), str(jobs_file)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    verdicts = [json.loads(x.removeprefix(VERDICT)) for x in lines if x.startswith(VERDICT)]
    return {v["id"]: v for v in verdicts}


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_the_farm_agrees_with_mlx_lm(
    c: Case, case_root: Path, tiny_model: Path, mlx_lm_verdicts: dict[str, dict[str, Any]]
) -> None:
    mlx_lm = mlx_lm_verdicts[c.id]
    spec = write_spec(case_root / f"{c.id}.yaml", tiny_model, case_root / "data" / c.id, c)
    accepted, errors, warnings = farm_verdict(spec)

    assert mlx_lm["trains"] is c.trains, f"mlx-lm: {mlx_lm}"  # the case is what it claims
    assert accepted is mlx_lm["trains"], f"farm errors: {errors}; mlx-lm: {mlx_lm}"
    loading = [w for w in warnings if f"[{DATA_LOADING}]" in w]
    if c.warning:
        assert any(c.warning in w for w in warnings), warnings
    elif accepted:
        assert loading == [], loading  # nothing to say about data mlx-lm reads as meant


def test_a_50_mb_line_is_refused_quickly_in_bounded_memory(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    with train.open("wb") as fh:
        fh.write(json.dumps({"text": "ok"}).encode() + b"\n")
        fh.write(b'{"text": "' + b"a" * (50 * MB) + b'"}\n')
        fh.write(json.dumps({"text": "ok"}).encode() + b"\n")
    tracemalloc.start()
    started = time.perf_counter()
    report = scan_jsonl(train)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert [str(p) for p in report.problems] == [f"{train}:2: line is 50 MB, at most 8 MB"]
    assert report.rows == 3
    assert peak < 12 * MB, f"peak {peak / MB:.1f} MB"
    assert elapsed < 5, f"{elapsed:.1f} s"


def test_the_cli_refuses_a_long_line_with_exit_2(tmp_path: Path, tiny_model: Path) -> None:
    from typer.testing import CliRunner

    from tools.cli import app

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_bytes(
        jsonl(GOOD).encode() + b'{"text": "' + b"a" * (9 * MB) + b'"}\n'
    )
    (data / "valid.jsonl").write_text(VALID)
    spec = write_spec(tmp_path / "spec.yaml", tiny_model, data, case("long", "", trains=False))
    result = CliRunner().invoke(app, ["check", str(spec)])
    assert result.exit_code == 2, result.output
    assert f"{data / 'train.jsonl'}:2: line is 9 MB, at most 8 MB" in result.output


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 1 << 20])
def test_lines_split_like_python_text_mode(tmp_path: Path, chunk_size: int) -> None:
    raw = b'{"a": 1}\r\n{"b": 2}\r{"c": 3}\n\n  \r\n{"d": 4}'
    path = tmp_path / "f.jsonl"
    path.write_bytes(raw)
    with path.open(encoding="utf-8") as fh:  # how mlx-lm reads it
        expected = [line.rstrip("\r\n").encode() for line in fh]
    with path.open("rb") as fh:
        got = [line.data for line in iter_lines(fh, chunk_size=chunk_size)]
    assert got == expected


@pytest.mark.parametrize(
    ("size", "shown"), [(50 * MB + 12, "50"), (9 * MB + 30, "9"), (8 * MB + 1, "8.001")]
)
def test_a_long_line_is_never_shown_as_the_limit(size: int, shown: str) -> None:
    _, error = parse_line(Line(1, None, size))
    assert error == f"line is {shown} MB, at most 8 MB"
