"""candlelake dashboard router: `streamlit run dashboard/app.py` from the project root.

Only wiring lives here: page config, the page list for `st.navigation`, and a footer saying what the
dashboard reads. Each page is a script under `pages/`; data access is in `dashboard/data.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts this folder on sys.path, not the project root; the pages import `dashboard.*`
# (a package name that cannot shadow an installed module the way a bare `data` or `charts` could).
_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
if _PROJECT_ROOT not in sys.path:
    sys.path.insert(0, _PROJECT_ROOT)

import streamlit as st  # noqa: E402 - after the path fix on purpose

from candlelake.config import load_settings  # noqa: E402

st.set_page_config(page_title="candlelake", page_icon=":material/candlestick_chart:", layout="wide")

pages = [
    st.Page("pages/markets.py", title="Markets", icon=":material/candlestick_chart:", default=True),
]

st.navigation(pages).run()

settings = load_settings()
st.caption(
    f"candlelake reads PostgreSQL {settings.host}:{settings.pg_port}/{settings.pg_database} "
    f"as `{settings.pg_reader_user}`, read-only."
)
