"""Helpers for the web tests: run the real app in AppTest, read its element tree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

from tests.support.spec_files import make_dataset, make_model_dir, make_suite

PROJECT_ROOT = Path(__file__).resolve().parents[2]
APP = str(PROJECT_ROOT / "web" / "app.py")
RUN = "views/run.py"  # the run page


def open_page(page: str | None = None, **query: str) -> AppTest:
    """The app, on `page` (e.g. "views/submit.py"), with query parameters."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    if page is not None:
        at.switch_page(page)
    if query:
        at.query_params.update(query)
    if page is not None or query:
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def flatten(node: Any) -> list[Any]:
    """Every element under `node`, in page order."""
    out = []
    for child in node.children.values():
        if hasattr(child, "children") and not hasattr(child, "value"):
            out.extend(flatten(child))
        else:
            out.append(child)
    return out


def messages_after(at: AppTest, key: str) -> list[str]:
    """The st.error messages right below the widget with `key` (up to the next widget)."""
    elements = flatten(at.main)
    index = next(i for i, e in enumerate(elements) if getattr(e, "key", None) == key)
    out = []
    for element in elements[index + 1 :]:
        if element.type == "alert" or type(element).__name__ == "Error":
            out.append(shown(element.value))
            continue
        break
    return out


def shown(markdown: str) -> str:
    """What a reader sees of markdown that text from data was escaped into: the
    escapes (`\\[`, `\\<`, …) drop out."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")


def texts(at: AppTest) -> str:
    """All text the page shows (markdown, captions, alerts, titles), one string."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "success",
                 "error", "warning"):  # fmt: skip
        parts.extend(shown(str(e.value)) for e in getattr(at, kind))
    return "\n".join(parts)


def install_model(farm_home: Path, model: Path) -> Path:
    """Put a model where the form's model picker finds it (FARM_HOME/models)."""
    models = farm_home / "models"
    models.mkdir(parents=True, exist_ok=True)
    link = models / model.name
    link.symlink_to(model, target_is_directory=True)
    return link


def quick_form(model: Path, **overrides: Any) -> dict[str, Any]:
    """Form values for a small valid experiment on the tiny model."""
    from web import forms

    values = forms.default_form(str(model))
    values.update({"name": "quick", "seeds": "1-2", "train.iters": 12, "train.num_layers": -1,
                   "train.batch_size": 2, "quantize": ["q8"]})  # fmt: skip
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return values


def workspace(root: Path) -> dict[str, object]:
    """Form values for a spec over a fake model, dataset and suite under `root`."""
    from web import forms

    model = make_model_dir(root)
    dataset = make_dataset(root)
    suite = make_suite(root)
    values = forms.default_form(str(model))
    values.update({"dataset": str(dataset), "eval.suite": str(suite), "train.num_layers": 4,
                   "train.batch_size": 2})  # fmt: skip
    return values
