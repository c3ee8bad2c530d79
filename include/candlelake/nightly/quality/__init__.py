"""Data quality: Great Expectations suites for a day of trades and of staged candles (the audit step).

`suites` builds the expectation suites (pure: no context, no data); `validate.validate_day` runs them
on one day's Spark DataFrames and is what jobs/validate_day.py calls. Its steps, one module each:

- `evidence`: the frames validated (distinct trades; staged candles with their evidence columns)
- `context`: the file-backed context under CANDLELAKE_REPORTS_DIR, and one suite's run through it
- `docs`: the Data Docs site, rebuilt after each validation
- `results`: a result read back as failed checks in plain words
- `outcomes`: those verdicts as plain values (what the job prints and the dashboard reads)
- `record`: one `quality_runs` row per suite

Nothing here imports great_expectations at module import: it is imported by the functions that use
it, so a DAG file that imports this package stays cheap to parse.
"""
