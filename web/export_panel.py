"""The run page's Export section: ask the worker holding a variant for a zip,
watch it come, download it, or download the model card alone.

The export is an `export` stage (`ship.request`): the page only queues it
and reads its progress and its zip from the database (`ship.transfer`),
never a worker's disk.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

from jobs.queue import push_all
from jobs.states import ACTIVE
from ship.export import model_card
from ship.request import exports_of, holders_down, request_export
from ship.sources import ExportRefused, exportable_variants
from ship.transfer import read_zip
from web import ui

REFRESH = timedelta(seconds=2)  # while an export is on its way


def ask_for_export(run_id: int, variant: str) -> None:
    """The Export button: queue the stage, then push its job (the reconciler
    pushes it later if Redis is down)."""
    try:
        with ui.db() as session:
            ticket = request_export(session, run_id, variant)
            down = holders_down(session, run_id, variant)
        push_all(ui.redis(), [ticket])
        queued = f"export of {variant} queued (stage {ticket.stage_id}) on {ticket.queue}"
        st.session_state["export_message"] = (
            (
                "warning",
                f"{queued}; no worker is running on host {', '.join(down)}: it "
                "starts when one is back there",
            )  # fmt: skip
            if down
            else ("success", queued)
        )
    except ExportRefused as exc:
        st.session_state["export_message"] = ("error", str(exc))
    except Exception as exc:  # the DB or Redis unreachable: say so
        st.session_state["export_message"] = ("error", ui.failure_text(exc))


def zip_reader(stage_id: int):  # type: ignore[no-untyped-def]
    """The download's bytes, read (and checked against their sha256) only when
    the button is clicked: a fused model's zip can be large."""

    def read() -> bytes:
        with ui.db() as session:
            return read_zip(session, stage_id)[1]

    return read


def export_panel(run_id: int) -> None:
    st.header("Export")
    with ui.db() as session:
        variants = exportable_variants(session, run_id)
    if not variants:
        st.caption("Nothing to export yet: the run has no adapter or model recorded.")
        return
    left, middle, right = st.columns([2, 1, 1], vertical_alignment="bottom")
    asked = st.query_params.get("export")  # from a leaderboard row's export link
    first = variants.index(asked) if asked in variants else 0
    variant = left.selectbox("Variant", variants, index=first, key="export_variant")
    middle.button(
        "Export",
        key="export_button",
        on_click=ask_for_export,
        args=(run_id, variant),
        help="The worker holding these files zips them with a model card and sends "
        "the zip through the database; every file is checked against its recorded sha256",
    )
    try:
        with ui.db() as session:
            card = model_card(session, run_id, variant)
        right.download_button(
            "Model card",
            data=card,
            file_name=f"run-{run_id}-{variant}-README.md",
            mime="text/markdown",
            key="card_download",
            on_click="ignore",
        )
    except ExportRefused as exc:
        right.caption(ui.plain(exc))
    message = st.session_state.pop("export_message", None)
    if message:
        show = {"success": st.success, "warning": st.warning}.get(message[0], st.error)
        show(ui.plain(message[1]))
    with ui.db() as session:
        active = any(e.status in ACTIVE for e in exports_of(session, run_id))
    export_list(run_id, active)


def _export_list(run_id: int, was_active: bool) -> None:
    with ui.db() as session:
        exports = exports_of(session, run_id)
    if not exports:
        return
    if was_active and not any(e.status in ACTIVE for e in exports):
        st.rerun()  # the last export ended: redraw the page without the timer
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "stage": e.stage_id,
                    "variant": e.variant,
                    "status": e.status,
                    "worker": e.worker,
                    "progress": (e.progress or 0) / e.total if e.total else None,
                    "size_mb": (e.size_bytes or 0) / 1e6 if e.size_bytes else None,
                    "sha256": e.sha256,
                    "error": (e.error or "").strip().splitlines()[-1:] or None,
                }
                for e in exports
            ]
        ),
        hide_index=True,
        column_config={
            "progress": st.column_config.ProgressColumn("sent", min_value=0, max_value=1),
            "size_mb": st.column_config.NumberColumn("size (MB)", format="%.2f"),
            "error": st.column_config.ListColumn("error"),
        },
    )
    for e in exports:
        if e.file_name:
            st.download_button(
                f"Download {e.file_name}",
                data=zip_reader(e.stage_id),
                file_name=e.file_name,
                mime="application/zip",
                key=f"export_download_{e.stage_id}",
                on_click="ignore",
            )


def export_list(run_id: int, active: bool) -> None:
    """The run's exports, refreshed every few seconds while one is on its way."""
    st.fragment(run_every=REFRESH if active else None)(_export_list)(run_id, active)
