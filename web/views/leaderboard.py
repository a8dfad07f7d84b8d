"""Leaderboard: configurations ranked by format adherence across seeds."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from jobs.problems import InputError
from jobs.seeds import add_seeds
from read import compare, verdicts
from read import leaderboard as leaderboard_view
from read import sweep as sweep_view
from read.runs import count_experiments
from web import ui
from web.forms import display_path

PER_PAGE = 25
ALL = "all"

st.title("Leaderboard")
st.caption(
    "One row per configuration (config fingerprint × variant), seeds pooled across "
    "experiments. Ranked by mean format adherence, then the worst seed — validation loss "
    "is shown, never the rank key."
)

with ui.db() as session:
    choices = leaderboard_view.filter_choices(session)
bar = st.columns([2, 2, 2, 1, 2, 1.5], vertical_alignment="bottom")
picked = {}
for column, name in zip(bar[:3], leaderboard_view.FILTERS, strict=True):
    value = column.selectbox(
        name.replace("_", " "),
        [ALL, *choices[name]],
        key=f"lb_{name}",
        format_func=lambda v: v if v == ALL else display_path(v),
    )
    picked[name] = None if value == ALL else value
variant = bar[3].text_input("variant", key="lb_variant", placeholder="e.g. q4")
sort = bar[4].selectbox(
    "sort by",
    list(leaderboard_view.SORT_LABELS),
    format_func=leaderboard_view.SORT_LABELS.get,
    key="lb_sort",
)
descending = bar[5].toggle("descending", value=sort not in ("std", "val_loss"), key="lb_desc")
filters = {**picked, "variant": variant.strip() or None}

offset = ui.page_offset("lb_page", PER_PAGE)
with ui.db() as session:
    page = leaderboard_view.leaderboard_page(
        session, sort=sort, descending=descending, limit=PER_PAGE, offset=offset, **filters
    )
rows, total = page.rows, page.total
if not rows and offset:  # the filters left fewer pages than the one we were on
    st.session_state["lb_page"] = 1
    st.rerun()

if not rows:
    with ui.db() as session:
        experiments = count_experiments(session)
    if experiments:
        st.info(
            f"No finished evals yet ({experiments} experiments submitted). Rows appear as soon "
            "as a run's first eval stage finishes."
        )
        st.page_link(ui.RUNS_PAGE, label="Watch the runs", icon=ui.ICONS["runs"])
    else:
        st.info("Nothing ranked yet: submit an experiment first.")
        st.page_link(ui.SUBMIT_PAGE, label="Submit an experiment", icon=ui.ICONS["submit"])
    st.stop()

st.caption(f"Rows {offset + 1}–{offset + len(rows)} of {total}. Select rows to compare them.")
ui.paginate(total, PER_PAGE, key="lb_page")
table = pd.DataFrame(leaderboard_view.table_rows(rows))
percent = "percent"
event = st.dataframe(
    table,
    key="lb_table",
    on_select="rerun",
    selection_mode="multi-row",
    hide_index=True,
    height="content",
    column_config={
        "config": st.column_config.TextColumn("config", help="name · config fingerprint"),
        "seeds": st.column_config.NumberColumn("seeds", help="seeds with this variant evaluated"),
        "mean": st.column_config.ProgressColumn(
            "mean adherence", min_value=0, max_value=1, format=percent
        ),
        "interval": st.column_config.TextColumn(
            "95% interval",
            help="where the mean adherence lies with 95% confidence, from the seed scores "
            "(Student's t: with 2–3 seeds it is wide, as the data are)",
        ),
        "seed_lock": st.column_config.NumberColumn(
            "seed-lock@3",
            format=percent,
            help="the chance that 3 independently trained seeds all get a prompt right "
            "(pass^k with seeds as trials, averaged over prompts)",
        ),
        "points_lost": st.column_config.NumberColumn(
            "points lost",
            format="%+.0f pts",
            help="quantized and fused variants: adherence minus their twin's in the same runs "
            "(the fused f16 model, else a ≥ 5-bit variant, else the adapter); the signal-loss "
            "diagnostic fires at -20",
        ),
        "std": st.column_config.NumberColumn("std", format="%.3f"),
        "worst": st.column_config.NumberColumn("worst seed", format=percent),
        "best": st.column_config.NumberColumn("best seed", format=percent),
        "lock_rate": st.column_config.NumberColumn(
            "lock rate", format=percent, help="share of seeds scoring ≥ 80%"
        ),
        "per_seed": st.column_config.BarChartColumn(
            "per seed", y_min=0, y_max=1, help="adherence of each seed"
        ),
        "label_mix": st.column_config.TextColumn("label mix", width="medium"),
        "val_loss": st.column_config.NumberColumn(
            "val loss", format="%.3f", help="mean final validation loss (not the rank key)"
        ),
        "latency_s": st.column_config.NumberColumn("s/prompt", format="%.3f"),
        "tokens_per_sec": st.column_config.NumberColumn("tok/s", format="%.0f"),
        "peak_memory_gb": st.column_config.NumberColumn("peak GB", format="%.2f"),
        "size_mb": st.column_config.NumberColumn("size MB", format="%.1f"),
        "hit_max": st.column_config.NumberColumn(
            "hit max_tokens", format=percent, help="generations that ran to max_tokens"
        ),
        "base_model": st.column_config.TextColumn("base model", width="small"),
    },
)

selected = [rows[i] for i in event.selection.rows if i < len(rows)]
if selected:  # each selected row's best seed, to export from its run page
    with ui.db() as session:
        best = [(r, leaderboard_view.best_seed_run(session, r)) for r in selected[:6]]
    with st.container(horizontal=True, key="lb_export_links"):
        for row, best_run in best:
            if best_run is not None:
                ui.run_link(best_run, f"Export {ui.plain(leaderboard_view.row_label(row))} "
                            f"best seed (run {best_run})", icon=":material/download:",
                            export=row.variant)  # fmt: skip
else:
    st.caption("Select a row to export its best seed.")


@st.fragment
def runner_up_section() -> None:
    """The top row against the runner-up: the verdict, how many seeds would settle
    it, and a button that adds them to both configurations."""
    comparison = verdicts.top_two(rows) if offset == 0 else None
    if comparison is None:
        return
    with st.container(key="runner_up"):
        verdict, plan = comparison.verdict, comparison.plan
        (st.success if verdict.shown else st.info)(
            f"Top against runner-up: {verdict.text()}", icon=":material/balance:"
        )
        if plan.settled or plan.per_config is None:
            return
        st.caption(plan.text(verdict.a, verdict.b))
        more = max(plan.more_a, plan.more_b)
        if more and st.button(f"Add {more} seeds to each", key="lb_add_seeds"):
            redis = ui.redis()
            if redis is None:
                st.error("Redis is not reachable: no seeds were added.")
                return
            top, other = rows[0], next(r for r in rows[1:] if verdict.b == verdicts.row_name(r))
            with ui.db() as session:
                targets = [verdicts.resolve_config(session, r.fingerprint) for r in (top, other)]
            for config in targets:
                try:
                    added = add_seeds(config.experiment_id, more, redis)
                except InputError as exc:
                    st.error(str(exc))
                    continue
                st.success(f"{ui.plain(config.label)}: seeds {', '.join(map(str, added))} queued")


runner_up_section()

left, right = st.columns(2)
with left:
    st.subheader("Adherence per seed")
    points = pd.DataFrame(leaderboard_view.seed_points(rows))
    order = [leaderboard_view.row_label(r) for r in rows]
    strip = (
        alt.Chart(points)
        .mark_circle(size=70, opacity=0.55)
        .encode(
            x=alt.X("adherence:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            y=alt.Y(
                "config:N",
                sort=order,
                title=None,
                axis=alt.Axis(labelLimit=260, labelOverlap=False),
            ),
            tooltip=["config", "seed", alt.Tooltip("adherence:Q", format=".1%")],
        )
        .properties(height=max(26 * len(rows), 120))
    )
    st.altair_chart(strip, width="stretch")
with right:
    st.subheader("Final val loss vs adherence")
    scatter = pd.DataFrame(leaderboard_view.scatter_points(rows))
    if scatter.empty:
        st.caption("No validation loss recorded for these rows.")
    else:
        chart = (
            alt.Chart(scatter)
            .mark_point(size=90, filled=True)
            .encode(
                x=alt.X("val_loss:Q", title="final val loss", scale=alt.Scale(zero=False)),
                y=alt.Y(
                    "adherence:Q",
                    title="mean adherence",
                    axis=alt.Axis(format="%"),
                    scale=alt.Scale(domain=[0, 1]),
                ),
                color=alt.Color("name:N", title="config"),
                shape=alt.Shape("variant:N"),
                tooltip=[
                    "config",
                    "seeds",
                    alt.Tooltip("adherence:Q", format=".1%"),
                    alt.Tooltip("worst:Q", format=".1%"),
                    "val_loss",
                ],  # fmt: skip
            )
            .properties(height=max(22 * len(rows), 260))
        )
        st.altair_chart(chart, width="stretch")


def sweep_section() -> None:
    """A sweep's grid: adherence against each swept knob, per seed, and the knob
    that moved it most (read.sweep; `farm leaderboard --sweep ID` prints it)."""
    st.subheader("Sweeps")
    with ui.db() as session:
        sweeps = {s.id: s for s in sweep_view.list_sweeps(session)}
    if not sweeps:
        st.caption("No sweeps yet: add `sweep:` to a spec, or fill a Sweep field of the form.")
        return
    left, right = st.columns([3, 1])
    sweep_id = left.selectbox("sweep", list(sweeps), format_func=lambda i: sweeps[i].title,
                              key="lb_sweep")  # fmt: skip
    with ui.db() as session:
        view = sweep_view.load_sweep_view(session, sweep_id)
        variants = view.variants if view else []
        variant = right.selectbox("variant", variants or ["adapter"], key="lb_sweep_variant")
        if view is not None and variant != view.variant:
            view = sweep_view.load_sweep_view(session, sweep_id, variant)
    if view is None:
        return
    st.markdown(f"**{ui.plain(view.strongest_line())}**")
    points = pd.DataFrame(sweep_view.knob_points(view))
    means = pd.DataFrame(sweep_view.knob_means(view))
    if points.empty:
        st.caption("No finished evals in this sweep yet.")
    else:
        for column, knob in zip(st.columns(len(view.knobs)), view.knobs, strict=True):
            order = [v.text for v in knob.values]
            x = alt.X("value:N", sort=order, title=knob.name, axis=alt.Axis(labelAngle=0))
            y = alt.Y("adherence:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"))
            dots = (
                alt.Chart(points[points["knob"] == knob.name])
                .mark_circle(size=70, opacity=0.6)
                .encode(x=x, y=y, color=alt.Color("seed:N"),
                        tooltip=["point", "seed", alt.Tooltip("adherence:Q", format=".1%")])
            )  # fmt: skip
            mean = means[means["knob"] == knob.name]
            line = alt.Chart(mean).mark_line(point=True).encode(x=x, y=y)
            # each value's 95% interval over its points and seeds
            bars = (
                alt.Chart(mean)
                .mark_errorbar(thickness=2)
                .encode(x=x, y=alt.Y("low:Q", title="adherence"), y2="high:Q",
                        tooltip=["value", "runs", alt.Tooltip("adherence:Q", format=".1%"),
                                 alt.Tooltip("low:Q", format=".1%"),
                                 alt.Tooltip("high:Q", format=".1%")])
            )  # fmt: skip
            chart = (dots + bars + line).properties(
                title=f"{view.variant} adherence vs {knob.name} (mean, 95% interval)"
            )
            column.altair_chart(chart, width="stretch")
    st.dataframe(pd.DataFrame(sweep_view.point_table(view)), hide_index=True, key="lb_sweep_table")


def decide_section() -> None:
    """Any two rows of this page (the top two at first): the verdict between them
    and each one's seed-fragile prompts."""
    if len(rows) < 2:
        return
    st.subheader("Decide between two rows")
    labels = [leaderboard_view.row_label(r) for r in rows]
    first, second = 0, verdicts.runner_up_index(rows) or 1
    with st.container(key="decide"):
        left, right = st.columns(2)
        a = left.selectbox("A", range(len(rows)), index=first, format_func=labels.__getitem__,
                           key="lb_verdict_a")  # fmt: skip
        b = right.selectbox("B", range(len(rows)), index=second, format_func=labels.__getitem__,
                            key="lb_verdict_b")  # fmt: skip
        if a == b:
            st.caption("Pick two different rows.")
            return
        pair = verdicts.rows_comparison(rows[a], rows[b])
        (st.success if pair.verdict.shown else st.info)(ui.plain(pair.verdict.text()))
        if not pair.plan.settled:
            st.caption(ui.plain(pair.plan.text(pair.verdict.a, pair.verdict.b)))
        for column, side, index in ((left, "a", a), (right, "b", b)):
            row = rows[index]
            with ui.db() as session:
                fragile = verdicts.seed_fragile_prompts(session, row.fingerprint, row.variant)
            with column.container(key=f"seed_fragile_{side}"):
                st.markdown(f"**Seed-fragile prompts** of {ui.plain(labels[index])}")
                if not fragile:
                    st.caption("No prompt is right in some seeds and wrong in others.")
                    continue
                st.caption(
                    f"{len(fragile)} prompts some seeds got right and others did not, the "
                    "most evenly split first: where more training data helps most."
                )
                frame = pd.DataFrame(leaderboard_view.fragile_rows(fragile))
                st.dataframe(frame, hide_index=True)


with st.container(key="sweep_section"):
    sweep_section()

decide_section()

st.subheader("Compare configurations")
if len(selected) < 2:
    st.caption("Select two or more rows in the table to compare their configs and label mixes.")
    st.stop()
only_differences = st.toggle("Only fields that differ", key="lb_only_diff")
with ui.db() as session:
    diff = pd.DataFrame(leaderboard_view.compare_rows(session, selected, only_differences))
styled = diff.style.apply(
    lambda row: ["background-color: #ffe8a3" if row["differs"] else "" for _ in row], axis=1
)
st.dataframe(styled, hide_index=True, column_config={"differs": None})
st.caption(f"{int(diff['differs'].sum())} of {len(diff)} fields differ (highlighted).")
mix = pd.DataFrame(
    compare.label_mix_long([(leaderboard_view.row_label(r), r.label_mix) for r in selected])
)
if not mix.empty:
    bars = (
        alt.Chart(mix)
        .mark_bar()
        .encode(
            x=alt.X("share:Q", stack="normalize", axis=alt.Axis(format="%"), title="label mix"),
            y=alt.Y("config:N", title=None),
            color=alt.Color("label:N"),
            tooltip=["config", "label", alt.Tooltip("share:Q", format=".1%")],
        )
    )
    st.altair_chart(bars, width="stretch")
