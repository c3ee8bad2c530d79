"""Data quality: Great Expectations suites for a day of trades and of staged candles (the audit step).

`suites` builds the expectation suites (pure: no context, no data); `validate` runs them on Spark
DataFrames through a file-backed context under CANDLELAKE_REPORTS_DIR, keeps every result, rebuilds
the Data Docs site and records one `quality_runs` row per suite. jobs/validate_day.py is the job.

Nothing here imports great_expectations at module import: it is imported by the functions that use
it, so a DAG file that imports this package stays cheap to parse.
"""
