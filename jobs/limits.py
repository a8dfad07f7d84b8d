"""Caps on what one submission may ask for (docs/architecture.md, "Limits").

The numbers live here once: the spec layer enforces them for `farm check`,
`farm submit`, the web form and uploaded specs alike, and the form's own seed
parser reads them too, so every path refuses with the same words. The helpers
are pure: they turn a count into the message a refusal shows.
"""

from __future__ import annotations

from jobs.problems import InputError

MAX_SEEDS = 1000  # per experiment
MAX_SEED = 2**32 - 1  # numpy's seed range; mlx-lm seeds the batch order with numpy
MAX_RUNS = 1000  # per submission: seeds × sweep grid points
MAX_ITERS = 10_000_000
MAX_CHECKPOINTS = 10_000  # saved adapter checkpoints per run (iters // save_every)
MIN_TIMEOUT_HOURS = 1 / 60  # a minute
MAX_TIMEOUT_HOURS = 720  # 30 days
MAX_MEMORY_GB = 1024
MAX_GANG_WORKERS = 16  # Macs training one run together (train.workers)
MAX_NAME_CHARS = 200
MAX_SPEC_BYTES = 1_000_000  # 1 MB, checked before any parsing
# An eval suite is a few hundred prompts; a YAML parse holds several times the file
# in memory, so the file is measured before it is read.
MAX_SUITE_BYTES = 4_000_000  # 4 MB
# One split file of a dataset (train/valid/test.jsonl), measured before it is scanned:
# the scan reads every line, about 13 s per 500 MB.
MAX_DATASET_FILE_BYTES = 1_000_000_000  # 1 GB
MAX_YAML_DEPTH = 64  # nested lists/mappings
# Every key, list item and scalar counts, and an alias counts as everything it
# stands for: a spec with the maximum seeds and every knob stays far below this.
MAX_YAML_VALUES = 20_000
MAX_NUMBER_CHARS = 100  # Python refuses to convert ints of more than 4300 digits

# How bounds read in messages where the bare float would be cryptic.
BOUND_LABELS: dict[float, str] = {MIN_TIMEOUT_HOURS: "1/60 (a minute)"}


class LimitError(InputError):
    """An input over one of these limits, refused before it was parsed further;
    nothing has been written."""


class QuotaError(LimitError):
    """A submission that would take the queue over a quota; nothing has been written."""


def bound_text(value: object) -> str:
    """A limit as a message shows it: 720, 10000000, 1/60 (a minute)."""
    if isinstance(value, float) and value in BOUND_LABELS:
        return BOUND_LABELS[value]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # pydantic hands float fields' bounds over as floats
    return str(value)


def shorten(text: str, width: int = 60) -> str:
    """`text`, cut in the middle when longer than `width` characters, so a hostile
    value cannot flood a terminal or a form."""
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: keep - keep // 3] + "…" + text[len(text) - keep // 3 :]


def too_many(count: int, noun: str, limit: int) -> str:
    """The one wording of a count over its limit: '10000 seeds, at most 1000 allowed'."""
    return f"{count} {noun}, at most {limit} allowed"


def number_too_long(text: str) -> str | None:
    """Why a written number is too long to convert, or None."""
    if len(text) <= MAX_NUMBER_CHARS:
        return None
    written = f"a number of {len(text)} characters ({shorten(text, 20)})"
    return f"{written}, at most {MAX_NUMBER_CHARS} allowed"


def planned_runs(seeds: int, grid_points: int = 1) -> int:
    """Runs one submission creates: every seed at every sweep grid point."""
    return seeds * grid_points


def runs_problem(seeds: int, grid_points: int = 1) -> str | None:
    """Why the planned runs are too many, or None."""
    runs = planned_runs(seeds, grid_points)
    if runs <= MAX_RUNS:
        return None
    how = f"{seeds} seeds × {grid_points} grid points" if grid_points != 1 else f"{seeds} seeds"
    return f"{runs} runs ({how}), at most {MAX_RUNS} per submission"


def checkpoint_count(iters: int, save_every: int) -> int:
    """Adapter checkpoints mlx-lm saves in a run (one every save_every steps)."""
    return iters // save_every


def checkpoints_problem(iters: int, save_every: int) -> str | None:
    """Why a run would save too many checkpoints, or None. Counted, never listed:
    the list itself is what an absurd `iters` must not get to build."""
    count = checkpoint_count(iters, save_every)
    if count <= MAX_CHECKPOINTS:
        return None
    lowest = iters // (MAX_CHECKPOINTS + 1) + 1  # the smallest save_every within the limit
    return (
        f"{too_many(count, 'saved checkpoints per run', MAX_CHECKPOINTS)} "
        f"(iters {iters} // save_every {save_every}) — set save_every to at least {lowest}"
    )


def quota_problem(queued: int, adding: int, limit: int, setting: str, whose: str) -> str | None:
    """Why a submission of `adding` runs goes over a queue quota, or None. `whose`
    names the queue counted ('on the farm', 'submitted by alice'); the message says
    how many runs are waiting or running and which setting changes the quota."""
    if queued + adding <= limit:
        return None
    return (
        f"quota {setting}: {queued} runs are queued or running {whose} and this submission "
        f"adds {adding}, at most {limit} allowed — wait for runs to finish, cancel some "
        f"(`farm cancel ID`), or raise {setting}"
    )


def spec_size_problem(size: int) -> str | None:
    """Why a spec of `size` bytes is refused before parsing, or None."""
    if size <= MAX_SPEC_BYTES:
        return None
    return f"the spec is {size} bytes, at most {MAX_SPEC_BYTES} (1 MB) allowed"


def file_size_problem(what: str, size: int, limit: int) -> str | None:
    """Why a file of `size` bytes is refused unread, or None: 'the suite file is
    5000000 bytes, at most 4000000 (4 MB) allowed'."""
    if size <= limit:
        return None
    return f"{what} is {size} bytes, at most {limit} ({_megabytes(limit)}) allowed"


def _megabytes(size: int) -> str:
    if size >= 1_000_000_000 and size % 1_000_000_000 == 0:
        return f"{size // 1_000_000_000} GB"
    return f"{size / 1_000_000:g} MB"


def text_size(text: str, chunk: int = 1 << 20) -> int:
    """Bytes of `text` as UTF-8 (what the size limit counts), encoded a chunk at a
    time so measuring a huge upload does not hold a second copy of it."""
    if text.isascii():
        return len(text)
    return sum(
        len(text[i : i + chunk].encode("utf-8", "surrogatepass"))
        for i in range(0, len(text), chunk)
    )
