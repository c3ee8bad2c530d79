"""candlelake dashboard router: `streamlit run dashboard/app.py` from the project root.

Only wiring lives here: page config, the page list for `st.navigation`, the display time zone (shared by
every page; data stays UTC), and a footer saying what the dashboard reads. Each page is a script under
`views/` (not `pages/`: Streamlit would also serve a `pages/` folder as standalone pages that skip
this router, and its path fix); data access is in `dashboard/data.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts this folder on sys.path, not the project root; the pages import `dashboard.*`
# (a package name that cannot shadow an installed module the way a bare `data` or `charts` could).
_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
if _PROJECT_ROOT not in sys.path:
    sys.path.insert(0, _PROJECT_ROOT)

from zoneinfo import available_timezones  # noqa: E402

import streamlit as st  # noqa: E402 - after the path fix on purpose

from candlelake.config import load_settings  # noqa: E402
from dashboard import url_params  # noqa: E402

st.set_page_config(page_title="candlelake", page_icon=":material/candlestick_chart:", layout="wide")

pages = [
    st.Page("views/markets.py", title="Markets", icon=":material/candlestick_chart:", default=True),
    st.Page("views/quality.py", title="Quality", icon=":material/fact_check:"),
    st.Page("views/alerts.py", title="Alerts", icon=":material/notifications:"),
    st.Page("views/trades.py", title="Trades", icon=":material/receipt_long:"),
    st.Page("views/pipeline.py", title="Pipeline", icon=":material/monitor_heart:"),
]
page = st.navigation(pages)

# Every time is stored and queried in UTC; this only changes how pages print and draw them.
ZONES = ["UTC", *sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))]
url_params.warn_unknown("tz", ZONES, "time zone", where=st.sidebar)
st.sidebar.selectbox("Display time zone", ZONES, key="tz", bind="query-params", help="Data stays in UTC")

page.run()

settings = load_settings()
st.caption(
    f"candlelake reads PostgreSQL {settings.host}:{settings.pg_port}/{settings.pg_database} "
    f"as `{settings.pg_reader_user}`, read-only."
)
