"""The spec layer's entry points: YAML text or a file in, a validated
`ExperimentSpec` out (every problem reported at once), and back to YAML.

`parse_spec` runs every check on the raw YAML mapping before pydantic sees it,
so one pass reports type errors, cross-field problems and missing files
together, each at the line of the key it is about.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from jobs import limits
from jobs.experiment_spec.cross_checks import cross_field_problems
from jobs.experiment_spec.files import check_paths, report_to_problems
from jobs.experiment_spec.messages import error_message
from jobs.experiment_spec.model import SKIP_CROSS_CHECKS, ExperimentSpec
from jobs.experiment_spec.words import Loc, dotted, got
from jobs.experiment_spec.yaml_source import duplicate_keys, line_locator, read_yaml
from jobs.problems import InputError, Problem


def parse_spec(
    text: str,
    source: str = "<spec>",
    base_dir: Path | None = None,
    check_files: bool = True,
) -> ExperimentSpec:
    """Parse and validate a YAML experiment spec; raise InputError with every problem.

    Relative paths resolve against `base_dir` (the spec's folder), then the current
    directory. `check_files=False` skips the filesystem checks (paths are still made
    absolute)."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    root, data = read_yaml(text, source)
    if root is None or data is None:
        raise InputError(
            [
                Problem(
                    source, "the spec is empty — see the experiment spec in docs/architecture.md", 1
                )
            ]
        )
    if not isinstance(data, dict):
        raise InputError(
            [
                Problem(
                    source,
                    "the spec must be a mapping of keys (name:, base_model:, ...), "
                    f"got {got(data)}",
                    root.start_mark.line + 1,
                )
            ]
        )
    located = line_locator(root)
    top = root.start_mark.line + 1

    def line_of(loc: Loc) -> int:
        return located(loc) or top  # a missing top-level key: the document's first line

    problems = duplicate_keys(root, source)
    problems.extend(check_paths(data, source, line_of, base, check_files))
    if check_files:  # what this machine has installed, as for the files it names
        problems.extend(Problem(source, m, line_of(loc), dotted(loc))
                        for loc, m in report_to_problems(data))  # fmt: skip

    spec: ExperimentSpec | None = None
    try:
        spec = ExperimentSpec.model_validate(data, context={SKIP_CROSS_CHECKS: True})
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if err["type"] == "invalid_key" and loc:
                loc = (*loc[:-1], str(loc[-1]))  # a mapping key, not a list index
            problems.append(Problem(source, error_message(err), line_of(loc), dotted(loc)))
    for loc, message in cross_field_problems(data):
        problems.append(Problem(source, message, line_of(loc), dotted(loc)))

    if problems or spec is None:
        unique = list(dict.fromkeys(problems))
        unique.sort(key=lambda p: (p.file != source, p.line or 0))
        raise InputError(unique)
    return spec


def load_spec(path: Path, check_files: bool = True) -> ExperimentSpec:
    """Read and parse a spec file; relative paths in it resolve against its folder."""
    path = Path(path)
    text = spec_file_text(path)
    return parse_spec(text, source=str(path), base_dir=path.parent, check_files=check_files)


def spec_file_text(path: Path) -> str:
    """`read_spec_file`, with a missing or unreadable file as an input problem."""
    try:
        return read_spec_file(path)
    except FileNotFoundError:
        raise InputError([Problem(str(path), "spec file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError([Problem(str(path), f"cannot read spec file: {exc}")]) from None


def read_spec_file(path: Path) -> str:
    """A spec file's text; refuses one over MAX_SPEC_BYTES before decoding or parsing
    it. Reads at most one byte past the limit, so a huge file (or /dev/zero) costs
    nothing."""
    with open(path, "rb") as handle:
        raw = handle.read(limits.MAX_SPEC_BYTES + 1)
    if len(raw) > limits.MAX_SPEC_BYTES:
        size = max(_file_size(path), len(raw))
        raise limits.LimitError([Problem(str(path), limits.spec_size_problem(size) or "")])
    return raw.decode("utf-8")


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def spec_to_yaml(spec: ExperimentSpec) -> str:
    """The spec as YAML (absolute paths, every knob explicit); parse_spec reads it back
    into an equal spec."""
    data = spec.model_dump(mode="json", by_alias=True)
    schedule = spec.train.lr_schedule
    if schedule is not None and spec.train.learning_rate != schedule.arguments[0]:
        del data["train"]["learning_rate"]  # ignored by mlx-lm next to a schedule
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
