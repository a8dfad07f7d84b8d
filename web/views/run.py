"""Run detail: curves, stage timeline, artifacts, eval rows, variants side by side."""

from __future__ import annotations

from datetime import timedelta

import altair as alt
import pandas as pd
import streamlit as st

from jobs import control
from read import run_detail
from read.gangs import gang_view
from ship.publish import publications
from web import ui
from web.export_panel import export_panel

EVAL_ROWS_PER_PAGE = 25
LIVE_EVERY = timedelta(seconds=3)  # how often a live run's training charts refresh

run_id = ui.query_int("run")
if run_id is None:
    st.title("Run detail")
    picked = st.number_input("Run id", min_value=1, step=1, value=None, key="pick_run")
    if picked is not None:
        st.query_params["run"] = str(int(picked))
        st.rerun()
    st.info("Open a run from the Runs page or the leaderboard, or type its id.")
    st.stop()

with ui.db() as session:
    header = run_detail.run_header(session, run_id)
if header is None:
    st.title("Run detail")
    st.error(f"No run {run_id}.")
    st.stop()

st.title(f"{ui.plain(header.name)} · seed {header.seed}")
st.caption(
    f"run {header.id} of experiment {header.experiment_id} · "
    f"{ui.badge(header.status)} · artifacts on "
    f"{ui.plain(header.host or '–')} · fingerprint `{header.fingerprint}`"
)
st.markdown(
    f"**model** {ui.plain(header.base_model)} · **dataset** {ui.plain(header.dataset)} · "
    f"**suite** {ui.plain(header.suite)}"
)


def run_action(what: str, stage_id: int | None = None) -> None:
    """A cancel or retry button: jobs.control does it; the outcome shows on the next run."""
    client = ui.redis()
    if client is None:
        st.session_state["run_message"] = ("error", "REDIS_URL is not set")
        return
    try:
        with ui.db() as session:
            if what == "cancel":
                count = control.cancel_run(session, header.id, client)
            elif stage_id is not None:
                count = len(control.retry_stage(session, stage_id, client))
            else:
                count = len(control.retry_run(session, header.id, client))
        st.session_state["run_message"] = ("success", f"{what}: {count} stages")
    except Exception as exc:  # RetryError, Redis down: show it
        st.session_state["run_message"] = ("error", f"{what}: {ui.failure_text(exc)}")


actions = st.columns([2, 1, 1, 4])
with actions[0]:
    st.page_link(
        ui.SUBMIT_PAGE,
        label="Clone this run",
        icon=ui.ICONS["clone"],
        query_params={"clone": str(header.id)},
    )
if header.status in ("queued", "running"):
    actions[1].button("Cancel run", on_click=run_action, args=("cancel",))
if header.status in ("failed", "cancelled"):
    actions[2].button("Retry run", on_click=run_action, args=("retry",))
message = st.session_state.pop("run_message", None)
if message:
    (st.success if message[0] == "success" else st.error)(message[1])

siblings = [s for s in header.sibling_runs if s[0] != header.id]
if siblings:
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption("Other seeds of this experiment")
        for rid, seed, status in siblings[:30]:
            ui.run_link(rid, f"seed {seed}", icon=ui.status_icon(status))
SHOW = {"error": st.error, "warning": st.warning, "info": st.info}


def diagnostic_card(group: dict) -> None:
    """One pattern: where it was found, its first message, the others folded."""
    where = f" — in {', '.join(group['variants'])}" if group["variants"] else ""
    messages = group["messages"]
    SHOW.get(group["severity"], st.info)(
        f"**{ui.plain(group['pattern'])}**{ui.plain(where)}\n\n{ui.plain(messages[0])}"
    )
    if len(messages) > 1:
        with st.expander(f"{ui.plain(group['pattern'])}: all {len(messages)} findings"):
            for message in messages:
                st.markdown(f"- {ui.plain(message)}")


# What went wrong in this run, one card per pattern; what preflight said before
# it ran, folded.
groups = run_detail.diagnostic_groups(header.diagnostics)
for group in groups:
    if group["scope"] != "preflight":
        diagnostic_card(group)
preflight = [g for g in groups if g["scope"] == "preflight"]
if preflight:
    worst = "error" if any(g["severity"] == "error" for g in preflight) else "warning"
    count = sum(len(g["messages"]) for g in preflight)
    with st.expander(f"Preflight findings ({count})", icon=ui.status_icon(
        "failed" if worst == "error" else "skipped")):  # fmt: skip
        for group in preflight:
            diagnostic_card(group)

with ui.db() as session:
    story = run_detail.attempt_story(session, header.id)
if story:  # retried, resumed or re-planned: say it before the charts do
    st.info(ui.plain(story), icon=":material/restart_alt:")

with ui.db() as session:
    timeline = run_detail.stage_timeline(session, header.id)
    files = run_detail.artifacts(session, header.id)
    summaries = run_detail.variant_summaries(session, header.id)
    variants, matrix = run_detail.variant_matrix(session, header.id)

# --- training -----------------------------------------------------------------------
st.header("Training")


def loss_chart(losses: pd.DataFrame) -> None:
    chart = (
        alt.Chart(losses)
        .mark_line(point=True)
        .encode(
            x=alt.X("iteration:Q", title="iteration"),
            y=alt.Y("value:Q", title="loss", scale=alt.Scale(zero=False)),
            color=alt.Color("loss:N", title=None),
            tooltip=["iteration", "loss", alt.Tooltip("value:Q", format=".4f")],
        )
    )
    st.altair_chart(chart, width="stretch")


def probe_chart(probes: pd.DataFrame, iters: int | None) -> None:
    x = alt.X("iteration:Q", title="iteration")
    if iters:  # the whole planned run, so an early stop shows as a curve that ends
        x = alt.X("iteration:Q", title="iteration", scale=alt.Scale(domain=[0, iters]))
    chart = (
        alt.Chart(probes)
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("adherence:Q", title="adherence", scale=alt.Scale(domain=[0, 1])),
            tooltip=["iteration", alt.Tooltip("adherence:Q", format=".0%"), "labels"],
        )
    )
    st.altair_chart(chart, width="stretch")


def speed_chart(speed: pd.DataFrame) -> None:
    chart = (
        alt.Chart(speed)
        .mark_line(point=True)
        .encode(
            x=alt.X("iteration:Q"),
            y=alt.Y("value:Q", title=None),
            color=alt.Color("measure:N", title=None, legend=None),
            row=alt.Row("measure:N", title=None),
            tooltip=["iteration", "measure", alt.Tooltip("value:Q", format=".2f")],
        )
        .properties(height=110)
        .resolve_scale(y="independent")
    )
    st.altair_chart(chart, width="stretch")


@st.fragment(run_every=LIVE_EVERY if header.status in ("queued", "running") else None)
def training() -> None:
    """Loss, the adherence probe and speed; refreshed while the run is live."""
    with ui.db() as session:
        metrics = run_detail.training_metrics(session, header.id)
        stopped = run_detail.early_stop_of(session, header.id)
    if stopped:
        st.info(stopped, icon=":material/front_hand:")
    if not metrics:
        st.info("No training reports yet.")
        return
    losses = pd.DataFrame(run_detail.loss_series(metrics))
    probes = pd.DataFrame(run_detail.probe_series(metrics))
    speed = pd.DataFrame(run_detail.throughput_series(metrics))
    columns = st.columns(3 if not probes.empty else 2)
    with columns[0]:
        st.markdown("**Loss**")
        if not losses.empty:
            loss_chart(losses)
    if not probes.empty:
        with columns[1]:
            st.markdown(
                "**Adherence probe**",
                help="a few suite prompts generated at each checkpoint, during training",
            )
            probe_chart(probes, header.iters)
    with columns[-1]:
        st.markdown("**Tokens/s and peak memory**")
        if not speed.empty:
            speed_chart(speed)


training()


@st.fragment(run_every=LIVE_EVERY if header.status in ("queued", "running") else None)
def gang() -> None:
    """The ranks of a run several workers train together (`train.workers`)."""
    with ui.db() as session:
        view = gang_view(session, header.id)
    if view is None:
        return
    st.markdown(f"**Trained by a gang of {view.world} workers**")
    if view.waiting:
        st.warning(ui.plain(view.waiting), icon=":material/group_add:")
    st.dataframe(
        pd.DataFrame([vars(r) for r in view.ranks]),
        hide_index=True,
        column_config={
            "address": st.column_config.TextColumn("ring address", help="where its rank listens"),
            "tokens_per_sec": st.column_config.NumberColumn(
                "tokens/s", format="%.0f", help="rank 0: the whole gang's; others: their share"
            ),
        },
    )


gang()

# --- stages ---------------------------------------------------------------------------
st.header("Stages")
timed = pd.DataFrame([t for t in timeline if t["started_at"] is not None])
if not timed.empty:
    timed["finished_at"] = timed["finished_at"].fillna(pd.Timestamp.now(tz="UTC"))
    gantt = (
        alt.Chart(timed)
        .mark_bar()
        .encode(
            x=alt.X("started_at:T", title=None),
            x2="finished_at:T",
            y=alt.Y("stage:N", sort=None, title=None),
            color=alt.Color("status:N"),
            tooltip=["stage", "status", "worker", alt.Tooltip("seconds:Q", format=".1f")],
        )
        .properties(height=28 * len(timed) + 30)
    )
    st.altair_chart(gantt, width="stretch")
st.dataframe(
    pd.DataFrame(timeline).drop(
        columns=["id", "kind", "variant", "error_full", "attempts", "attempts_title"]
    ),
    hide_index=True,
    column_config={
        "attempt": st.column_config.NumberColumn(
            "attempt", help="how many times a worker has claimed this stage"
        ),
        "resumed_from": st.column_config.NumberColumn(
            "resumed from", help="the checkpoint iteration the current attempt resumed at"
        ),
        "adherence": st.column_config.ProgressColumn(
            "adherence", min_value=0, max_value=1, format="percent"
        ),  # fmt: skip
        "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
        "enqueued_at": st.column_config.DatetimeColumn("enqueued", format="HH:mm:ss"),
        "started_at": st.column_config.DatetimeColumn("started", format="HH:mm:ss"),
        "finished_at": st.column_config.DatetimeColumn("finished", format="HH:mm:ss"),
    },
)
for t in timeline:
    if t["attempts"]:
        with st.expander(t["attempts_title"], icon=":material/history:"):
            for line in t["attempts"]:
                st.text(line)
# Failed and cancelled stages, each with its error and a button to run it (and
# whatever waits on it) again.
for t in timeline:
    if t["status"] not in ("failed", "cancelled"):
        continue
    about, retry = st.columns([8, 1], vertical_alignment="center")
    with about:
        if t["error_full"]:
            title = ui.plain(f"{t['stage']} {t['status']}: {t['error'][:120]}")
            with st.expander(title, icon=ui.status_icon(t["status"])):
                st.code(t["error_full"])
        else:
            st.markdown(f"{ui.badge(t['status'])} {t['stage']}")
    retry.button(
        "Retry",
        key=f"retry_stage_{t['id']}",
        on_click=run_action,
        args=("retry stage", t["id"]),
        help="Run this stage again, with the stages that depend on it",
    )

st.header("Artifacts")
if files:
    st.dataframe(
        pd.DataFrame(files),
        hide_index=True,
        column_config={"size_mb": st.column_config.NumberColumn("size (MB)", format="%.2f")},
    )
else:
    st.caption("No artifacts yet.")
with ui.db() as session:
    published = [vars(p) for p in publications(session, run_id)]
if published:  # `farm publish` records each upload the Hub accepted
    st.subheader("Published")
    st.dataframe(
        pd.DataFrame(published)[["variant", "repo", "revision", "private", "published_at", "url"]],
        hide_index=True,
        column_config={"url": st.column_config.LinkColumn("on the Hub")},
    )

export_panel(run_id)

# --- variants ---------------------------------------------------------------------------
st.header("Variants side by side")
done = [s for s in summaries if s["adherence"] is not None]
if not done:
    st.caption("No finished evals yet.")
else:
    st.caption(run_detail.eval_cost(summaries))
    table = pd.DataFrame(done)
    table["label_mix"] = table["label_mix"].map(
        lambda mix: ", ".join(f"{k} {v:.0%}" for k, v in sorted(mix.items(), key=lambda x: -x[1]))
    )
    table["ended_by"] = table["ended_by"].map(
        lambda ends: ", ".join(f"{k} {v}" for k, v in sorted(ends.items(), key=lambda x: -x[1]))
    )
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "adherence": st.column_config.ProgressColumn(
                "adherence", min_value=0, max_value=1, format="percent"
            ),
            "points_lost": st.column_config.NumberColumn(
                "points lost",
                format="%+.0f pts",
                help="adherence minus the twin's: a quantized variant against the fused f16 "
                "model (else a ≥ 5-bit variant, else the adapter), the fused model against "
                "the adapter; the signal-loss diagnostic fires at -20",
            ),
            "ended_by": st.column_config.TextColumn(
                "ended by", help="responses that ended on eos, a stop string, or max_tokens"
            ),
            "eval_s": st.column_config.NumberColumn(
                "eval s", format="%.1f", help="seconds this variant's eval stage took"
            ),
            "hit_max_tokens": st.column_config.NumberColumn("hit max_tokens", format="percent"),
            "latency_s": st.column_config.NumberColumn("s/prompt", format="%.3f"),
            "tokens_per_sec": st.column_config.NumberColumn("tok/s", format="%.0f"),
            "peak_memory_gb": st.column_config.NumberColumn("peak GB", format="%.2f"),
            "size_mb": st.column_config.NumberColumn("size MB", format="%.1f"),
        },
    )
    if matrix:
        st.markdown("**Label per prompt and variant**")
        st.dataframe(
            pd.DataFrame(matrix, columns=["prompt", "category", "expect", *variants]),
            hide_index=True,
            height="content",
        )

# --- eval rows ---------------------------------------------------------------------------
st.header("Eval responses")
with ui.db() as session:
    evaluated = run_detail.eval_variants(session, header.id)
if not evaluated:
    st.caption("No eval stage in this run.")
    st.stop()
filters = st.columns([1, 2, 2])
variant = filters[0].selectbox("Variant", evaluated, key="eval_variant")
with ui.db() as session:
    labels, categories = run_detail.eval_filter_options(session, header.id, variant)
chosen_labels = filters[1].multiselect("Label", labels, key="eval_labels")
chosen_categories = filters[2].multiselect("Category", categories, key="eval_categories")
with ui.db() as session:
    total = run_detail.count_eval_rows(
        session, header.id, variant, chosen_labels, chosen_categories
    )
offset = ui.paginate(total, EVAL_ROWS_PER_PAGE, key="eval_page")
with ui.db() as session:
    rows = run_detail.eval_rows(
        session, header.id, variant, chosen_labels, chosen_categories,
        limit=EVAL_ROWS_PER_PAGE, offset=offset,
    )  # fmt: skip
st.caption(f"{total} responses match")
if rows:
    st.dataframe(
        pd.DataFrame(rows).drop(columns=["response"]),
        hide_index=True,
        column_config={
            "prompt": st.column_config.TextColumn("prompt", width="large"),
            "latency_s": st.column_config.NumberColumn("latency s", format="%.3f"),
        },
    )
    for row in rows:
        status = "done" if row["score"] >= 1 else ("skipped" if row["score"] > 0 else "failed")
        title = ui.plain(f"{row['prompt_id']} · {row['label']} · {row['prompt'][:80]}")
        with st.expander(title, icon=ui.status_icon(status)):
            st.markdown(f"**Prompt** ({ui.plain(row['category'])}, expects {row['expect']})")
            st.text(row["prompt"])
            st.markdown(
                f"**Response** — {row['tokens']} tokens"
                + (" · hit max_tokens" if row["hit_max_tokens"] else "")
                + (" · thought first" if row["thought"] else "")
            )
            st.code(row["response"] or "(empty)", language=None)
