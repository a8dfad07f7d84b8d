"""Runs: experiments and their runs, live, with cancel, retry and clone."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from jobs import control
from read.runs import ExperimentRow, RunRow, count_experiments, runs_page
from read.stages import format_duration
from web import ui

PER_PAGE = 10
REFRESH = timedelta(seconds=2)

st.title("Runs")
top = st.columns([2, 1, 3])
status = top[0].selectbox(
    "Show experiments with a run that is",
    ["any", "running", "queued", "failed", "cancelled", "done"],
    key="runs_status",
)
live = top[1].toggle("Live", value=True, key="runs_live", help="Refresh every 2 seconds")


ACTIONS = {
    "cancel experiment": (control.cancel_experiment, "stages cancelled"),
    "retry experiment": (control.retry_experiment, "stages to run again"),
    "cancel run": (control.cancel_run, "stages cancelled"),
    "retry run": (control.retry_run, "stages to run again"),
}


def act(what: str, target: int) -> None:
    """A cancel or retry button: jobs.control does it; the outcome shows on the next run."""
    action, unit = ACTIONS[what]
    client = ui.redis()
    if client is None:
        st.session_state["runs_message"] = ("error", f"{what}: REDIS_URL is not set")
        return
    try:
        with ui.db() as session:
            outcome = action(session, target, client)
    except control.RetryError as exc:
        st.session_state["runs_message"] = ("error", f"{what} {target}: {ui.failure_text(exc)}")
    except Exception as exc:  # Redis unreachable, DB locked…: tell, do not crash the page
        reason = ui.failure_text(exc)
        st.session_state["runs_message"] = ("error", f"{what} {target} failed: {reason}")
    else:
        count = outcome if isinstance(outcome, int) else len(outcome)
        st.session_state["runs_message"] = ("success", f"{what} {target}: {count} {unit}")


def show_run(run: RunRow) -> None:
    cols = st.columns([1.2, 1.3, 4, 1.4, 2.6])
    cols[0].markdown(f"**seed {run.seed}**  \n{ui.badge(run.status)}")
    cols[1].markdown(
        f":material/computer: {run.worker or '–'}  \n"
        f":material/timer: {format_duration(run.elapsed_s)}"
    )
    with cols[2]:
        fraction = run.train_fraction
        if fraction is not None:
            st.progress(fraction, text=run.progress_text)
        st.markdown(" ".join(ui.badge(s.status, s.label) for s in run.stages))
    counts = ", ".join(f"{n} {status}" for status, n in run.stage_counts.items())
    cols[3].caption(f"{run.current}  \n{counts}" if run.current else counts)
    with cols[4], st.container(horizontal=True, vertical_alignment="center"):
        ui.run_link(run.id, "Open")
        if run.can_cancel:
            st.button(
                "Cancel", key=f"cancel_run_{run.id}", on_click=act, args=("cancel run", run.id)
            )
        if run.can_retry:
            st.button("Retry", key=f"retry_run_{run.id}", on_click=act, args=("retry run", run.id))


def show_experiment(experiment: ExperimentRow) -> None:
    with st.container(border=True):
        head = st.columns([5, 1, 1, 1])
        head[0].markdown(
            f"#### {experiment.name} · #{experiment.id}\n"
            f"{ui.badge(experiment.status)} · "
            f"{len(experiment.runs)} runs · `{experiment.fingerprint}` · {experiment.base_model}"
        )
        if experiment.runs:
            with head[1]:
                st.page_link(
                    ui.SUBMIT_PAGE,
                    label="Clone",
                    icon=ui.ICONS["clone"],
                    query_params={"clone": str(experiment.runs[0].id)},
                )
        if experiment.can_cancel:
            head[2].button(
                "Cancel all",
                key=f"cancel_exp_{experiment.id}",
                on_click=act,
                args=("cancel experiment", experiment.id),
            )
        if experiment.can_retry:
            head[3].button(
                "Retry",
                key=f"retry_exp_{experiment.id}",
                on_click=act,
                args=("retry experiment", experiment.id),
            )
        for run in experiment.runs:
            show_run(run)


@st.fragment(run_every=REFRESH if live else None)
def experiments_list() -> None:
    message = st.session_state.pop("runs_message", None)
    if message:
        (st.success if message[0] == "success" else st.error)(message[1])
    offset = st.session_state.get("runs_offset", 0)
    with ui.db() as session:
        page = runs_page(session, PER_PAGE, offset, None if status == "any" else status)
    if page.total == 0:
        st.info("No experiments yet.")
        st.page_link(ui.SUBMIT_PAGE, label="Submit one", icon=ui.ICONS["submit"])
        return
    first = offset + 1
    st.caption(
        f"Experiments {first}–{offset + len(page.experiments)} of {page.total}, newest first"
    )
    for experiment in page.experiments:
        show_experiment(experiment)


with ui.db() as session:
    total = count_experiments(session, None if status == "any" else status)
st.session_state["runs_offset"] = ui.paginate(total, PER_PAGE, key="runs_page")
experiments_list()
