"""Workers: every Mac of the farm, what it runs, and the queues in Redis."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

from read.stages import format_duration
from read.workers import live_worker_names, lost_note, queue_depths, worker_rows
from web import ui

st.title("Workers")


@st.fragment(run_every=timedelta(seconds=3))
def workers_panel() -> None:
    with ui.db() as session:
        rows = worker_rows(session)
    client = ui.redis()
    live: set[str] | None = None
    queues: list[dict[str, object]] = []
    if client is not None:
        try:
            live, queues = live_worker_names(client), queue_depths(client)
        except Exception as exc:  # Redis down: the DB still tells most of the story
            st.error(f"Redis is not answering: {ui.failure_text(exc)}")
    if not rows:
        st.info("No worker has registered yet. Start one with `uv run farm worker`.")
    else:
        table = pd.DataFrame(rows)
        table["heartbeat_s"] = table["heartbeat_s"].map(lambda s: f"{format_duration(s)} ago")
        if live is not None:
            table.insert(2, "in_redis", table["name"].isin(live))
        busy = int((table["status"] == "busy").sum())
        st.caption(f"{len(rows)} workers, {busy} busy")
        lost = lost_note(rows)
        if lost:
            st.warning(ui.plain(lost), icon=":material/wifi_off:")
        st.dataframe(
            table,
            hide_index=True,
            column_config={
                # Both figures: on a Mac a worker offers MLX's GPU working set,
                # well below its RAM, and a user comparing tiers needs to see why.
                "memory_gb": st.column_config.NumberColumn(
                    "memory offered GB",
                    format="%.1f",
                    help="what jobs may use: on a Mac, the GPU working set MLX recommends; "
                    "elsewhere total RAM; or the worker's --memory-gb",
                ),
                "total_memory_gb": st.column_config.NumberColumn("total RAM GB", format="%.1f"),
                "mlx": st.column_config.TextColumn("MLX"),
                "in_redis": st.column_config.CheckboxColumn(
                    "in Redis", help="registered with RQ right now"
                ),
                "heartbeat_s": st.column_config.TextColumn(
                    "heartbeat", help="last heartbeat into the database"
                ),
                "jobs_done": st.column_config.NumberColumn("jobs done"),
                "started_at": st.column_config.DatetimeColumn(
                    "up since", format="YYYY-MM-DD HH:mm"
                ),
                "access": st.column_config.TextColumn(
                    "access",
                    help="join token: a credential of its own (`farm up --lan`); revoked: "
                    "shut out by `farm workers revoke`; URLs: REDIS_URL and DATABASE_URL by hand",
                ),
                "run_id": None,
            },
        )
        for row in rows:
            if row["run_id"] is not None:
                ui.run_link(row["run_id"], f"{row['name']}: {row['running']}")
    st.subheader("Queues")
    if client is None:
        st.caption("REDIS_URL is not set.")
    elif queues:
        st.dataframe(pd.DataFrame(queues), hide_index=True)
    else:
        st.caption("No queue holds any work.")


workers_panel()
