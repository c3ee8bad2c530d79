"""What the Pipeline page reads: each part's latest health check and supervisor verdict, the producers'
counters, and the streaming queries' batches. Parameterized SELECTs through `dashboard.data.query`.

Every query is bounded by a recent `since`: the check and progress tables grow by thousands of rows a
day, and the page only ever needs the last hour or day of them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from dashboard.data import MAX_ENTRIES, query

HEALTH_SQL = """
    SELECT DISTINCT ON (component) component, healthy, detail, checked_at
      FROM health_checks
     WHERE checked_at >= %(since)s
     ORDER BY component, checked_at DESC
"""
SUPERVISOR_SQL = """
    SELECT DISTINCT ON (component) component, state, action, detail, metrics, checked_at
      FROM supervisor_checks
     WHERE checked_at >= %(since)s
     ORDER BY component, checked_at DESC
"""
PRODUCERS_SQL = """
    SELECT producer, source, pid, started_at, heartbeat_at, received, produced, rejected, duplicates,
           delivery_failures, gaps, missing_ids, backfilled, reconnects, prices, last_trade_time
      FROM producer_health
     ORDER BY heartbeat_at DESC
     LIMIT 20
"""
LATEST_BATCHES_SQL = """
    SELECT DISTINCT ON (query_name) query_name, run_id, batch_id, batch_time, num_input_rows,
           input_rows_per_second, processed_rows_per_second, rows_dropped_by_watermark, watermark,
           duration_ms, recorded_at
      FROM stream_progress
     WHERE recorded_at >= %(since)s
     ORDER BY query_name, recorded_at DESC
"""
# Rows per minute and the mean batch duration, for the throughput chart (idle reports have batch -1).
THROUGHPUT_SQL = """
    SELECT query_name, date_bin('1 minute', recorded_at, TIMESTAMPTZ 'epoch') AS minute,
           sum(num_input_rows)::bigint AS rows, count(*) AS batches, avg(duration_ms) AS mean_batch_ms
      FROM stream_progress
     WHERE recorded_at >= %(since)s AND batch_id >= 0
     GROUP BY query_name, minute
     ORDER BY minute, query_name
"""


def _since(delta: timedelta) -> datetime:
    # Rounded down to the minute so that refreshes within a minute share the cache entry's key.
    return (datetime.now(UTC) - delta).replace(second=0, microsecond=0)


@st.cache_data(ttl=5, show_spinner=False, max_entries=MAX_ENTRIES)
def health_checks(day: datetime | None = None) -> pd.DataFrame:
    return query(HEALTH_SQL, {"since": day or _since(timedelta(days=1))})


@st.cache_data(ttl=5, show_spinner=False, max_entries=MAX_ENTRIES)
def supervisor_checks(day: datetime | None = None) -> pd.DataFrame:
    return query(SUPERVISOR_SQL, {"since": day or _since(timedelta(days=1))})


@st.cache_data(ttl=5, show_spinner=False, max_entries=MAX_ENTRIES)
def producers() -> pd.DataFrame:
    return query(PRODUCERS_SQL)


@st.cache_data(ttl=5, show_spinner=False, max_entries=MAX_ENTRIES)
def latest_batches(since: datetime | None = None) -> pd.DataFrame:
    return query(LATEST_BATCHES_SQL, {"since": since or _since(timedelta(days=1))})


@st.cache_data(ttl=5, show_spinner=False, max_entries=MAX_ENTRIES)
def throughput(since: datetime | None = None) -> pd.DataFrame:
    return query(THROUGHPUT_SQL, {"since": since or _since(timedelta(hours=1))})


def query_lags(supervisor: pd.DataFrame) -> dict[str, dict[str, object]]:
    """Per streaming query, what the supervisor's last stream check measured (lag in records, rates)."""
    rows = supervisor[supervisor["component"] == "stream"]
    if rows.empty:
        return {}
    metrics = rows.iloc[0]["metrics"] or {}
    queries = metrics.get("queries") or {}
    return {name: dict(values or {}) for name, values in queries.items()}
