"""The loss and adherence curves of a model card, as CSV and as a PNG.

Drawn with Pillow (already installed with Streamlit), not a plotting library:
altair needs a renderer the farm does not ship to write a PNG, and two line
charts do not justify one more dependency on every Mac. Pure: rows in, bytes out.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence

from PIL import Image, ImageDraw

from ship.card import CurveRow

WIDTH, PANEL, MARGIN = 720, 240, 48
COLORS = {"train": (160, 160, 160), "val": (31, 119, 180), "adherence": (214, 39, 40),
          "probe": (255, 127, 14)}  # fmt: skip


def curves_csv(rows: Sequence[CurveRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["iteration", "train_loss", "val_loss", "adherence", "probe_adherence"])
    for r in rows:
        values = (r.train_loss, r.val_loss, r.adherence, r.probe_adherence)
        writer.writerow([r.iteration, *("" if v is None else f"{v:.6g}" for v in values)])
    return out.getvalue()


def _series(rows: Sequence[CurveRow], get: Callable[[CurveRow], float | None]):  # type: ignore[no-untyped-def]
    return [(r.iteration, v) for r in rows if (v := get(r)) is not None]


def _panel(
    draw: ImageDraw.ImageDraw,
    top: int,
    title: str,
    span: tuple[int, int],
    lines: list[tuple[str, list[tuple[int, float]]]],
    fixed: tuple[float, float] | None,
) -> None:
    left, right, bottom = MARGIN, WIDTH - 16, top + PANEL - 28
    values = [v for _, pts in lines for _, v in pts]
    low, high = fixed or ((min(values), max(values)) if values else (0.0, 1.0))
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    draw.rectangle((left, top + 20, right, bottom), outline=(200, 200, 200))
    draw.text((left, top + 4), title, fill=(0, 0, 0))
    draw.text((4, top + 20), f"{high:.3g}", fill=(90, 90, 90))
    draw.text((4, bottom - 10), f"{low:.3g}", fill=(90, 90, 90))
    draw.text((left, bottom + 4), str(span[0]), fill=(90, 90, 90))
    draw.text((right - 40, bottom + 4), str(span[1]), fill=(90, 90, 90))
    width = max(span[1] - span[0], 1)

    def xy(point: tuple[int, float]) -> tuple[float, float]:
        x = left + (point[0] - span[0]) / width * (right - left)
        y = bottom - (point[1] - low) / (high - low) * (bottom - top - 20)
        return x, y

    if not values:
        note = "not measured during training (eval.checkpoints, train.adherence_probe)"
        draw.text((left + 12, (top + bottom) // 2), note, fill=(120, 120, 120))
    legend = left + 200
    for name, pts in lines:
        if not pts:
            continue
        color = COLORS[name]
        coords = [xy(p) for p in pts]
        if len(coords) > 1:
            draw.line(coords, fill=color, width=2)
        for x, y in coords:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=color)
        draw.text((legend, top + 4), name, fill=color)
        legend += 80


def curves_png(rows: Sequence[CurveRow]) -> bytes:
    """Two panels over the same iterations: the losses, then the adherence."""
    image = Image.new("RGB", (WIDTH, 2 * PANEL), "white")
    draw = ImageDraw.Draw(image)
    its = [r.iteration for r in rows] or [0, 1]
    span = (min(its), max(its))
    _panel(draw, 0, "loss by iteration", span,
           [("train", _series(rows, lambda r: r.train_loss)),
            ("val", _series(rows, lambda r: r.val_loss))], None)  # fmt: skip
    _panel(draw, PANEL, "adherence by iteration", span,
           [("adherence", _series(rows, lambda r: r.adherence)),
            ("probe", _series(rows, lambda r: r.probe_adherence))], (0.0, 1.0))  # fmt: skip
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
