"""What the Quality page reads: validations, the gap ledger, late-data corrections, dead letters, candle
states. Parameterized SELECTs through `dashboard.data.query` (the read-only connection); no Streamlit
widgets here, only short-lived caches so that every open tab shares one query per refresh.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pandas as pd
import streamlit as st

from candlelake.config import load_settings
from dashboard.data import MAX_ENTRIES, query
from dashboard.formats import exact

# The newest validation of each exchange and suite: one DISTINCT ON pass over the (exchange, trade_date,
# suite, validated_at) index.
LATEST_VALIDATIONS_SQL = """
    SELECT DISTINCT ON (exchange, suite)
           exchange, suite, trade_date, success, evaluated, failed, rows_validated, failures, docs_path,
           validated_at, run_id
      FROM quality_runs
     ORDER BY exchange, suite, validated_at DESC
"""
VALIDATION_HISTORY_SQL = """
    SELECT validated_at, exchange, trade_date, suite, success, evaluated, failed, rows_validated, run_id
      FROM quality_runs
     WHERE validated_at >= %(since)s
     ORDER BY validated_at DESC
     LIMIT %(limit)s
"""
GAPS_SQL = """
    SELECT gap_id, exchange, symbol, kind, status,
           CASE WHEN first_id IS NOT NULL THEN last_id - first_id + 1 END AS missing_ids,
           first_id, last_id, started_at, ended_at, cause, source, detected_at, closed_at, filled, not_found,
           attempts, note
      FROM trade_gaps
     WHERE status = ANY(%(statuses)s)
     ORDER BY detected_at DESC
     LIMIT %(limit)s
"""
GAP_COUNTS_SQL = "SELECT status, count(*) AS gaps FROM trade_gaps GROUP BY status ORDER BY status"
LOADS_SQL = """
    SELECT loaded_at, exchange, trade_date, candles, inserted, changed, unchanged, load_id, run_id
      FROM curated_loads
     WHERE loaded_at >= %(since)s
     ORDER BY loaded_at DESC
     LIMIT %(limit)s
"""
CORRECTIONS_SQL = """
    SELECT l.loaded_at, c.exchange, c.symbol, c.open_time, c.was_state, c.before, c.after, c.load_id
      FROM candle_corrections AS c
      JOIN curated_loads AS l USING (load_id)
     WHERE l.loaded_at >= %(since)s
     ORDER BY l.loaded_at DESC, c.open_time
     LIMIT %(limit)s
"""
DEAD_LETTERS_SQL = """
    SELECT code AS reason, sum(count)::bigint AS dead_letters,
           string_agg(DISTINCT source, ', ') AS sources,
           max(last_at) AS last_at,
           (array_agg(last_reason ORDER BY last_at DESC))[1] AS latest_example
      FROM dead_letter_counts
     WHERE day >= %(since)s::date
     GROUP BY code
     ORDER BY dead_letters DESC, reason
"""
CANDLE_STATES_SQL = """
    SELECT exchange, symbol,
           count(*) FILTER (WHERE state = 'live') AS live,
           count(*) FILTER (WHERE state = 'closed') AS closed,
           count(*) FILTER (WHERE state = 'curated') AS curated,
           count(*) FILTER (WHERE trades = 0) AS without_trades,
           min(open_time) AS first_open, max(open_time) AS last_open
      FROM candles
     WHERE open_time >= %(since)s
     GROUP BY exchange, symbol
     ORDER BY exchange, symbol
"""
RECONCILIATIONS_SQL = """
    SELECT DISTINCT ON (exchange, symbol)
           exchange, symbol, trade_date, source, klines, candles, matched, mismatched, missing_candles,
           missing_klines, match_rate, checked_at
      FROM kline_reconciliations
     ORDER BY exchange, symbol, checked_at DESC
"""
GAP_STATUSES = ("open", "unfillable", "filled", "recorded")


@st.cache_data(ttl=10, show_spinner=False, max_entries=MAX_ENTRIES)
def latest_validations() -> pd.DataFrame:
    return query(LATEST_VALIDATIONS_SQL)


@st.cache_data(ttl=10, show_spinner=False, max_entries=MAX_ENTRIES)
def validation_history(since: datetime, limit: int = 200) -> pd.DataFrame:
    return query(VALIDATION_HISTORY_SQL, {"since": since, "limit": limit})


@st.cache_data(ttl=10, show_spinner=False, max_entries=MAX_ENTRIES)
def gaps(statuses: tuple[str, ...], limit: int = 500) -> pd.DataFrame:
    unknown = set(statuses) - set(GAP_STATUSES)
    if unknown:
        raise ValueError(f"unknown gap status {sorted(unknown)}; known: {', '.join(GAP_STATUSES)}")
    return query(GAPS_SQL, {"statuses": list(statuses), "limit": limit})


@st.cache_data(ttl=10, show_spinner=False, max_entries=MAX_ENTRIES)
def gap_counts() -> pd.DataFrame:
    return query(GAP_COUNTS_SQL)


@st.cache_data(ttl=10, show_spinner=False, max_entries=MAX_ENTRIES)
def curated_loads(since: datetime, limit: int = 100) -> pd.DataFrame:
    return query(LOADS_SQL, {"since": since, "limit": limit})


@st.cache_data(ttl=10, show_spinner=False, max_entries=MAX_ENTRIES)
def corrections(since: datetime, limit: int = 500) -> pd.DataFrame:
    return query(CORRECTIONS_SQL, {"since": since, "limit": limit})


@st.cache_data(ttl=10, show_spinner=False, max_entries=MAX_ENTRIES)
def dead_letters(since: datetime) -> pd.DataFrame:
    return query(DEAD_LETTERS_SQL, {"since": since})


@st.cache_data(ttl=10, show_spinner=False, max_entries=MAX_ENTRIES)
def candle_states(since: datetime) -> pd.DataFrame:
    return query(CANDLE_STATES_SQL, {"since": since})


@st.cache_data(ttl=30, show_spinner=False, max_entries=MAX_ENTRIES)
def reconciliations() -> pd.DataFrame:
    return query(RECONCILIATIONS_SQL)


def data_docs_link(docs_path: str | None) -> str | None:
    """The URL of a validation's Data Docs page under CANDLELAKE_DATA_DOCS_URL, or None when unknown.

    `quality_runs.docs_path` is the page's path on the machine that validated; the site's root is
    `<reports dir>/data_docs`, served at the configured URL.
    """
    if not docs_path:
        return None
    settings = load_settings()
    root = settings.reports_dir / "data_docs"
    try:
        relative = Path(docs_path).resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return f"{settings.data_docs_url.rstrip('/')}/{relative.as_posix()}"


def data_docs_link_root() -> str:
    """The Data Docs site's front page."""
    return f"{load_settings().data_docs_url.rstrip('/')}/index.html"


def _plain(value: object) -> str:
    # NUMERIC travels as text with Spark's fixed scale ("714.2420976400000000"): print it without the zeros.
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    return exact(number.normalize()) if number.is_finite() else str(value)


def describe_change(before: dict[str, object] | None, after: dict[str, object] | None) -> str:
    """`close 64000.1 -> 64000.2, trades 10 -> 11` from a correction's before/after JSON."""
    before, after = before or {}, after or {}
    names = sorted(set(before) | set(after))
    return ", ".join(f"{name} {_plain(before.get(name))} -> {_plain(after.get(name))}" for name in names)


def since(days: int) -> datetime:
    """Midnight UTC `days` days ago (a stable cache key for the whole day)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)
