"""The dashboard against real PostgreSQL: the markets page draws exactly the candles in the table, and
the data module's connection cannot write.

Candles go in with the writer role under an exchange name no real source uses (unique per run, so
parallel runs and a live platform are never disturbed) and are deleted afterwards. PostgreSQL is started
through the platform's own component when it is not already running, and stopped again in that case.
"""

from __future__ import annotations

import base64
import json
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd
import psycopg2
import psycopg2.errors
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from candlelake.config import PROJECT_ROOT, Settings, load_settings
from candlelake.platform.orchestrator import up
from candlelake.platform.postgres import PostgresComponent

# The app adds the project root itself under `streamlit run`; this process imports `dashboard` directly.
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from dashboard import data

pytestmark = pytest.mark.integration

APP = PROJECT_ROOT / "dashboard" / "app.py"
SYMBOL = "TESTUSDT"
# Prices with more digits than a float carries exactly, so a rounded value on the page would show.
CLOSES = [
    Decimal("64123.45000001"),
    Decimal("64125.1"),
    Decimal("64120.00000009"),
    Decimal("64130.5"),
    Decimal("64129.99999999"),
    Decimal("64140.12345678"),
    Decimal("64138.87654321"),
]

INSERT_SQL = """
    INSERT INTO candles (exchange, symbol, open_time, close_time, open, high, low, close, volume,
                         quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, vwap, state)
    VALUES (%(exchange)s, %(symbol)s, %(open_time)s, %(close_time)s, %(open)s, %(high)s, %(low)s, %(close)s,
            %(volume)s, %(quote_volume)s, %(trades)s, %(taker_buy_volume)s, %(taker_buy_quote_volume)s,
            %(vwap)s, %(state)s)
"""


@pytest.fixture(scope="module")
def settings() -> Iterator[Settings]:
    settings = load_settings()
    postgres = PostgresComponent(settings)
    started_here = not (postgres.pid() and postgres.healthy())
    if started_here:
        up([postgres], lambda _: None)
    yield settings
    if started_here:
        postgres.stop()


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    # st.cache_data is process-wide; an earlier test's cached market list must not leak into this one.
    st.cache_data.clear()


def _candle_rows(exchange: str) -> list[dict[str, Any]]:
    # Recent minutes so the default lookback (1h) holds them all; the newest is still live.
    newest = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = []
    previous = CLOSES[0] - Decimal("2.5")
    for i, close in enumerate(CLOSES):
        open_time = newest - timedelta(minutes=len(CLOSES) - 1 - i)
        volume = Decimal("0.5") + Decimal(i) / 10
        rows.append(
            {
                "exchange": exchange,
                "symbol": SYMBOL,
                "open_time": open_time,
                "close_time": open_time + timedelta(minutes=1) - timedelta(milliseconds=1),
                "open": previous,
                "high": max(previous, close) + 1,
                "low": min(previous, close) - 1,
                "close": close,
                "volume": volume,
                "quote_volume": volume * close,
                "trades": 10 + i,
                "taker_buy_volume": volume / 2,
                "taker_buy_quote_volume": volume * close / 2,
                "vwap": close,
                "state": "live" if i == len(CLOSES) - 1 else "closed",
            }
        )
        previous = close
    return rows


@pytest.fixture
def test_market(settings: Settings) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    exchange = f"test-dashboard-{uuid.uuid4().hex[:8]}"
    rows = _candle_rows(exchange)
    with psycopg2.connect(settings.pg_dsn(), connect_timeout=5) as conn, conn.cursor() as cur:
        cur.executemany(INSERT_SQL, rows)
    conn.close()
    try:
        yield exchange, SYMBOL, rows
    finally:
        with psycopg2.connect(settings.pg_dsn(), connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM candles WHERE exchange = %s", (exchange,))
        conn.close()


def _trace_length(values: Any) -> int:
    """Points in a Plotly trace array: a JSON list, or plotly's typed-array form {dtype, bdata}."""
    if isinstance(values, list):
        return len(values)
    if isinstance(values, dict) and "bdata" in values:
        itemsize = int(values["dtype"][1:]) if values["dtype"][1:].isdigit() else 8
        return len(base64.b64decode(values["bdata"])) // itemsize
    raise AssertionError(f"unexpected trace array {values!r}")


def _figure(at: AppTest) -> dict[str, Any]:
    charts = at.get("plotly_chart")
    assert len(charts) == 1, f"expected one chart, got {len(charts)}"
    return json.loads(charts[0].proto.spec)


def test_markets_page_draws_exactly_the_inserted_candles(settings: Settings, test_market) -> None:
    exchange, symbol, rows = test_market
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception, at.exception
    at.selectbox(key="exchange").set_value(exchange).run()
    at.selectbox(key="symbol").set_value(symbol).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]

    figure = _figure(at)
    candles = [t for t in figure["data"] if t["type"] == "candlestick"]
    bars = [t for t in figure["data"] if t["type"] == "bar"]
    assert len(candles) == 1 and len(bars) == 1
    assert _trace_length(candles[0]["x"]) == len(rows)
    assert _trace_length(candles[0]["close"]) == len(rows)
    assert _trace_length(bars[0]["y"]) == len(rows)
    # Hover labels and the headline show exact decimals, never a float's rounding.
    assert f"C {CLOSES[-1]}" in candles[0]["text"][-1]
    last_price = next(m for m in at.metric if m.label == "Last price")
    assert last_price.value == str(CLOSES[-1])
    trades = next(m for m in at.metric if m.label.startswith("Trades"))
    assert trades.value == f"{sum(r['trades'] for r in rows):,}"


def test_lookback_cuts_the_window_at_the_newest_candle(settings: Settings, test_market) -> None:
    exchange, symbol, _ = test_market
    frame = data.load_candles(exchange, symbol, timedelta(minutes=3))
    # The window ends at the newest candle: 3 minutes hold exactly the last 3 one-minute candles.
    assert frame["close"].tolist() == CLOSES[-3:]
    assert frame["open_time"].is_monotonic_increasing
    assert frame["state"].tolist() == ["closed", "closed", "live"]


def test_no_candles_gets_a_clear_message(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "list_markets", lambda: pd.DataFrame(columns=["exchange", "symbol"]))
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception, at.exception
    assert any("No candles yet" in info.value for info in at.info)
    assert not at.get("plotly_chart")


def test_unreachable_database_gets_a_clear_error_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLELAKE_PG_PORT", "1")  # nothing listens on port 1
    monkeypatch.setenv("CANDLELAKE_PG_READER_PASSWORD", "s3cret-not-shown")
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception, at.exception
    [error] = at.error
    assert "cannot reach PostgreSQL at" in error.value and ":1/" in error.value
    assert "candlelake up" in error.value and "s3cret-not-shown" not in error.value


def test_data_connection_is_read_only(settings: Settings, test_market) -> None:
    exchange, symbol, rows = test_market
    conn = data.connection()
    with conn.cursor() as cur:
        cur.execute("SELECT current_user, current_setting('transaction_read_only')")
        assert cur.fetchone() == (settings.pg_reader_user, "on")
    probe = {**rows[0], "open_time": rows[0]["open_time"] - timedelta(days=1)}
    with pytest.raises(psycopg2.Error) as raised, conn.cursor() as cur:
        cur.execute(INSERT_SQL, probe)
    assert isinstance(raised.value, psycopg2.errors.ReadOnlySqlTransaction | psycopg2.errors.InsufficientPrivilege)
    # Through the module's own query function the refusal is a readable DataError.
    with pytest.raises(data.DataError, match=r"read-only transaction|permission denied"):
        data.query(INSERT_SQL + " RETURNING 1", probe)
    # The connection is still usable afterwards, and nothing was written.
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM candles WHERE exchange = %s AND symbol = %s", (exchange, symbol))
        assert cur.fetchone() == (len(rows),)
