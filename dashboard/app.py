"""LaDeDa review dashboard: the shell (``streamlit run dashboard/app.py``).

Navigation between the pages, the model loaded once per process, and a
header that always shows the active model, its calibration, what the model is
fed (preprocessing) and who is reviewing. Pages only compose ``core``.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard import services, widgets  # noqa: E402

st.set_page_config(page_title="LaDeDa review", page_icon=":material/policy:", layout="wide")

# The page files live in views/, not pages/: a pages/ folder beside the main script switches
# Streamlit into the legacy multipage mode on the first run of a server and on every AppTest run.
PAGES = [
    st.Page("views/inspect.py", title="Inspect", icon=":material/image_search:", url_path="inspect", default=True),
    st.Page("views/review.py", title="Review", icon=":material/fact_check:", url_path="review"),
    st.Page("views/export.py", title="Export", icon=":material/download:", url_path="export"),
    st.Page("views/calibration.py", title="Calibration", icon=":material/tune:", url_path="calibration"),
    st.Page("views/monitor.py", title="Monitor", icon=":material/monitoring:", url_path="monitor"),
]
page = st.navigation(PAGES, position="sidebar")

widgets.style()
loading = st.empty()  # "loading the model…" in the main area while the first start builds it
with st.sidebar:
    with services.guarded("opening the review database", where=st.sidebar):
        services.store()  # <data dir>/review.sqlite, created on first run
    who = services.identity_panel(st.sidebar)
    active = services.active_detector(loading)
    st.session_state["active_detector"] = active
    if active is not None:
        widgets.model_panel(st.sidebar, active)
    widgets.credentials_panel(st.sidebar)

widgets.header(active, who)
exposed = services.exposure_warning()
if exposed:
    st.warning(exposed, icon=":material/lan:")
page.run()
