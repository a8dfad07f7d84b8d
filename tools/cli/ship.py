"""`farm export` and `farm publish`: shipping a run's variant.

`farm export RUN --variant V --to DIR` writes a folder mlx-lm loads (an adapter
folder, or a whole model for `fused` and quantized variants) with a model card
written from the database; `farm publish` uploads that folder to the Hugging
Face Hub. Both refuse in one line with exit code 2 (an artifact out of reach,
a file that no longer matches its recorded sha256, no token, no Hub).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from jobs.plaintext import printable

if TYPE_CHECKING:
    from ship.export import Exported

EXIT_INVALID = 2

console = Console()
err = Console(stderr=True)

RunArg = Annotated[int, typer.Argument(metavar="RUN", help="the run id (see `farm status ID`)")]
VariantOpt = Annotated[
    str,
    typer.Option(help="adapter, best, a checkpoint (ckpt-0000300), fused, or a quantization (q4…)"),
]


def _say(text: str) -> None:
    console.print(printable(text), markup=False, highlight=False, soft_wrap=True)


def _refuse(text: str) -> None:
    err.print(printable(text), markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_INVALID)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _list(folder: Path, files: list[str]) -> int:
    total = 0
    for name in files:
        size = (folder / name).stat().st_size
        total += size
        _say(f"  {name}  {_size(size)}")
    return total


def export(
    run_id: RunArg,
    to: Annotated[
        Path, typer.Option("--to", help="a new or empty folder, or `lmstudio` (its models folder)")
    ],
    variant: VariantOpt = "adapter",
    gguf: Annotated[
        bool,
        typer.Option(
            "--gguf",
            help="also mlx-lm's GGUF and an Ollama Modelfile (llama, "
            "mistral, mixtral; fused, unquantized)",
        ),
    ] = False,  # fmt: skip
    via_worker: Annotated[
        bool,
        typer.Option(
            "--via-worker",
            help="have the worker holding the artifacts make the export and send it "
            "through the database (the default when this machine cannot read them)",
        ),
    ] = False,
) -> None:
    """Export a run's variant as a folder mlx-lm loads, with a model card; every
    file is checked against the sha256 the farm recorded."""
    from jobs.db import migrate
    from ship.export import export_run, lmstudio_destination
    from ship.local_apps import GGUF_FILE, LMSTUDIO
    from ship.sources import ExportRefused, OnAnotherWorker

    migrate()
    try:
        if str(to) == LMSTUDIO:
            to = lmstudio_destination(run_id, variant)
        if via_worker:
            done = _through_worker(run_id, variant, to, gguf)
        else:
            try:
                done = export_run(run_id, variant, to, gguf)
            except OnAnotherWorker as exc:
                _say(f"host {exc.host} holds the files: asking its worker for the export")
                done = _through_worker(run_id, variant, to, gguf)
    except ExportRefused as exc:
        _refuse(str(exc))
        return
    _say(f"exported run {run_id} {variant} to {done.folder}:")
    total = _list(done.folder, done.files)
    _say(f"{len(done.files)} files, {_size(total)}")
    if done.plan.shape == "adapter":
        _say(f"load: mlx_lm.load({done.plan.base_model!r}, adapter_path={str(done.folder)!r})")
    else:
        _say(f"load: mlx_lm.load({str(done.folder)!r})")
    if GGUF_FILE in done.files:
        _say(f"ollama: cd {str(done.folder)!r} && ollama create NAME -f Modelfile")


def _through_worker(run_id: int, variant: str, to: Path, gguf: bool) -> Exported:
    """The export made by the worker holding the artifacts, with a progress bar."""
    from redis import Redis
    from rich.progress import Progress

    from jobs import settings
    from jobs.db import session_scope
    from ship.export import export_through_worker
    from ship.request import holders_down
    from ship.sources import ExportRefused

    with session_scope() as session:
        down = holders_down(session, run_id, variant)
    if down:
        raise ExportRefused(
            f"run {run_id} {variant} is on the own disk of host {', '.join(down)}, where no "
            "worker is running: start one there (`farm worker`) and export again, or set "
            "FARM_SHARED_ARTIFACTS to a folder every worker sees"
        )
    url = settings.redis_url()
    redis = Redis.from_url(url) if url else None
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"export of run {run_id} {variant} on its worker", total=None)

        def show(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return export_through_worker(run_id, variant, to, redis, show, gguf=gguf)


def publish(
    run_id: RunArg,
    repo: Annotated[str, typer.Option(help="USER/NAME on the Hugging Face Hub")],
    variant: VariantOpt = "adapter",
    private: Annotated[bool, typer.Option("--private", help="a private repo")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list the files that would be uploaded")
    ] = False,
) -> None:
    """Export a run's variant and upload it to the Hugging Face Hub (token:
    HF_TOKEN or the saved login); the publish is recorded on the run."""
    from jobs.db import migrate, session_scope
    from ship.export import export_run
    from ship.publish import (
        PublishFailed,
        hub_token,
        record_publication,
        upload,
        valid_repo,
    )
    from ship.sources import ExportRefused

    if not valid_repo(repo):
        _refuse(f"--repo: expected USER/NAME, got {repo!r}")
    token = None if dry_run else hub_token()
    if not dry_run and not token:
        _refuse("no Hugging Face token: set HF_TOKEN or run `hf auth login`; nothing was published")
    migrate()
    with tempfile.TemporaryDirectory(prefix="farm-publish-") as workdir:
        try:
            done = export_run(run_id, variant, Path(workdir) / "export")
        except ExportRefused as exc:
            _refuse(str(exc))
            return
        if dry_run:
            _say(f"would upload run {run_id} {variant} to {repo}"
                 f"{' (private)' if private else ''}:")  # fmt: skip
            total = _list(done.folder, done.files)
            _say(f"{len(done.files)} files, {_size(total)}; nothing was uploaded")
            return
        assert token is not None
        message = f"lorafarm run {run_id} ({variant})"
        try:
            published = upload(done.folder, repo, private, token, message)
        except PublishFailed as exc:
            _refuse(str(exc))
            return
    with session_scope() as session:
        record_publication(session, run_id, variant, published, private)
    _say(f"published run {run_id} {variant} to {published.url} (revision {published.revision})")
