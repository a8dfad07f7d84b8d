"""lorafarm's web UI: `streamlit run web/app.py` (what `farm up` and `farm web` start).

This file only routes: a sign-in page when a password is configured
(FARM_UI_PASSWORD or `password` in Streamlit secrets), else the pages.
"""

from __future__ import annotations

import streamlit as st

from web import ui

st.set_page_config(page_title="lorafarm", page_icon=":material/science:", layout="wide")

if ui.signed_in():
    pages = [
        st.Page(
            ui.LEADERBOARD_PAGE, title="Leaderboard", icon=ui.ICONS["leaderboard"], default=True
        ),
        st.Page(ui.RUNS_PAGE, title="Runs", icon=ui.ICONS["runs"], url_path="runs"),
        st.Page(ui.SUBMIT_PAGE, title="Submit", icon=ui.ICONS["submit"], url_path="submit"),
        st.Page(ui.RUN_PAGE, title="Run detail", icon=ui.ICONS["run"], url_path="run"),
        st.Page("views/workers.py", title="Workers", icon=ui.ICONS["workers"], url_path="workers"),
    ]
    navigation = st.navigation(pages)
else:
    navigation = st.navigation([st.Page(ui.sign_in_page, title="Sign in", icon=ui.ICONS["lock"])])
navigation.run()
