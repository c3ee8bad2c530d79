"""`quality_runs`: one row per suite and validation, what the curated load checks before it publishes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from candlelake.nightly.quality.outcomes import DayOutcome

if TYPE_CHECKING:
    from candlelake.config import Settings

_INSERT_SQL = """
INSERT INTO quality_runs (run_id, exchange, trade_date, suite, success, evaluated, failed, rows_validated,
                          fingerprint, failures, docs_path)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


def record_outcome(settings: Settings, outcome: DayOutcome) -> None:
    """One `quality_runs` row per suite, in one transaction."""
    import psycopg2

    rows = _rows(outcome)
    conn = psycopg2.connect(settings.pg_dsn(), connect_timeout=10, application_name="candlelake-quality")
    try:
        with conn, conn.cursor() as cur:
            cur.executemany(_INSERT_SQL, rows)
    finally:
        conn.close()


def _rows(outcome: DayOutcome) -> list[tuple[Any, ...]]:
    from psycopg2.extras import Json

    return [
        (
            outcome.run_id,
            outcome.exchange,
            outcome.trade_date,
            s.suite,
            s.success,
            s.evaluated,
            s.failed,
            s.rows_validated,
            s.fingerprint,
            Json([f.as_dict() for f in s.failures]),
            s.docs_path,
        )
        for s in outcome.suites
    ]
