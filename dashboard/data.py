"""The dashboard's only door to PostgreSQL: one cached read-only connection and parameterized queries.

Everything here returns pandas DataFrames whose prices and volumes are still exact `Decimal`s (NUMERIC
leaves PostgreSQL through `trim_scale`, so Spark's fixed scale adds no trailing zeros); the chart helpers
turn them into floats only to draw them, and the page prints exact values from these frames.

The connection uses the read-only role (`Settings.pg_reader_dsn`) *and* a read-only session, so a
mistaken query cannot write even if the role's grants were ever widened.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
import psycopg2
import psycopg2.extensions
import streamlit as st

from candlelake.config import load_settings

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

# The window ends at the market's newest candle, not at now(): a replayed historical sample or a
# stream that paused still shows its last `lookback` of data (the page says how old that candle is).
# Newest first with a LIMIT so that a very long window at 1-second candles is cut at its old end.
CANDLES_SQL = """
    WITH latest AS (
        SELECT max(open_time) AS open_time
          FROM candles
         WHERE exchange = %(exchange)s AND symbol = %(symbol)s
    )
    SELECT c.open_time, c.close_time,
           trim_scale(c.open) AS open, trim_scale(c.high) AS high,
           trim_scale(c.low) AS low, trim_scale(c.close) AS close,
           trim_scale(c.volume) AS volume, trim_scale(c.quote_volume) AS quote_volume,
           c.trades,
           trim_scale(c.taker_buy_volume) AS taker_buy_volume,
           trim_scale(c.vwap) AS vwap,
           c.state
      FROM candles AS c, latest
     WHERE c.exchange = %(exchange)s AND c.symbol = %(symbol)s
       AND c.open_time > latest.open_time - %(lookback)s
     ORDER BY c.open_time DESC
     LIMIT %(limit)s
"""
CANDLE_COLUMNS = (
    "open_time",
    "close_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "vwap",
    "state",
)

# Plotly stays responsive up to a few thousand candles; 24h of 1-minute candles is 1,440.
MAX_CANDLES = 5_000


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
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"cannot reach {_describe_target()}: {reason}. Is the platform up? Start it with `candlelake up`."
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


def query(sql: str, params: dict[str, Any] | tuple[Any, ...] | None = None) -> pd.DataFrame:
    """Run one parameterized SELECT and return its rows as a DataFrame (column names from the cursor).

    A connection that broke since last use (PostgreSQL restarted) is dropped and the query retried once
    on a fresh one; any other database error becomes a `DataError` with a readable message.
    """
    for attempt in (1, 2):
        conn = connection()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                columns = [col.name for col in cur.description or ()]
                rows = cur.fetchall()
            return pd.DataFrame.from_records(rows, columns=columns)
        except psycopg2.Error as exc:
            broken = conn.closed != 0
            if broken:
                _connect.clear()
                if attempt == 1:
                    continue
            message = (exc.pgerror or str(exc)).strip()
            detail = message.splitlines()[0] if message else type(exc).__name__
            raise DataError(f"query against {_describe_target()} failed: {detail}") from exc
    raise AssertionError("unreachable: the loop returns or raises")


@st.cache_data(ttl=10, show_spinner=False)
def list_markets() -> pd.DataFrame:
    """Every (exchange, symbol) with at least one candle, sorted; empty before the first candle."""
    markets = query(MARKETS_SQL)
    if markets.empty:
        return pd.DataFrame(columns=["exchange", "symbol"])
    return markets


# A short TTL shares one query among every viewer's refresh without making the chart stale.
@st.cache_data(ttl=2, show_spinner=False)
def load_candles(exchange: str, symbol: str, lookback: timedelta, limit: int = MAX_CANDLES) -> pd.DataFrame:
    """Base-interval candles of one market for `lookback` up to its newest candle, oldest first.

    Price and volume columns hold exact `Decimal`s; `open_time`/`close_time` are UTC timestamps.
    """
    if lookback <= timedelta(0):
        raise DataError(f"lookback must be positive, got {lookback}")
    frame = query(CANDLES_SQL, {"exchange": exchange, "symbol": symbol, "lookback": lookback, "limit": limit})
    if frame.empty:
        return pd.DataFrame(columns=list(CANDLE_COLUMNS))
    frame = frame.iloc[::-1].reset_index(drop=True)
    for column in ("open_time", "close_time"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def base_interval_label() -> str:
    """The stored candle interval as a short label ("1m" or "1s"), from CANDLELAKE_CANDLE_INTERVAL."""
    return {"1 minute": "1m", "1 second": "1s"}.get(load_settings().candle_interval, "1m")
