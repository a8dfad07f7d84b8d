"""Submit: the experiment spec as a form, validated like `farm submit`, with its YAML."""

from __future__ import annotations

from typing import Any

import streamlit as st

from jobs import settings
from jobs.limits import spec_size_problem
from jobs.problems import InputError
from web import form_bounds, forms, pickers, sweep_inputs, ui

KEY = "f:"  # widget keys are KEY + the spec field's dotted path
FORMATS = {"train.learning_rate": "%.2e", "train.lr_schedule.warmup_init": "%.2e"}


def widget_values() -> dict[str, Any]:
    return {f.key: st.session_state[KEY + f.key] for f in forms.FIELDS}


def load_values(values: dict[str, Any]) -> None:
    for key, value in values.items():
        st.session_state[KEY + key] = value
    st.session_state["form_values"] = dict(values)
    st.session_state.pop("form_result", None)


def on_validate() -> None:
    values = widget_values()
    st.session_state["form_values"] = values
    st.session_state["form_result"] = form_bounds.validate_form(values)


def on_submit() -> None:
    values = widget_values()
    st.session_state["form_values"] = values
    client = ui.redis()
    if client is None:
        st.session_state["form_result"] = form_bounds.validate_form(values)
        st.session_state["submit_error"] = "REDIS_URL is not set: nothing can be queued."
        return
    try:
        st.session_state["form_result"] = form_bounds.submit_form(values, client)
        st.session_state.pop("submit_error", None)
    except Exception as exc:  # Redis or the DB down: say so, nothing was queued
        st.session_state["submit_error"] = f"not queued: {ui.failure_text(exc)}"


@st.cache_data(ttl=30, show_spinner=False)
def picker_choices(farm_home: str, database_url: str) -> tuple[list[str], list[str], list[str]]:
    """Models, datasets and suites to pick from (arguments key the cache)."""
    with ui.db() as session:
        models = pickers.find_models(session)
    return models, pickers.find_datasets(), pickers.find_suites()


st.title("Submit an experiment")
models, datasets, suites = picker_choices(str(settings.farm_home()), settings.database_url())
choices = {"base_model": models, "dataset": datasets, "eval.suite": suites}

# Widget state is dropped when the page is left; restore the last values (or defaults).
remembered = st.session_state.get("form_values") or forms.default_form(models[0] if models else "")
for field in forms.FIELDS:
    st.session_state.setdefault(KEY + field.key, remembered.get(field.key, field.default))

clone = ui.query_int("clone")
if clone is not None and st.session_state.get("cloned_from") != clone:
    with ui.db() as session:
        cloned = forms.clone_run_form(session, clone)
    st.session_state["cloned_from"] = clone
    if cloned is None:
        st.session_state["prefill_note"] = ("error", f"No run {clone} to clone.")
    else:
        load_values(cloned[0])
        st.session_state["prefill_note"] = ("info", f"Prefilled from {cloned[1]}.")


def load_upload(name: str, size: int, data: bytes) -> None:
    """Prefill the form from an uploaded spec; too big a file is refused unread."""
    problem = spec_size_problem(size)
    if problem is not None:
        st.session_state["prefill_note"] = ("error", f"{name}: {problem}")
        return
    try:
        values, notes = forms.yaml_to_form(data.decode("utf-8", "replace"))
    except InputError as exc:
        st.session_state["prefill_note"] = ("error", "; ".join(str(p) for p in exc.problems))
    else:
        load_values(values)
        text = f"Loaded {name} into the form." + "".join(f"\n- {n}" for n in notes)
        st.session_state["prefill_note"] = ("info", text)


with st.expander("Upload a spec YAML", expanded=False):
    # 1 MB, Streamlit's smallest cap (also set server-wide); the spec limit is checked below.
    uploaded = st.file_uploader("Spec file", type=["yaml", "yml"], key="upload", max_upload_size=1)
    if uploaded is not None and st.session_state.get("uploaded_id") != uploaded.file_id:
        st.session_state["uploaded_id"] = uploaded.file_id
        load_upload(uploaded.name, uploaded.size, uploaded.getvalue())

note = st.session_state.get("prefill_note")
if note:
    (st.error if note[0] == "error" else st.info)(note[1])

result: forms.FormResult | None = st.session_state.get("form_result")


def render_field(field: forms.FormField) -> None:
    key = KEY + field.key
    common: dict[str, Any] = {"key": key, "help": field.help}
    if field.kind == "path":
        current = st.session_state[key]
        options = list(dict.fromkeys([current, *choices[field.key]]))
        st.selectbox(field.label, options, accept_new_options=True, **common)
    elif field.kind == "int":
        st.number_input(field.label, step=1, **common)
    elif field.kind == "float":
        fmt = FORMATS.get(field.key, "%g")
        st.number_input(field.label, step=1e-6 if "e" in fmt else 0.1, format=fmt, **common)
    elif field.kind == "bool":
        st.checkbox(field.label, **common)
    elif field.kind == "select":
        st.selectbox(field.label, field.options, **common)
    elif field.kind == "multiselect":
        st.multiselect(field.label, field.options, **common)
    else:
        st.text_input(field.label, **common)
    for message in result.messages(field.key) if result else []:
        st.error(ui.plain(message), icon=":material/warning:")


with st.form("spec_form"):
    for section in forms.SECTIONS:
        st.subheader(section)
        fields = forms.fields_in(section)
        columns = st.columns(3)
        for index, field in enumerate(fields):
            with columns[index % 3]:
                render_field(field)
    left, right, _ = st.columns([1, 1, 4])
    left.form_submit_button("Validate", on_click=on_validate)
    right.form_submit_button("Submit", type="primary", on_click=on_submit)

# The run count of the form as last validated or submitted (a sweep multiplies it).
st.caption(f"Planned: {sweep_inputs.run_count_text(widget_values())}")
error = st.session_state.get("submit_error")
if error:
    st.error(ui.plain(error))
if result is not None:
    if result.sweep_id is not None and result.plan is not None:
        st.success(
            f"Submitted sweep {result.sweep_id}: {result.plan.summary()}, one experiment per "
            "grid point. Its section on the Leaderboard shows adherence against each knob."
        )
        st.page_link(ui.RUNS_PAGE, label="Watch it on the Runs page", icon=ui.ICONS["runs"])
    elif result.ok and result.plan is not None:
        st.success(
            f"Valid sweep: {result.plan.summary()}. Nothing is queued until you press Submit."
        )
    elif result.experiment_id is not None:
        spec = result.spec
        runs = len(spec.seeds) if spec else 0
        st.success(
            f"Submitted experiment {result.experiment_id}: {runs} runs × "
            f"{result.stages_per_run} stages, fingerprint {result.fingerprint}."
        )
        st.page_link(ui.RUNS_PAGE, label="Watch it on the Runs page", icon=ui.ICONS["runs"])
    elif result.ok:
        st.success(
            f"Valid: {len(result.spec.seeds) if result.spec else 0} runs × "
            f"{result.stages_per_run} stages, fingerprint {result.fingerprint}. "
            "Nothing is queued until you press Submit."
        )
    else:
        count = sum(len(v) for v in result.problems.values())
        st.error(
            f"{count} problem(s): see the messages under the fields above. Nothing was queued."
        )
        for message in result.messages(forms.GENERAL):
            st.error(ui.plain(message))
    for finding in result.findings:
        show = {"error": st.error, "warning": st.warning}.get(finding.severity, st.info)
        show(ui.plain(finding.render()))  # findings quote datasets and suites

st.subheader("Equivalent YAML")
st.caption("Save it and submit from the command line: `uv run farm submit spec.yaml`.")
yaml_text = forms.form_to_yaml(widget_values())
st.code(yaml_text, language="yaml")
st.download_button(
    "Download spec.yaml", yaml_text, file_name="spec.yaml", mime="application/x-yaml"
)
