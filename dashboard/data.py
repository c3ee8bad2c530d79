"""The dashboard's only door to PostgreSQL: one cached read-only connection and parameterized queries.

Everything here returns pandas DataFrames whose prices and volumes are still exact `Decimal`s (NUMERIC
leaves PostgreSQL through `trim_scale`, so Spark's fixed scale adds no trailing zeros); the chart helpers
turn them into floats only to draw them, and the page prints exact values from these frames.

The connection uses the read-only role (`Settings.pg_reader_dsn`) *and* a read-only session, so a
mistaken query cannot write even if the role's grants were ever widened.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pandas as pd
import psycopg2
import psycopg2.extensions
import streamlit as st

from candlelake import candle
from candlelake.config import load_settings
from candlelake.serve import rollups
from candlelake.util import first_line

T = TypeVar("T")

# Why each option: read-only twice over (see module docstring); UTC so every timestamp the page shows
# is UTC whatever the server's zone; a statement timeout so one slow query cannot hang a page forever.
_SESSION_OPTIONS = "-c default_transaction_read_only=on -c timezone=UTC -c statement_timeout=15000"

# Distinct markets by a loose index scan over the primary key (exchange, symbol, open_time): one index
# probe per market instead of reading every candle, which `SELECT DISTINCT` would do on PostgreSQL < 18.
MARKETS_SQL = """
    WITH RECURSIVE markets AS (
        (SELECT exchange, symbol FROM candles ORDER BY exchange, symbol LIMIT 1)
        UNION ALL
        SELECT nxt.exchange, nxt.symbol
          FROM markets AS m
         CROSS JOIN LATERAL (
               SELECT c.exchange, c.symbol
                 FROM candles AS c
                WHERE (c.exchange, c.symbol) > (m.exchange, m.symbol)
                ORDER BY c.exchange, c.symbol
                LIMIT 1) AS nxt
    )
    SELECT exchange, symbol FROM markets ORDER BY exchange, symbol
"""

# The market's first and newest base candle: two probes of the primary key.
MARKET_SPAN_SQL = """
    SELECT (SELECT min(open_time) FROM candles WHERE exchange = %(exchange)s AND symbol = %(symbol)s) AS first,
           (SELECT max(open_time) FROM candles WHERE exchange = %(exchange)s AND symbol = %(symbol)s) AS newest
"""

# Gap-ledger entries that mean "data missing" in a window. Trade-id gaps carry no times: they are placed
# between the newest candle holding an id below the gap and the oldest holding an id above it (the
# candles keep their first and last trade id). Disconnect intervals carry their own times.
MISSING_SQL = """
    WITH id_gaps AS MATERIALIZED (  -- first: almost always empty, and then nothing below runs
        SELECT * FROM trade_gaps
         WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND first_id IS NOT NULL
           AND status IN ('open', 'unfillable')
    )
    SELECT g.gap_id, g.kind, g.status, g.cause, g.first_id, g.last_id,
           coalesce((SELECT max(c.open_time) + %(base)s FROM candles AS c
                      WHERE c.exchange = g.exchange AND c.symbol = g.symbol
                        AND c.open_time >= %(start)s AND c.open_time < %(end)s
                        AND c.last_trade_id < g.first_id), %(start)s) AS started_at,
           coalesce((SELECT min(c.open_time) FROM candles AS c
                      WHERE c.exchange = g.exchange AND c.symbol = g.symbol
                        AND c.open_time >= %(start)s AND c.open_time < %(end)s
                        AND c.first_trade_id > g.last_id), %(end)s) AS ended_at
      FROM id_gaps AS g
       -- The window's first and last trade ids: uncorrelated, so computed once, and only for a gap.
     WHERE g.first_id <= (SELECT last_trade_id FROM candles
                           WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND last_trade_id IS NOT NULL
                             AND open_time >= %(start)s AND open_time < %(end)s
                           ORDER BY open_time DESC LIMIT 1)
       AND g.last_id >= (SELECT first_trade_id FROM candles
                          WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND first_trade_id IS NOT NULL
                            AND open_time >= %(start)s AND open_time < %(end)s
                          ORDER BY open_time LIMIT 1)
    UNION ALL
    SELECT gap_id, kind, status, cause, NULL, NULL, greatest(started_at, %(start)s), least(ended_at, %(end)s)
      FROM trade_gaps
     WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND kind = 'disconnect'
       AND started_at < %(end)s AND ended_at > %(start)s
     ORDER BY started_at
     LIMIT 200
"""

# The time of [start, end) that no coverage holds (table `coverage`, less open trade-id gaps with known
# times: the SQL function market_coverage, the same the candles are judged by), which the chart shades as
# unknown. Cut at now() less `grace`: the rest of a live window has not happened yet, and a live feed
# extends its coverage only on each health beat, so its last seconds are not yet reported rather than unseen.
# A covered stretch shorter than `min_seen` (one candle) between two unknown ones is shaded too: it is
# narrower than a candle, the candle around it is partial anyway, and a year of a flapping feed stays a
# few hundred bands instead of thousands.
UNCOVERED_SQL = """
    WITH w AS MATERIALIZED (
        SELECT t0, t1, CASE WHEN t1 > t0 THEN market_coverage(%(exchange)s, %(symbol)s, t0, t1)
                            ELSE '{}'::tstzmultirange END AS covered
          FROM (SELECT %(start)s::timestamptz AS t0, least(%(end)s::timestamptz, now() - %(grace)s) AS t1) AS bounds
    ), unseen AS (
        SELECT CASE WHEN t1 > t0 THEN tstzmultirange(tstzrange(t0, t1, '[)')) - covered
                    ELSE '{}'::tstzmultirange END
               + coalesce((SELECT range_agg(r) FROM unnest(covered) AS r
                            WHERE upper(r) - lower(r) < %(min_seen)s AND lower(r) > t0 AND upper(r) < t1),
                          '{}'::tstzmultirange) AS ranges
          FROM w
    )
    SELECT lower(r) AS started_at, upper(r) AS ended_at
      FROM unseen CROSS JOIN LATERAL unnest(ranges) AS r
     ORDER BY 1
     LIMIT %(limit)s
"""
MAX_UNCOVERED = 500

# open_time, the exchange's ten kline values, vwap, state, filled, coverage: what candlelake.serve.rollups returns.
CANDLE_COLUMNS = rollups.COLUMNS
DECIMAL_COLUMNS = candle.DECIMALS

# Plotly stays responsive up to a few thousand candles; a view asking for more gets a larger bucket.
MAX_CANDLES = 5_000


# Every cached query keeps at most this many argument sets: a live view moves its window every minute,
# and expired entries of keys nobody asks for again are only dropped when the cache is full.
MAX_ENTRIES = 64


class DataError(RuntimeError):
    """PostgreSQL could not answer; the message says what to check, never shows a password."""


def _describe_target() -> str:
    s = load_settings()
    return f"PostgreSQL at {s.host}:{s.pg_port}/{s.pg_database} as {s.pg_reader_user}"


@st.cache_resource(
    show_spinner=False,
    # A connection the server or network closed is useless; connect afresh on the next access.
    validate=lambda conn: conn.closed == 0,
    on_release=lambda conn: conn.close(),
)
def _connect(dsn: str) -> psycopg2.extensions.connection:
    try:
        conn = psycopg2.connect(
            dsn, connect_timeout=5, application_name="candlelake-dashboard", options=_SESSION_OPTIONS
        )
    except psycopg2.OperationalError as exc:
        # libpq's first line names the cause (refused, auth failed) without echoing the DSN.
        raise DataError(
            f"cannot reach {_describe_target()}: {first_line(exc)}. Is the platform up? Start it with `candlelake up`."
        ) from None
    # Autocommit: every query is its own short read-only transaction, so a failed one never leaves the
    # shared connection stuck in an aborted transaction for the other sessions and fragments.
    conn.set_session(readonly=True, autocommit=True)
    return conn


def connection() -> psycopg2.extensions.connection:
    """The process-wide read-only connection (one per DSN), created on first use.

    psycopg2 connections are thread-safe, so Streamlit's per-session script threads share it; queries
    simply take turns, which is plenty for a dashboard that reads a few hundred rows per refresh.
    """
    return _connect(load_settings().pg_reader_dsn)


def _with_connection(work: Callable[[psycopg2.extensions.connection], T]) -> T:
    """Run `work` on the shared connection; a connection that broke since last use (PostgreSQL restarted)
    is dropped and `work` retried once on a fresh one; any database error becomes a readable `DataError`."""
    for attempt in (1, 2):
        conn = connection()
        try:
            return work(conn)
        except psycopg2.Error as exc:
            if conn.closed != 0:
                _connect.clear()
                if attempt == 1:
                    continue
            message = (exc.pgerror or str(exc)).strip()
            detail = message.splitlines()[0] if message else type(exc).__name__
            raise DataError(f"query against {_describe_target()} failed: {detail}") from exc
    raise AssertionError("unreachable: the loop returns or raises")


def query(sql: str, params: dict[str, Any] | tuple[Any, ...] | None = None) -> pd.DataFrame:
    """Run one parameterized SELECT and return its rows as a DataFrame (column names from the cursor)."""

    def run(conn: psycopg2.extensions.connection) -> pd.DataFrame:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            columns = [col.name for col in cur.description or ()]
            return pd.DataFrame.from_records(cur.fetchall(), columns=columns)

    return _with_connection(run)


def section(load: Callable[[], pd.DataFrame]) -> pd.DataFrame | None:
    """Run one page section's query; when PostgreSQL cannot answer, show why and return None, so that
    the other sections of the page still render."""
    try:
        return load()
    except DataError as exc:
        st.error(str(exc))
        return None


@st.cache_data(ttl=10, show_spinner=False, max_entries=MAX_ENTRIES)
def list_markets() -> pd.DataFrame:
    """Every (exchange, symbol) with at least one candle, sorted; empty before the first candle."""
    markets = query(MARKETS_SQL)
    if markets.empty:
        return pd.DataFrame(columns=["exchange", "symbol"])
    return markets


@st.cache_data(ttl=2, show_spinner=False, max_entries=MAX_ENTRIES)
def market_span(exchange: str, symbol: str) -> tuple[datetime, datetime] | None:
    """The open_time of a market's first and newest base candle, or None for a market without candles."""
    row = query(MARKET_SPAN_SQL, {"exchange": exchange, "symbol": symbol})
    first, newest = row.iloc[0]["first"], row.iloc[0]["newest"]
    if first is None or pd.isna(first):
        return None
    return first.astimezone(UTC), newest.astimezone(UTC)


# A short TTL shares one query among every viewer's refresh without making the chart stale; a frame of
# 5,000 candles of Decimals is a few MB, so fewer of them are kept.
@st.cache_data(ttl=2, show_spinner=False, max_entries=16)
def load_candles(exchange: str, symbol: str, bucket: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Candles of `bucket` (any size the base makes: 1m, 5m, 45m, 1d, 1w...) opening in [start, end).

    Rolled up from the base candles with the exchange's rules, empty intervals filled (`filled`, zero
    `trades`) where they were covered; `coverage` is 'complete' (every instant seen) or 'partial' (trades,
    but part of the interval unseen); an interval neither covered nor traded is no row at all. Prices and
    volumes are exact `Decimal`s, `open_time` a UTC timestamp, oldest first. Raises `rollups.RollupError`
    for a bucket or range a person must correct.
    """
    base = base_seconds()
    parsed = rollups.parse_bucket(bucket, base)

    def run(conn: psycopg2.extensions.connection) -> list[tuple[object, ...]]:
        return rollups.fetch_rollup(conn, exchange, symbol, parsed, start, end, base, max_rows=MAX_CANDLES)

    frame = pd.DataFrame.from_records(_with_connection(run), columns=list(CANDLE_COLUMNS))
    for column in DECIMAL_COLUMNS:
        frame[column] = [None if v is None else Decimal(v) for v in frame[column]]
    frame["open_time"] = pd.to_datetime(frame["open_time"], utc=True, format="ISO8601")
    frame["trades"] = frame["trades"].astype("int64")
    frame["filled"] = frame["filled"] == "true"
    return frame


@st.cache_data(ttl=10, show_spinner=False, max_entries=MAX_ENTRIES)
def missing_intervals(exchange: str, symbol: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Gap-ledger entries overlapping [start, end) as time intervals: open or unfillable trade-id gaps
    and feed disconnects (kind, status, cause, started_at, ended_at)."""
    base = timedelta(seconds=base_seconds())
    return query(MISSING_SQL, {"exchange": exchange, "symbol": symbol, "start": start, "end": end, "base": base})


# Live coverage grows with every producer health beat: as short-lived as the candles it explains.
@st.cache_data(ttl=2, show_spinner=False, max_entries=MAX_ENTRIES)
def uncovered_intervals(
    exchange: str, symbol: str, start: datetime, end: datetime, min_seen: timedelta
) -> pd.DataFrame:
    """The parts of [start, end) (up to the last health beats) in which nothing said it saw every trade of
    the market, as (started_at, ended_at), oldest first, at most MAX_UNCOVERED of them; covered stretches
    shorter than `min_seen` between two of them are counted as unseen (see UNCOVERED_SQL)."""
    params = {"exchange": exchange, "symbol": symbol, "start": start, "end": end, "grace": coverage_grace()}
    frame = query(UNCOVERED_SQL, {**params, "min_seen": min_seen, "limit": MAX_UNCOVERED})
    if frame.empty:
        return pd.DataFrame(columns=["started_at", "ended_at"])
    return frame


def coverage_grace() -> timedelta:
    """How far behind now() a live feed's coverage may be without anything lost: two health beats (it is
    extended on each beat, and one may be in flight when the page asks)."""
    return timedelta(seconds=2 * load_settings().health_interval_s)


def base_seconds() -> int:
    """The stored candle interval in seconds (CANDLELAKE_CANDLE_INTERVAL: 1 minute or 1 second)."""
    return 1 if load_settings().candle_interval == "1 second" else 60
