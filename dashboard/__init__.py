"""The candlelake Streamlit dashboard: `streamlit run dashboard/app.py` (or `candlelake up`).

Layered on purpose: `app.py` routes, `views/` (the pages) lay out widgets, `data.py` is the only module that talks
to PostgreSQL, and `charts.py` builds Plotly figures without importing Streamlit.
"""
