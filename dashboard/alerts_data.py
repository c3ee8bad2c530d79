"""What the dashboard reads and writes of alerts: raised alerts and price rules.

Reads go through the read-only connection (`dashboard.data.query`). The one write the dashboard makes,
adding or removing a price alert rule, goes through the alert editor role (`Settings.pg_alerts_dsn`),
which may change `alert_rules` and nothing else, on a connection opened for that write and closed after.
The rule is then the platform's: the scorer evaluates it whether or not a browser is open.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import psycopg2
import streamlit as st

from candlelake.alerts import store
from candlelake.alerts.price_rules import PriceRule
from candlelake.config import load_settings
from candlelake.util import first_line
from dashboard.data import MAX_ENTRIES, DataError, query

RULES_SQL = """
    SELECT id, exchange, symbol, direction, level, note, created_by, created_at
      FROM alert_rules
     WHERE (%(exchange)s IS NULL OR (exchange = %(exchange)s AND symbol = %(symbol)s))
     ORDER BY exchange, symbol, level
"""
RECENT_SQL = """
    SELECT id, raised_at, type, exchange, symbol, at, kind, detector, score, trim_scale(price) AS price,
           features->>'level' AS level, model_version, candle_closed_at, webhook_status
      FROM alerts
     WHERE raised_at >= %(since)s
       AND (%(exchange)s IS NULL OR (exchange = %(exchange)s AND symbol = %(symbol)s))
       AND (%(type)s IS NULL OR type = %(type)s)
     ORDER BY raised_at DESC, id DESC
     LIMIT %(limit)s
"""
# The anomalies of one market inside a chart's window, by the candle they are of.
ANOMALIES_SQL = """
    SELECT id, at, kind, detector, score
      FROM alerts
     WHERE type = 'anomaly' AND exchange = %(exchange)s AND symbol = %(symbol)s
       AND at >= %(start)s AND at < %(end)s
     ORDER BY at, detector
"""


@st.cache_data(ttl=5, show_spinner=False, max_entries=MAX_ENTRIES)
def rules(exchange: str | None = None, symbol: str | None = None) -> pd.DataFrame:
    return query(RULES_SQL, {"exchange": exchange, "symbol": symbol})


@st.cache_data(ttl=5, show_spinner=False, max_entries=MAX_ENTRIES)
def recent(
    since: datetime, exchange: str | None = None, symbol: str | None = None, kind: str | None = None, limit: int = 200
) -> pd.DataFrame:
    return query(RECENT_SQL, {"since": since, "exchange": exchange, "symbol": symbol, "type": kind, "limit": limit})


@st.cache_data(ttl=5, show_spinner=False, max_entries=MAX_ENTRIES)
def anomalies(exchange: str, symbol: str, start: datetime, end: datetime) -> pd.DataFrame:
    return query(ANOMALIES_SQL, {"exchange": exchange, "symbol": symbol, "start": start, "end": end})


def _editor() -> psycopg2.extensions.connection:
    s = load_settings()
    try:
        return psycopg2.connect(s.pg_alerts_dsn, connect_timeout=5, application_name="candlelake-dashboard-alerts")
    except psycopg2.OperationalError as exc:
        raise DataError(
            f"cannot save alert rules: PostgreSQL at {s.host}:{s.pg_port} refused the alert editor "
            f"{s.pg_alerts_user} ({first_line(exc)})"
        ) from None


def add_rule(market: str, direction: str, level: str, note: str = "") -> PriceRule:
    """Save a rule; store.RuleError (a ValueError) says what is wrong with the input."""
    conn = _editor()
    try:
        with conn, conn.cursor() as cur:
            rule = store.add_rule(cur, market, direction, level, note, created_by="dashboard")
    finally:
        conn.close()
    rules.clear()
    return rule


def remove_rule(rule_id: int) -> PriceRule:
    conn = _editor()
    try:
        with conn, conn.cursor() as cur:
            rule = store.remove_rule(cur, rule_id)
    finally:
        conn.close()
    rules.clear()
    return rule
