"""What the Quality page reads: validations, the gap ledger, late-data corrections, dead letters, candle
states, coverage. Parameterized SELECTs through `dashboard.data.query` (the read-only connection); no Streamlit
widgets here, only short-lived caches so that every open tab shares one query per refresh.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pandas as pd
import streamlit as st

from candlelake.config import load_settings
from dashboard.data import MAX_ENTRIES, base_seconds, query
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
# Per market and UTC day since `since`: how much of the day was covered (market_coverage: the union of the
# `coverage` rows less open trade-id gaps with known times, the same the candles are judged by) as hours and
# as a share of the day (of its hours so far, today), in how many separate stretches, by which kinds and
# sources, and how many base candles of the day are partial: judged against the day's coverage, as the
# rollups judge them (the Markets page draws these hollow), and as the nightly batch stored them when it
# curated them (`candles.coverage`; one the first count calls complete was covered later, by a backfill
# say, and is curated again by the next batch run over that day). The days are those with coverage
# or with candles (the 1d rollups list them without reading every candle): a day of candles without
# coverage is a row of 0%, which is exactly what a reader must see.
COVERAGE_SQL = """
    WITH market_days AS (
        SELECT c.exchange, c.symbol, (d AT TIME ZONE 'UTC')::date AS day
          FROM coverage AS c
         CROSS JOIN LATERAL generate_series(date_trunc('day', greatest(c.started_at, %(since)s), 'UTC'),
                                            c.ended_at - interval '1 microsecond', interval '1 day') AS d
         WHERE c.ended_at > c.started_at AND c.ended_at > %(since)s
        UNION
        SELECT exchange, symbol, (open_time AT TIME ZONE 'UTC')::date
          FROM candle_rollups
         WHERE bucket_seconds = 86400 AND open_time >= %(since)s
    ), days AS (
        SELECT m.exchange, m.symbol, m.day, b.t0, b.t_end, least(b.t_end, now()) AS t1,
               market_coverage(m.exchange, m.symbol, b.t0, b.t_end) AS covered
          FROM market_days AS m
         CROSS JOIN LATERAL (SELECT m.day::timestamp AT TIME ZONE 'UTC' AS t0,
                                    (m.day + 1)::timestamp AT TIME ZONE 'UTC' AS t_end) AS b
         WHERE b.t0 < now()
    )
    SELECT d.exchange, d.symbol, d.day,
           round(extract(epoch FROM s.covered) / 3600, 2)::float8 AS covered_hours,
           round(100 * least(1, extract(epoch FROM s.covered) / extract(epoch FROM d.t1 - d.t0)), 1)::float8
               AS covered_pct,
           s.stretches AS intervals, k.kinds, k.sources, n.candles, n.partial_candles, n.curated_partial
      FROM days AS d
     CROSS JOIN LATERAL (SELECT coalesce(sum(upper(r) - lower(r)), interval '0') AS covered, count(*) AS stretches
                           FROM unnest(d.covered) AS r) AS s
     CROSS JOIN LATERAL (SELECT string_agg(DISTINCT c.kind, ', ' ORDER BY c.kind) AS kinds,
                                string_agg(DISTINCT c.source, ', ' ORDER BY c.source) AS sources
                           FROM coverage AS c
                          WHERE c.exchange = d.exchange AND c.symbol = d.symbol AND c.ended_at > c.started_at
                            AND c.ended_at > d.t0 AND c.started_at < d.t_end) AS k
     CROSS JOIN LATERAL (SELECT count(*) AS candles,
                                count(*) FILTER (WHERE NOT d.covered @> tstzrange(c.open_time, c.open_time + %(base)s,
                                                                                  '[)')) AS partial_candles,
                                count(*) FILTER (WHERE c.coverage = 'partial') AS curated_partial
                           FROM candles AS c
                          WHERE c.exchange = d.exchange AND c.symbol = d.symbol
                            AND c.open_time >= d.t0 AND c.open_time < d.t_end) AS n
     ORDER BY d.day DESC, d.exchange, d.symbol
     LIMIT %(limit)s
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


@st.cache_data(ttl=30, show_spinner=False, max_entries=MAX_ENTRIES)
def coverage_by_day(since: datetime, limit: int = 1000) -> pd.DataFrame:
    """Per market and UTC day from `since` on, newest day first (see COVERAGE_SQL): exchange, symbol, day,
    covered_hours, covered_pct (0-100), intervals (separate covered stretches), kinds, sources, candles,
    partial_candles, curated_partial."""
    base = timedelta(seconds=base_seconds())
    return query(COVERAGE_SQL, {"since": since, "base": base, "limit": limit})


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
