"""Where the submit form finds models, datasets and suites to offer: walks of
data/ and FARM_HOME, bounded in depth and skipping per-run folders."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy import func
from sqlmodel import Session, select

from jobs import settings
from jobs.db import Experiment
from web.forms import DATA_DIR, display_path


def _walk(root: Path, depth: int, skip: frozenset[str]) -> Iterable[Path]:
    if depth < 0 or not root.is_dir():
        return
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(".") or entry.name in skip:
            continue
        yield entry
        if entry.is_dir() and not entry.is_symlink():
            yield from _walk(entry, depth - 1, skip)


# FARM_HOME holds per-run artifacts (100,000s of folders at scale): never walk those.
_SKIP = frozenset({"artifacts", "logs", "redis", "models", "__pycache__", "node_modules"})


def search_roots() -> list[Path]:
    roots = [DATA_DIR, settings.farm_home()]
    return [r for r in dict.fromkeys(roots) if r.is_dir()]


def find_datasets(roots: Sequence[Path] | None = None, depth: int = 3) -> list[str]:
    """Folders holding train.jsonl and valid.jsonl under data/ and FARM_HOME."""
    found = []
    for root in roots if roots is not None else search_roots():
        for path in [root, *_walk(root, depth, _SKIP)]:
            if path.is_dir() and (path / "train.jsonl").is_file():
                if (path / "valid.jsonl").is_file():
                    found.append(display_path(path))
    return list(dict.fromkeys(found))


def find_suites(roots: Sequence[Path] | None = None, depth: int = 3) -> list[str]:
    """Eval suite YAML files (a top-level `prompts:` key) under data/ and FARM_HOME."""
    found = []
    for root in roots if roots is not None else search_roots():
        for path in _walk(root, depth, _SKIP):
            if path.suffix in (".yaml", ".yml") and path.is_file():
                if path.stat().st_size < 2_000_000 and _has_prompts(path):
                    found.append(display_path(path))
    return list(dict.fromkeys(found))


def _has_prompts(path: Path) -> bool:
    try:
        return re.search(r"(?m)^prompts:", path.read_text(encoding="utf-8")) is not None
    except (OSError, UnicodeDecodeError):
        return False


def find_models(session: Session | None = None, limit: int = 20) -> list[str]:
    """Local model folders under FARM_HOME/models, then base models used before."""
    found: list[str] = []
    models = settings.farm_home() / "models"
    if models.is_dir():
        for path in sorted(models.iterdir()):
            if (path / "config.json").is_file():
                found.append(str(path))
    if session is not None:
        recent = session.exec(
            select(Experiment.base_model)
            .group_by(Experiment.base_model)
            .order_by(func.max(Experiment.id).desc())
            .limit(limit)
        ).all()
        found.extend(recent)
    return list(dict.fromkeys(found))
