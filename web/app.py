"""lorafarm's web UI: `streamlit run web/app.py` (what `farm up` and `farm web` start).

This file only routes: a sign-in page when a password is configured
(FARM_UI_PASSWORD or `password` in Streamlit secrets), else the pages. Until
the password is given, only the sign-in page exists in a session: no other
page's code runs, so none of their buttons or callbacks can be triggered.
Start it with `farm web` (or `farm up`), whose command line also turns off
error details and the developer menu (tools.local.stack.STREAMLIT_HARDENING).
"""

from __future__ import annotations

import streamlit as st

from web import ui, uploads

st.set_page_config(page_title="lorafarm", page_icon=":material/science:", layout="wide")
ui.log_to_stderr()
uploads.guard_uploads()

# (script, title, icon, url path); the first is the home page.
PAGES = [
    (ui.LEADERBOARD_PAGE, "Leaderboard", "leaderboard", "leaderboard"),
    (ui.RUNS_PAGE, "Runs", "runs", "runs"),
    (ui.SUBMIT_PAGE, "Submit", "submit", "submit"),
    (ui.RUN_PAGE, "Run detail", "run", "run"),
    ("views/workers.py", "Workers", "workers", "workers"),
]

if ui.signed_in():
    uploads.allow_this_session()
    pages = [
        st.Page(script, title=title, icon=ui.ICONS[icon], url_path=path, default=index == 0)
        for index, (script, title, icon, path) in enumerate(PAGES)
    ]
    navigation = st.navigation(pages)
else:
    # Every page's address shows the sign-in form instead (a link to a run opens
    # that run once signed in); no page's own code runs before then.
    gate = [
        st.Page(
            ui.sign_in_page, title="Sign in", icon=ui.ICONS["lock"], url_path=path, default=i == 0
        )
        for i, (_, _, _, path) in enumerate(PAGES)
    ]
    navigation = st.navigation(gate, position="hidden")
ui.run_page(navigation)
