"""`export`: one run's variant as a zip, made on the worker whose disk holds it.

The same export `farm export` writes (`ship.export.write_export`: every
file checked against the artifact's recorded sha256, the model card written
from the database), zipped and handed to the coordinator through the database
in pieces (`ship.transfer`), the stage's progress counting the pieces.
No MLX here: an export only reads files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from jobs import settings
from jobs.db import ExportChunk, session_scope
from ship.export import write_export
from ship.transfer import chunk_count, chunks_of, start_export_file, zip_folder, zip_name
from worker.context import StageContext, stage_write, update_stage


def run_export(ctx: StageContext) -> None:
    variant = str(ctx.params.get("variant") or ctx.variant)
    home = settings.farm_home()
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=home) as workdir:
        folder = Path(workdir) / "export"
        folder.mkdir()
        with session_scope() as session:
            write_export(session, ctx.run_id, variant, folder)
        archive = Path(workdir) / zip_name(ctx.run_id, variant)
        sha256 = zip_folder(folder, archive)
        size = archive.stat().st_size
        total = chunk_count(size)
        print(f"export of run {ctx.run_id} {variant}: {size} bytes in {total} pieces")
        with stage_write(ctx) as session:
            row = start_export_file(session, ctx.stage_id, ctx.run_id, variant, archive, sha256)
            export_id = row.id or 0
        update_stage(ctx, progress=0, total=total)
        for seq, piece in enumerate(chunks_of(archive)):
            with stage_write(ctx) as session:  # refused once a newer attempt owns the stage
                session.add(ExportChunk(export_id=export_id, seq=seq, data=piece))
            update_stage(ctx, progress=seq + 1)
        update_stage(ctx, size_bytes=size)
    print(f"export of run {ctx.run_id} {variant} is in the database ({sha256[:12]}…)")
