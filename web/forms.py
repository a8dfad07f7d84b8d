"""The submit form's logic: form fields ⇄ spec mapping ⇄ YAML, validated like `farm submit`.

The web form is a flat mapping `{field key: value}` whose keys are the spec's
dotted paths ("train.lora.rank"); `FIELDS` describes each one (widget kind,
default, help). `form_to_spec_dict` builds the nested spec mapping, and
`check_form` runs the very validation `farm submit` runs (`parse_spec`, then
the preflight checks) and files every problem under the form field it belongs
to, so the page can show it right below that widget.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel
from sqlmodel import Session, select

from jobs import limits
from jobs.checks import Finding, ensure_quant_twin, preflight
from jobs.dag import plan_run
from jobs.db import Experiment, Run
from jobs.experiment_spec import (
    DEFAULT_GROUP_SIZE,
    OPTIMIZER_KWARGS,
    QUANT_BITS,
    QUANT_GROUP_SIZES,
    SCHEDULES,
    EvalSpec,
    ExperimentSpec,
    FuseSpec,
    LoraParams,
    LrSchedule,
    Resources,
    TrainSpec,
    config_fingerprint,
    default_variants,
    read_yaml,
    variant_name,
)
from jobs.experiment_spec.sweep import parse_sweep
from jobs.problems import InputError, Problem
from jobs.submit import SweepPlan, plan_sweep
from web import probe_inputs, sweep_inputs
from web.seed_ranges import format_seeds, parse_seeds
from web.spec_yaml import spec_dict_to_yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / "data"
FORM_SOURCE = "form"
MAX_SEEDS = limits.MAX_SEEDS
NO_SCHEDULE = "(none)"
GENERAL = ""  # problems that belong to no single field
# The quota's submitter for the form: one UI password, no user names, one submitter.
WEB_SUBMITTER = "web"

Kind = Literal["text", "path", "int", "float", "bool", "select", "multiselect", "seeds", "list",
               "mapping", "sweep"]  # fmt: skip


@dataclass(frozen=True)
class FormField:
    key: str  # the spec's dotted path; "fuse.enabled" stands for `fuse: null` vs a mapping
    label: str
    kind: Kind
    default: Any
    help: str
    section: str
    options: tuple[Any, ...] = ()


# A field's default when it is the spec model's: read from the model (below),
# never restated here, so the form cannot drift from `farm submit`.
FROM_SPEC: Any = object()
# The spec model behind each section of form keys.
_SECTION_MODELS: dict[str, type[BaseModel]] = {
    "train": TrainSpec,
    "train.lora": LoraParams,
    "train.lr_schedule": LrSchedule,
    "fuse": FuseSpec,
    "eval": EvalSpec,
    "resources": Resources,
}


def spec_default(key: str) -> Any:
    """The spec model's default for a form key ("train.iters" -> TrainSpec's 1000)."""
    section, _, name = key.rpartition(".")
    model = _SECTION_MODELS[section]
    field = next(f for n, f in model.model_fields.items() if name in (n, f.alias))
    return field.get_default(call_default_factory=True)


def spec_options(key: str) -> tuple[Any, ...]:
    """The choices of a form key whose spec field is a Literal (or a list of one)."""
    section, _, name = key.rpartition(".")
    model = _SECTION_MODELS[section]
    annotation = next(f for n, f in model.model_fields.items() if name in (n, f.alias)).annotation
    if get_origin(annotation) is list:
        (annotation,) = get_args(annotation)
    return get_args(annotation)


def _quant_options() -> tuple[str, ...]:
    """Affine q8…q2 (group size 64, then the others), the float modes, the recipes."""
    from jobs.experiment_spec.options import (
        FLOAT_MODES,
        QUANT_RECIPES,
    )  # imported here: see _quantize_entry

    bits = sorted(QUANT_BITS, reverse=True)
    default = [variant_name(b) for b in bits]
    other = [variant_name(b, g) for g in QUANT_GROUP_SIZES if g != DEFAULT_GROUP_SIZE for b in bits]
    floats = sorted(FLOAT_MODES, key=lambda m: (-FLOAT_MODES[m][0], m))  # mxfp8 first
    recipes = sorted(QUANT_RECIPES, reverse=True)  # mixed_4_6 … mixed_2_6
    return tuple(default + other + floats + recipes)


QUANT_OPTIONS = _quant_options()

SECTIONS = ("Experiment", "Training", "LoRA", "Learning-rate schedule", probe_inputs.SECTION,
            "Fuse and quantize", "Eval", "Resources", sweep_inputs.SECTION)  # fmt: skip

_FIELDS: tuple[FormField, ...] = (
    FormField("name", "Name", "text", "my-experiment",
              "A short id: letters, digits, '.', '_' and '-'. Runs pool on the leaderboard by "
              "config fingerprint, not by name.", "Experiment"),
    FormField("base_model", "Base model", "path", "",
              "A local mlx-lm model folder, or a Hugging Face id like "
              "mlx-community/Qwen3-0.6B-4bit (the worker downloads it).", "Experiment"),
    FormField("dataset", "Dataset", "path", "data/datasets/code_mode",
              "A folder with train.jsonl and valid.jsonl (chat, tools, completions or text "
              "rows). Relative paths are under the project folder.", "Experiment"),
    FormField("seeds", "Seeds", "seeds", "1-3",
              "One run per seed. A list and ranges: `1, 2, 3`, `1-5`, `1-5, 8`. Format "
              "adherence varies a lot from seed to seed; use at least 3.", "Experiment"),
    FormField("train.iters", "Iterations", "int", FROM_SPEC, "Training steps.", "Training"),
    FormField("train.batch_size", "Batch size", "int", FROM_SPEC,
              "Rows per step; each split needs at least this many rows.", "Training"),
    FormField("train.learning_rate", "Learning rate", "float", FROM_SPEC,
              "Adam's step size. Ignored when a learning-rate schedule is set (its first "
              "argument is the initial rate).", "Training"),
    FormField("train.num_layers", "Layers to adapt", "int", FROM_SPEC,
              "How many of the last transformer layers get adapters; -1 for all.", "Training"),
    FormField("train.fine_tune_type", "Fine-tune type", "select", FROM_SPEC,
              "lora and dora train small adapters; full trains every weight.", "Training",
              spec_options("train.fine_tune_type")),
    FormField("train.optimizer", "Optimizer", "select", FROM_SPEC,
              "mlx.optimizers class used for training.", "Training", tuple(OPTIMIZER_KWARGS)),
    FormField("train.optimizer_config", "Optimizer options", "mapping", "",
              "Keyword arguments of the optimizer as a YAML mapping, e.g. "
              "`{weight_decay: 0.01}` for adamw. Empty for its defaults.", "Training"),
    FormField("train.mask_prompt", "Mask the prompt", "bool", FROM_SPEC,
              "Compute the loss on the completion only (chat, tools or completions data).",
              "Training"),
    FormField("train.grad_accumulation_steps", "Gradient accumulation", "int", FROM_SPEC,
              "Steps whose gradients add up before one update (a larger effective batch).",
              "Training"),
    FormField("train.grad_checkpoint", "Gradient checkpointing", "bool", FROM_SPEC,
              "Trade compute for memory on long sequences.", "Training"),
    FormField("train.max_seq_length", "Max sequence length", "int", FROM_SPEC,
              "Longer rows are truncated, in tokens.", "Training"),
    FormField("train.save_every", "Save every", "int", FROM_SPEC,
              "Steps between adapter checkpoints (evaluated when checkpoint evals are on).",
              "Training"),
    FormField("train.steps_per_report", "Steps per report", "int", FROM_SPEC,
              "Steps between training-loss reports (the progress bar and the loss curve).",
              "Training"),
    FormField("train.steps_per_eval", "Steps per validation", "int", FROM_SPEC,
              "Steps between validation-loss measurements.", "Training"),
    FormField("train.val_batches", "Validation batches", "int", FROM_SPEC,
              "Batches per validation; -1 for the whole validation set.", "Training"),
    FormField("train.lora.rank", "Rank", "int", FROM_SPEC, "LoRA rank: adapter capacity.", "LoRA"),
    FormField("train.lora.scale", "Scale", "float", FROM_SPEC,
              "mlx-lm's LoRA scale (other tools call a related knob 'alpha').", "LoRA"),
    FormField("train.lora.dropout", "Dropout", "float", FROM_SPEC, "Adapter dropout, 0 to < 1.",
              "LoRA"),
    FormField("train.lora.keys", "Target modules", "list", "",
              "Comma-separated module keys, e.g. `self_attn.q_proj, self_attn.v_proj`. Empty "
              "for mlx-lm's default for the model.", "LoRA"),
    FormField("train.lr_schedule.name", "Schedule", "select", NO_SCHEDULE,
              "mlx-lm learning-rate schedule; (none) keeps the rate constant.",
              "Learning-rate schedule", (NO_SCHEDULE, *SCHEDULES)),
    FormField("train.lr_schedule.arguments", "Arguments", "list", "",
              "Comma-separated, initial rate first: "
              + "; ".join(f"{k}({v[3]})" for k, v in SCHEDULES.items()),
              "Learning-rate schedule"),
    FormField("train.lr_schedule.warmup", "Warmup steps", "int", FROM_SPEC,
              "Linear warmup steps before the schedule.", "Learning-rate schedule"),
    FormField("train.lr_schedule.warmup_init", "Warmup start rate", "float", FROM_SPEC,
              "Learning rate at step 0 of the warmup.", "Learning-rate schedule"),
    FormField("fuse.enabled", "Fuse the adapter", "bool", True,
              "Fuse the adapter into the base weights (needed for the fused and quantized "
              "variants).", "Fuse and quantize"),
    FormField("fuse.dequantize", "Dequantize to f16 when fusing", "bool", FROM_SPEC,
              "Fuse into de-quantized f16 weights. Fusing straight into 4-bit weights can "
              "silently erase a LoRA adapter.", "Fuse and quantize"),
    FormField("fuse.from", "Fuse from", "select", FROM_SPEC,
              "final: the last adapter; best: the checkpoint with the best format adherence "
              "(needs checkpoint evals).", "Fuse and quantize", spec_options("fuse.from")),
    FormField("quantize", "Quantized variants", "multiselect", ["q8", "q4"],
              "Each is quantized from the fused f16 model and evaluated. qN is N bits with "
              "group size 64; gNN another group size. Below 5 bits adapters often lose "
              "their signal.", "Fuse and quantize", QUANT_OPTIONS),
    FormField("eval.suite", "Eval suite", "path", "data/evals/code_mode.yaml",
              "The suite YAML: prompts, expected tool calls, generation settings.", "Eval"),
    FormField("eval.variants", "Variants to evaluate", "multiselect",
              FROM_SPEC,
              "base: the model without adapter; adapter; fused; quantized: every quantized "
              "variant.", "Eval", spec_options("eval.variants")),
    FormField("eval.checkpoints", "Evaluate checkpoints", "bool", FROM_SPEC,
              "Evaluate every saved checkpoint, to pick the best by adherence rather than by "
              "validation loss.", "Eval"),
    FormField("eval.checkpoint_prompts", "Checkpoint prompts", "list", "",
              "Comma-separated prompt ids for checkpoint evals; empty for the whole suite.",
              "Eval"),
    FormField("eval.max_tokens", "Max tokens", "int", 0,
              "Generation limit per prompt; 0 uses the suite's own.", "Eval"),
    FormField("resources.min_memory_gb", "Min memory (GB)", "float", FROM_SPEC,
              "Only workers with at least this much memory take the training stage.",
              "Resources"),
    FormField("resources.timeout_hours", "Timeout (hours)", "float", FROM_SPEC,
              "A training stage running longer is stopped.", "Resources"),
    FormField("train.workers", "Workers per run", "int", FROM_SPEC,
              "Workers that train each run together, data-parallel on MLX's ring backend; "
              "each takes batch size / workers rows of every batch and needs the min memory. "
              "1 trains on one worker.", "Resources"),
    # Several values in one text field make a grid (web.sweep_inputs).
    *(FormField(key, label, kind, default, text, probe_inputs.SECTION)  # type: ignore[arg-type]
      for key, label, kind, default, text in probe_inputs.INPUTS),
    *(FormField(sweep_inputs.PREFIX + path, label, "sweep", "", sweep_inputs.help_text(path),
                sweep_inputs.SECTION) for path, label in sweep_inputs.KNOBS),
)  # fmt: skip
FIELDS = tuple(
    replace(f, default=spec_default(f.key)) if f.default is FROM_SPEC else f for f in _FIELDS
)
FIELDS_BY_KEY = {f.key: f for f in FIELDS}
# A problem about a whole section lands on the field that switches it.
_SECTION_FIELDS = {"fuse": "fuse.enabled", "train.lr_schedule": "train.lr_schedule.name"}


def fields_in(section: str) -> list[FormField]:
    return [f for f in FIELDS if f.section == section]


# ------------------------------------------------------------ form → spec dict


def default_form(base_model: str = "") -> dict[str, Any]:
    values = {f.key: list(f.default) if isinstance(f.default, list) else f.default for f in FIELDS}
    if base_model:
        values["base_model"] = base_model
    return values


def _split_list(text: str) -> list[str]:
    return [p.strip() for p in str(text or "").split(",") if p.strip()]


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


def form_to_spec_dict(values: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """The nested spec mapping for form values, and the problems of fields the form
    itself parses (seeds, lists, the optimizer mapping). A field that does not parse
    gets a placeholder so the spec validation still checks everything else."""
    merged = {**default_form(), **values}
    problems: list[Problem] = []

    def problem(key: str, message: str) -> None:
        problems.append(Problem(FORM_SOURCE, message, None, key))

    data: dict[str, Any] = {}
    for f in FIELDS:
        value = merged[f.key]
        if f.key.startswith(("fuse.", "train.lr_schedule.", "quantize", sweep_inputs.PREFIX,
                             probe_inputs.PREFIX)):  # fmt: skip
            continue  # sections assembled below
        if f.kind == "seeds":
            try:
                value = parse_seeds(str(value))
            except ValueError as exc:
                problem(f.key, str(exc))
                value = [0]
        elif f.kind == "list":
            value = _split_list(value) or None
        elif f.kind == "mapping":
            value = _parse_mapping(f.key, str(value or ""), problem)
        elif f.kind in ("text", "path"):
            value = str(value or "").strip()
        if value is None or (f.key == "eval.max_tokens" and value == 0):
            continue  # left out: the spec's default applies
        _set(data, f.key, value)

    if merged["fuse.enabled"]:
        data["fuse"] = {"dequantize": bool(merged["fuse.dequantize"]), "from": merged["fuse.from"]}
    else:
        data["fuse"] = None
    data["quantize"] = [_quantize_entry(v) for v in merged["quantize"]]
    schedule = merged["train.lr_schedule.name"]
    if schedule and schedule != NO_SCHEDULE:
        arguments: list[float] = []
        for text in _split_list(merged["train.lr_schedule.arguments"]):
            try:
                arguments.append(float(text))
            except ValueError:
                problem("train.lr_schedule.arguments", f"'{text}' is not a number")
        data["train"]["lr_schedule"] = {
            "name": schedule,
            "arguments": arguments or [float(merged["train.learning_rate"])],
            "warmup": merged["train.lr_schedule.warmup"],
            "warmup_init": merged["train.lr_schedule.warmup_init"],
        }
        del data["train"]["learning_rate"]  # the schedule's first argument is the rate
    probe = probe_inputs.probe_from_form(merged)
    data["train"].update({"adherence_probe": probe} if probe else {})
    sweep, sweep_problems = sweep_inputs.sweep_from_form(merged)
    problems.extend(Problem(FORM_SOURCE, message, None, key) for key, message in sweep_problems)
    data.update({"sweep": sweep} if sweep else {})
    # Reorder the top level like the design's example spec.
    order = ["name", "base_model", "dataset", "seeds", "train", "fuse", "quantize", "eval",
             "resources", "sweep"]  # fmt: skip
    return {k: data[k] for k in order if k in data}, problems


def _parse_mapping(key: str, text: str, problem: Any) -> dict[str, Any] | None:
    if not text.strip():
        return None
    try:
        _, value = read_yaml(text, FORM_SOURCE)
    except limits.LimitError as exc:
        problem(key, exc.problems[0].message)
        return None
    except InputError:
        problem(key, "is not valid YAML — write a mapping like `{weight_decay: 0.01}`")
        return None
    if not isinstance(value, dict):
        problem(key, "must be a mapping like `{weight_decay: 0.01}`")
        return None
    return value


def _quantize_entry(variant: str) -> dict[str, int | str]:
    """A form choice as its spec entry: q4g32 -> {bits: 4, group_size: 32}, mxfp4 ->
    {mode: mxfp4} (the mode fixes bits and group size), mixed_3_6 -> {recipe: mixed_3_6}."""
    # The quantize options live in jobs.experiment_spec.options; imported here so the form's
    # shared import block stays as it is.
    from jobs.experiment_spec.options import FLOAT_MODES, QUANT_RECIPES

    if variant in FLOAT_MODES:
        return {"mode": variant}
    if variant in QUANT_RECIPES:
        return {"recipe": variant}
    match = re.fullmatch(r"q(\d+)(?:g(\d+))?", variant)
    if match is None:
        raise ValueError(f"not a quantize variant: {variant!r}")
    return {"bits": int(match.group(1)), "group_size": int(match.group(2) or DEFAULT_GROUP_SIZE)}


def form_to_yaml(values: Mapping[str, Any]) -> str:
    """The YAML equivalent of the form (what `farm submit` would read)."""
    return spec_dict_to_yaml(form_to_spec_dict(values)[0])


# ------------------------------------------------------------ spec dict → form


def display_path(path: str | Path) -> str:
    """Paths under the project folder are shown relative to it."""
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except (ValueError, OSError):
        return str(path)


def spec_dict_to_form(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Form values for a spec mapping (a stored spec, an uploaded YAML), and notes about
    what the form cannot hold. Missing keys keep the form's defaults."""
    values = default_form()
    notes: list[str] = []

    def get(key: str) -> tuple[bool, Any]:
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return False, None
            node = node[part]
        return True, node

    for f in FIELDS:
        if f.key.startswith(("fuse.", probe_inputs.PREFIX)) or f.key == "quantize":
            continue
        found, value = get(f.key)
        if not found or value is None:
            continue
        if f.kind == "seeds":
            value = format_seeds(value) if isinstance(value, list) else str(value)
        elif f.kind == "list":
            value = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        elif f.kind == "mapping":
            value = yaml.safe_dump(value, default_flow_style=True).strip() if value else ""
        elif f.kind == "path":
            value = display_path(str(value))
        values[f.key] = value

    if "fuse" in data:
        fuse = data["fuse"]
        values["fuse.enabled"] = fuse is not None
        if isinstance(fuse, Mapping):
            values["fuse.dequantize"] = fuse.get("dequantize", spec_default("fuse.dequantize"))
            values["fuse.from"] = fuse.get("from", fuse.get("from_", spec_default("fuse.from")))
    # A key the spec leaves out takes the spec's default, not the fresh form's suggestion.
    quantize = data.get("quantize", [])
    if isinstance(quantize, list):
        chosen = []
        for item in quantize:
            if isinstance(item, Mapping) and "bits" in item:
                name = variant_name(item["bits"], item.get("group_size", DEFAULT_GROUP_SIZE))
                if name in QUANT_OPTIONS:
                    chosen.append(name)
                    continue
            notes.append(f"quantize entry {item!r} is not one the form offers; left out")
        values["quantize"] = chosen
    ev = data.get("eval")
    if not (isinstance(ev, Mapping) and "variants" in ev):
        values["eval.variants"] = list(
            default_variants(bool(values["fuse.enabled"]), bool(values["quantize"]))
        )
    train = data.get("train")
    schedule = train.get("lr_schedule") if isinstance(train, Mapping) else None
    if isinstance(schedule, Mapping) and "learning_rate" not in train:
        arguments = schedule.get("arguments")
        if isinstance(arguments, list) and arguments:
            values["train.learning_rate"] = arguments[0]
    values.update(probe_inputs.probe_to_form(get("train.adherence_probe")[1]))
    sweep_texts, sweep_notes = sweep_inputs.sweep_to_form(data.get("sweep"))
    values.update(sweep_texts)
    notes.extend(sweep_notes)
    notes.extend(_unknown_keys({k: v for k, v in data.items() if k != "sweep"}))
    return values, notes


def _unknown_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    known = {f.key for f in FIELDS} | {"fuse", "quantize", "train.lr_schedule"}
    notes = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if path in known or path in ("fuse", "quantize"):
            continue
        if isinstance(value, Mapping) and any(k.startswith(path + ".") for k in known):
            notes.extend(_unknown_keys(value, path + "."))
        else:
            notes.append(f"'{path}' is not a field of the form; left out")
    return notes


def yaml_to_form(text: str) -> tuple[dict[str, Any], list[str]]:
    """Form values for an uploaded spec YAML; raises InputError when it is not a mapping
    (or breaks a limit: uploads read through the spec layer's bounded loader)."""
    _, data = read_yaml(text, "upload")
    if not isinstance(data, dict):
        raise InputError([Problem("upload", "a spec must be a YAML mapping (name:, seeds:, ...)")])
    return spec_dict_to_form(data)


def clone_run_form(session: Session, run_id: int) -> tuple[dict[str, Any], str] | None:
    """Form values prefilled from the experiment a run belongs to, and a description."""
    row = session.exec(
        select(Experiment, Run)
        .join(Run, Run.experiment_id == Experiment.id)
        .where(Run.id == run_id)
    ).first()
    if row is None:
        return None
    experiment, run = row
    values, _ = spec_dict_to_form(experiment.spec)
    return values, f"run {run_id} (seed {run.seed}) of experiment {experiment.id} {experiment.name}"


# ------------------------------------------------------------------ validation


@dataclass
class FormResult:
    yaml: str
    spec: ExperimentSpec | None = None
    problems: dict[str, list[str]] = field(default_factory=dict)  # form key → messages
    findings: list[Finding] = field(default_factory=list)
    fingerprint: str = ""
    stages_per_run: int = 0
    experiment_id: int | None = None
    plan: SweepPlan | None = None  # set for a sweep: its grid, planned and counted
    sweep_id: int | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return self.spec is not None and not self.problems and not self.errors

    def messages(self, key: str) -> list[str]:
        return self.problems.get(key, [])


def form_key_for(problem: Problem, spec_data: Mapping[str, Any]) -> str:
    """The form field a spec problem belongs to ('' when none)."""
    if problem.file != FORM_SOURCE:
        # A problem inside a file the spec points at (dataset rows, the suite).
        file = Path(problem.file)
        for key in ("dataset", "base_model"):
            root = spec_data.get(key)
            if isinstance(root, str) and root and _is_under(file, Path(root)):
                return key
        ev = spec_data.get("eval")
        suite = ev.get("suite") if isinstance(ev, Mapping) else None
        return "eval.suite" if isinstance(suite, str) and _is_under(file, Path(suite)) else ""
    path = re.sub(r"\[[^\]]*\]", "", problem.field)
    parts = path.split(".") if path else []
    while parts:
        candidate = ".".join(parts)
        if candidate in FIELDS_BY_KEY:
            return candidate
        if candidate in _SECTION_FIELDS:
            return _SECTION_FIELDS[candidate]
        parts.pop()
    return GENERAL


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError):
        return False


def _describe(problem: Problem) -> str:
    if problem.file == FORM_SOURCE:
        return problem.message
    where = problem.file if problem.line is None else f"{problem.file}:{problem.line}"
    return f"{where}: {problem.field + ': ' if problem.field else ''}{problem.message}"


def check_form(values: Mapping[str, Any], run_preflight: bool = True) -> FormResult:
    """Everything `farm submit` checks, in this process (`web.form_bounds.validate_form`
    decides when a big dataset is checked in a child instead)."""
    data, form_problems = form_to_spec_dict(values)
    text = spec_dict_to_yaml(data)
    result = FormResult(yaml=text)
    spec: ExperimentSpec | None = None
    plan: SweepPlan | None = None
    spec_problems: list[Problem] = []
    try:
        # The sweep's grid is checked and counted against the run limit as in `farm submit`.
        spec, grid = parse_sweep(text, source=FORM_SOURCE, base_dir=PROJECT_ROOT)
        plan = plan_sweep(spec, text, grid, FORM_SOURCE) if spec.sweep else None
    except InputError as exc:
        spec, spec_problems = None, exc.problems
    for problem in form_problems:
        result.problems.setdefault(problem.field, []).append(problem.message)
    parsed_by_form = set(result.problems)
    for problem in spec_problems:
        key = form_key_for(problem, data)
        if key in parsed_by_form:
            continue  # the placeholder's problem, not the user's
        messages = result.problems.setdefault(key, [])
        if _describe(problem) not in messages:
            messages.append(_describe(problem))
    if spec is None or result.problems:
        return result
    result.spec, result.plan = spec, plan
    if plan is None:
        result.fingerprint = config_fingerprint(spec)
    # Counted like `farm submit --dry-run`: on the spec that will run, with the
    # quantization twin the farm adds at submission.
    planned, _ = ensure_quant_twin(spec)
    result.stages_per_run = len(plan_run(planned))
    if run_preflight:
        result.findings = preflight(spec, None)
    return result
