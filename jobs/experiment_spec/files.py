"""The files behind a spec's paths: made absolute, then checked.

`resolve_path` decides where a relative path points (next to the spec, then
the current directory); `check_paths` rewrites the raw YAML mapping's paths to
absolute ones and, unless told not to, checks that the base model is an
mlx-lm model folder (or a Hugging Face id), the dataset loads the way mlx-lm
loads it, and the suite exists and holds the checkpoint prompts named.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from jobs.dataset_memo import checked_dataset
from jobs.experiment_spec.model import TrainSpec
from jobs.experiment_spec.words import Loc, dotted, is_int, suggest
from jobs.limits import MAX_SUITE_BYTES, file_size_problem
from jobs.problems import Problem

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")

_HF_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
_HF_ID_RE = re.compile(rf"{_HF_PART}/{_HF_PART}")  # the whole value: fullmatch


def resolve_path(value: str, base_dir: Path) -> Path:
    """Absolute path for `value`: as is when absolute, else under `base_dir` (the spec's
    folder) if it exists there, else under the current directory if it exists there,
    else under `base_dir` (so error messages name the place we looked first)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path.resolve()
    base = Path(base_dir).expanduser().resolve()
    for candidate in (base / path, Path.cwd() / path):
        if candidate.exists():
            return candidate.resolve()
    return (base / path).resolve()


def looks_like_hf_id(value: str) -> bool:
    return bool(_HF_ID_RE.fullmatch(value)) and ".." not in value and "--" not in value


def _path_like(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~", ".\\")) or "\\" in value or value in (".", "..")


def model_dir_problems(path: Path) -> tuple[list[str], dict[str, Any]]:
    """What keeps a folder from being an mlx-lm model folder, and its config.json."""
    problems: list[str] = []
    config: dict[str, Any] = {}
    config_file = path / "config.json"
    needs = "a model folder needs config.json, *.safetensors weights and tokenizer files"
    if not config_file.is_file():
        problems.append(f"{path} has no config.json — {needs}")
    else:
        try:
            loaded = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{config_file} is not valid JSON: {exc}")
        else:
            if not isinstance(loaded, dict) or "model_type" not in loaded:
                problems.append(
                    f"{config_file} has no 'model_type' — mlx-lm cannot tell the architecture"
                )
            if isinstance(loaded, dict):
                config = loaded
    if not any(p.is_file() for p in path.glob("*.safetensors")):
        problems.append(
            f"{path} has no *.safetensors weights — {needs} (convert with `mlx_lm.convert`)"
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        problems.append(f"{path} has no tokenizer ({', '.join(TOKENIZER_FILES)}) — {needs}")
    return problems, config


def _model_layers(config: Mapping[str, Any]) -> int | None:
    for holder in (config, config.get("text_config")):
        if isinstance(holder, Mapping) and is_int(holder.get("num_hidden_layers")):
            return int(holder["num_hidden_layers"])
    return None


def _suite_prompt_ids(path: Path) -> set[str] | None:
    """Prompt ids of a suite file, or None when it cannot be read (the suite loader
    reports those problems)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    prompts = doc.get("prompts") if isinstance(doc, dict) else None
    if not isinstance(prompts, list):
        return None
    return {str(p["id"]) for p in prompts if isinstance(p, dict) and "id" in p}


def check_paths(
    data: dict[str, Any],
    source: str,
    line_of: Callable[[Loc], int | None],
    base: Path,
    check_files: bool = True,
) -> list[Problem]:
    """Make the paths in a raw spec mapping absolute (in place, against `base`, the
    spec's folder) and, with `check_files`, report what is wrong with the files
    behind them, each problem at `line_of` its field."""
    return _Checker(data, source, line_of, base).run(check_files)


class _Checker:
    """Resolves paths in the raw YAML mapping (in place) and checks the files behind them."""

    def __init__(
        self, data: dict[str, Any], source: str, line_of: Callable[[Loc], int | None], base: Path
    ) -> None:
        self.data, self.source, self.line_of, self.base = data, source, line_of, base
        self.problems: list[Problem] = []

    def add(self, loc: Loc, message: str) -> None:
        self.problems.append(Problem(self.source, message, self.line_of(loc), dotted(loc)))

    def _train(self, key: str) -> Any:
        """A train knob as written, or the model's default when left out."""
        default = TrainSpec.model_fields[key].default
        train = self.data.get("train")
        return train.get(key, default) if isinstance(train, dict) else default

    def run(self, check_files: bool) -> list[Problem]:
        self.base_model(check_files)
        self.dataset(check_files)
        self.suite(check_files)
        return self.problems

    def base_model(self, check_files: bool) -> None:
        value = self.data.get("base_model")
        if not isinstance(value, str) or not value.strip() or self._nul(value, ("base_model",)):
            return
        path = resolve_path(value, self.base)
        if path.is_dir():
            self.data["base_model"] = str(path)
            if check_files:
                problems, config = model_dir_problems(path)
                for message in problems:
                    self.add(("base_model",), message)
                self._num_layers(config)
            return
        if looks_like_hf_id(value) and not _path_like(value):
            return  # a Hugging Face id; mlx-lm downloads it on the worker
        if not check_files:
            self.data["base_model"] = str(path)
        elif path.exists():
            self.add(
                ("base_model",),
                f"{path} is a file — base_model must be a model folder "
                "or a Hugging Face id like 'org/name'",
            )
        else:
            self.add(
                ("base_model",),
                f"no model folder at {path} (also looked in the current directory), and "
                f"{value!r} is not a Hugging Face id like 'mlx-community/Qwen3-0.6B-4bit'",
            )

    def _num_layers(self, config: Mapping[str, Any]) -> None:
        layers = _model_layers(config)
        requested = self._train("num_layers")
        if layers is None or not is_int(requested) or requested <= layers:
            return
        default = "" if "num_layers" in (self.data.get("train") or {}) else " (the default)"
        self.add(
            ("train", "num_layers"),
            f"{requested}{default} is more than the model's {layers} layers "
            f"(config.json num_hidden_layers) — use at most {layers}, or -1 for all",
        )

    def _nul(self, value: str, loc: Loc) -> bool:
        """A NUL byte cannot be in a path (the OS refuses it): say so rather than
        let the filesystem calls raise."""
        if "\x00" not in value:
            return False
        self.add(
            loc,
            f"contains a NUL byte (\\0) at character {value.index(chr(0)) + 1} — "
            "a path cannot hold one",
        )
        return True

    def _path(self, holder: dict[str, Any], key: str, loc: Loc) -> Path | None:
        value = holder.get(key)
        if not isinstance(value, str):
            return None
        if not value.strip():
            self.add(loc, "must not be empty")
            return None
        if self._nul(value, loc):
            return None
        path = resolve_path(value, self.base)
        holder[key] = str(path)
        return path

    def dataset(self, check_files: bool) -> None:
        path = self._path(self.data, "dataset", ("dataset",))
        if path is None or not check_files:
            return
        needs = "dataset must be a folder with train.jsonl (valid.jsonl and test.jsonl optional)"
        if not path.exists():
            self.add(
                ("dataset",),
                f"folder not found: {path} (relative paths are looked up next to the spec, then "
                f"in the current directory) — {needs}",
            )
            return
        if not path.is_dir():
            self.add(("dataset",), f"{path} is a file — {needs}")
            return
        # The files are checked as mlx-lm loads them with these knobs; its warnings
        # (no valid.jsonl, ...) are preflight findings, not problems.
        batch = self._train("batch_size")
        result = checked_dataset(
            path,
            batch if is_int(batch) and batch >= 1 else None,
            self._train("mask_prompt") is True,
        )
        self.problems.extend(result.problems)
        for loc, message in result.spec_problems:
            self.add(loc, message)

    def suite(self, check_files: bool) -> None:
        ev = self.data.get("eval")
        if not isinstance(ev, dict):
            return
        path = self._path(ev, "suite", ("eval", "suite"))
        if path is None or not check_files:
            return
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "not found"
            self.add(
                ("eval", "suite"),
                f"suite file {what}: {path} (relative paths are looked up next to the spec, "
                "then in the current directory)",
            )
            return
        too_big = file_size_problem("the suite file", path.stat().st_size, MAX_SUITE_BYTES)
        if too_big is not None:  # refused unread, as `jobs.suite.load_suite` refuses it
            self.add(("eval", "suite"), f"{path}: {too_big} — split the suite")
            return
        # Prompt ids the spec names: the checkpoint evals' and the probe's.
        train = self.data.get("train")
        probe = train.get("adherence_probe") if isinstance(train, dict) else None
        named = [
            (("eval", "checkpoint_prompts"), ev.get("checkpoint_prompts")),
            (
                ("train", "adherence_probe", "prompts"),
                probe.get("prompts") if isinstance(probe, dict) else None,
            ),
        ]
        if not any(isinstance(prompts, list) for _, prompts in named):
            return
        ids = _suite_prompt_ids(path)
        if ids is None:
            return
        for where, prompts in named:
            for i, pid in enumerate(prompts if isinstance(prompts, list) else []):
                if isinstance(pid, str) and pid not in ids:
                    self.add(
                        (*where, i),
                        f"prompt id '{pid}' is not in the suite {path.name}"
                        f"{suggest(pid, sorted(ids))}",
                    )


def report_to_problems(data: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """`train.report_to` names a tracker whose package is not installed here: mlx-lm
    would fail on it only once the run starts training."""
    train = data.get("train")
    trackers = train.get("report_to") if isinstance(train, Mapping) else None
    if not isinstance(trackers, list):
        return []
    out = []
    for name in trackers:
        if name in ("wandb", "swanlab") and importlib.util.find_spec(name) is None:
            out.append((("train", "report_to"),
                        f"{name} is not installed, so mlx-lm cannot report to it: `uv add {name}` "
                        "(on every worker too), or remove it from report_to"))  # fmt: skip
    return out
