"""The nightly chain, one exchange's UTC day at a time: compaction, recompute, validation, curated load, reconciliation.

`chain` holds what the DAGs share (assets, days, reports); the DAG files in dags/ only wire these steps.
"""
