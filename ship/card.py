"""The model card of an export, rendered from data: `render_card(CardData)` →
README.md text with Hugging Face model-card front matter.

Pure on purpose: every number on the card comes from `card_data.load_card_data`
(the farm's database), so a test can render a card and hold each number to the
rows it came from. The card leads with what the farm measures that a loss curve
hides: adherence across seeds with its interval, the labels, what quantization
cost, and the prompts that depend on the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.experiment_spec.model import is_local_model
from jobs.stats import FragilePrompt, Interval

TAGS = ("lora", "mlx", "lorafarm")
MAX_FRAGILE = 10  # the card lists the most evenly split ones


@dataclass(frozen=True)
class CurveRow:
    iteration: int
    train_loss: float | None = None
    val_loss: float | None = None
    adherence: float | None = None  # checkpoint eval
    probe_adherence: float | None = None  # adherence probe during training


@dataclass(frozen=True)
class CardData:
    run_id: int
    seed: int
    experiment_id: int
    experiment_name: str
    fingerprint: str
    variant: str  # as exported
    shape: str  # "adapter" or "model"
    base_model: str
    iteration: int | None
    suite: str
    adherence: float | None  # this run's, of the exported variant
    n_prompts: int | None
    seed_scores: dict[int, float]  # the config's, of this variant
    interval: Interval | None
    label_mix: dict[str, int]  # summed over the config's seeds
    twin: str | None  # what quantization / fusing is measured against
    points_lost: float | None  # this run: variant − twin, in points
    mean_points_lost: float | None  # mean over the config's runs
    fragile: list[FragilePrompt]
    final_val_loss: float | None
    spec_yaml: str  # the run's spec with its one seed: `farm submit` reproduces it
    spec_file: str  # its name in the export
    dataset: str
    dataset_digest: str | None
    dataset_rows: dict[str, int]
    dataset_matches: bool | None  # the dataset on disk is the one the run trained on
    versions: dict[str, str]  # mlx-lm, mlx, lorafarm
    curve_files: list[str] = field(default_factory=list)
    curve_rows: list[CurveRow] = field(default_factory=list)
    license: str | None = None


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def front_matter(data: CardData) -> str:
    """Hugging Face model-card metadata. `base_model` must name a Hub model: a
    base that is a local folder is named in the text instead."""
    lines = ["---"]
    if not is_local_model(data.base_model):
        lines.append(f"base_model: {_yaml_scalar(data.base_model)}")
    lines.append("library_name: mlx")
    if data.license:
        lines.append(f"license: {_yaml_scalar(data.license)}")
    lines.append("tags:")
    lines += [f"- {tag}" for tag in TAGS]
    lines.append("---")
    return "\n".join(lines)


def _yaml_scalar(text: str) -> str:
    # Quoted so a path or an id with ':' or '#' stays one string.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _adherence_section(data: CardData) -> list[str]:
    out = ["## Format adherence", ""]
    out.append(
        f"This run (seed {data.seed}) scored **{pct(data.adherence)}** on the "
        f"{data.n_prompts or 0}-prompt suite `{data.suite}`."
    )
    if data.interval is not None:
        i = data.interval
        seeds = ", ".join(f"{s}: {pct(v)}" for s, v in sorted(data.seed_scores.items()))
        out += [
            "",
            f"Across seeds, this configuration ({data.fingerprint}, variant `{data.variant}`) "
            f"scores **{pct(i.mean)}** mean adherence, 95% interval "
            f"[{pct(i.low)}, {pct(i.high)}] over {i.seeds} seed{'s' if i.seeds != 1 else ''} "
            f"({seeds}).",
        ]
        if i.seeds == 1:
            out.append("One seed says nothing about the spread: the interval is the whole scale.")
    if data.label_mix:
        total = sum(data.label_mix.values())
        out += ["", "| label | responses | share |", "|---|---:|---:|"]
        for label, count in sorted(data.label_mix.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"| {label} | {count} | {pct(count / total)} |")
    return out


def _quantization_section(data: CardData) -> list[str]:
    if data.twin is None or data.points_lost is None:
        return []
    mean = (
        ""
        if data.mean_points_lost is None
        else (f"; over the configuration's runs, {data.mean_points_lost:+.1f} points on average")
    )
    return [
        "## What quantization cost",
        "",
        f"`{data.variant}` against `{data.twin}` in the same run: "
        f"{data.points_lost:+.1f} points{mean}.",
    ]


def _fragile_section(data: CardData) -> list[str]:
    if not data.fragile:
        return []
    out = [
        "## Seed-fragile prompts",
        "",
        "Prompts some seeds of this configuration answered in the format and others did not:",
        "",
        "| prompt | right | labels by seed |",
        "|---|---:|---|",
    ]
    for f in data.fragile[:MAX_FRAGILE]:
        labels = ", ".join(f"{seed}: {label}" for seed, label in sorted(f.labels.items()))
        out.append(f"| {f.prompt_id} | {f.right}/{f.seeds} | {labels} |")
    if len(data.fragile) > MAX_FRAGILE:
        out.append(f"\n… and {len(data.fragile) - MAX_FRAGILE} more.")
    return out


def _curves_section(data: CardData) -> list[str]:
    out = ["## Training curves", ""]
    if data.final_val_loss is not None:
        out.append(f"Final validation loss: {data.final_val_loss:.4f} (shown, never the rank key).")
        out.append("")
    if "curves.png" in data.curve_files:
        out.append("![validation loss and adherence by iteration](curves.png)")
        out.append("")
    if "curves.csv" in data.curve_files:
        out.append("The points are in `curves.csv` (iteration, train and validation loss, "
                   "checkpoint and probe adherence).")  # fmt: skip
    return out


def _use_section(data: CardData) -> list[str]:
    if data.shape == "adapter":
        load = f'model, tokenizer = load("{data.base_model}", adapter_path="path/to/this/folder")'
    else:
        load = 'model, tokenizer = load("path/to/this/folder")'
    return [
        "## Use",
        "",
        "```python",
        "from mlx_lm import generate, load",
        "",
        load,
        'print(generate(model, tokenizer, prompt="…", max_tokens=100))',
        "```",
    ]


def _provenance_section(data: CardData) -> list[str]:
    rows = sum(data.dataset_rows.values())
    counts = ", ".join(f"{split} {n}" for split, n in data.dataset_rows.items())
    if data.dataset_matches is True:
        same = "the same bytes the run trained on (the run's config fingerprint matches)"
    elif data.dataset_matches is False:
        same = "the files as they are now: the run's config fingerprint no longer matches them"
    else:
        same = "not checked"
    digest = f"`{data.dataset_digest}`" if data.dataset_digest else "— (the folder is gone)"
    versions = ", ".join(f"{name} {v}" for name, v in data.versions.items() if v)
    what = (f"checkpoint at iteration {data.iteration}" if data.iteration is not None
            else f"`{data.variant}`")  # fmt: skip
    return [
        "## How it was made",
        "",
        f"- lorafarm experiment {data.experiment_id} `{data.experiment_name}`, run "
        f"{data.run_id}, seed {data.seed}; exported: {what}",
        f"- base model: `{data.base_model}`",
        f"- dataset: `{data.dataset}`, sha256 {digest}, {rows} rows ({counts}); {same}",
        f"- versions: {versions}",
        "",
        f"Reproduce the run (its spec, with this seed, is `{data.spec_file}` here):",
        "",
        "```sh",
        f"farm submit {data.spec_file}",
        "```",
        "",
        "### Config",
        "",
        "```yaml",
        data.spec_yaml.rstrip(),
        "```",
    ]


def render_card(data: CardData) -> str:
    title = f"{data.experiment_name} · seed {data.seed} · {data.variant}"
    kind = ("A LoRA adapter for" if data.shape == "adapter"
            else "A model fine-tuned with LoRA from")  # fmt: skip
    sections = [
        [front_matter(data), "", f"# {title}", "",
         f"{kind} `{data.base_model}`, trained and evaluated by lorafarm, which ranks "
         "configurations by format adherence across seeds rather than by validation loss."],
        _adherence_section(data),
        _quantization_section(data),
        _fragile_section(data),
        _curves_section(data),
        _use_section(data),
        _provenance_section(data),
    ]  # fmt: skip
    return "\n\n".join("\n".join(s) for s in sections if s).rstrip() + "\n"
