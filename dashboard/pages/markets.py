"""Markets page: live candlesticks and volume for one market, read from PostgreSQL.

Selectors (exchange, symbol, lookback) live outside the fragment, so changing one reruns the page; the
chart and its figures live in an `st.fragment` that reruns on its own every few seconds while "Live" is
on, so a refresh redraws only the chart. The selection is kept in the URL (`bind="query-params"`), so a
link opens the same market.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd
import streamlit as st

from dashboard import charts, data

LOOKBACKS: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
}
DEFAULT_LOOKBACK = "1h"
# The stream upserts live candles every trigger (about a second); 5 s keeps the page fresh without
# making every open browser tab query PostgreSQL continuously.
REFRESH_SECONDS = 5


def _exact(value: Decimal) -> str:
    return format(value, "f")


def _age(then: datetime) -> str:
    seconds = int((datetime.now(UTC) - then).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 172_800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86_400} days ago"


def _wait_for_markets() -> None:
    """Explain why there is nothing to draw, poll every few seconds, rerun the page once there is.

    Covers both a fresh platform (no candle yet) and PostgreSQL being down or restarting, so an open
    tab recovers on its own.
    """
    try:
        markets = data.list_markets()
    except data.DataError as exc:
        st.error(str(exc))
        st.caption(f"Trying again every {REFRESH_SECONDS} s.")
        return
    if not markets.empty:
        st.rerun(scope="app")
    st.info(
        "No candles yet. Candles appear here about a minute after trades start flowing: run "
        "`candlelake up` (the simulator produces trades offline), or `candlelake replay FILE`."
    )


def _show_market(exchange: str, symbol: str, lookback_label: str) -> None:
    """Headline figures and the candlestick chart for one market; runs inside the live fragment."""
    try:
        candles = data.load_candles(exchange, symbol, LOOKBACKS[lookback_label])
    except data.DataError as exc:
        st.error(str(exc))
        return
    if candles.empty:
        st.info(f"No candles for {exchange} {symbol} any more; pick another market.")
        return

    first, last = candles.iloc[0], candles.iloc[-1]
    change = (last["close"] - first["open"]) / first["open"] * 100 if first["open"] else Decimal(0)
    interval = data.base_interval_label()
    cols = st.columns(4)
    cols[0].metric("Last price", _exact(last["close"]), f"{change:+.2f}% over {lookback_label}")
    cols[1].metric(f"Volume ({lookback_label})", _exact(sum(candles["volume"], Decimal(0))))
    cols[2].metric(f"Trades ({lookback_label})", f"{int(candles['trades'].sum()):,}")
    newest: pd.Timestamp = last["open_time"]
    cols[3].metric(
        "Newest candle",
        newest.strftime("%H:%M:%S UTC"),
        last["state"],
        delta_color="off",
        delta_arrow="off",
        help=f"opened {_age(newest.to_pydatetime())}",
    )

    figure = charts.candlestick_figure(candles, revision=f"{exchange}|{symbol}|{lookback_label}")
    st.plotly_chart(figure, width="stretch", key="candles", config={"displaylogo": False})
    capped = " (the newest ones; the window holds more)" if len(candles) >= data.MAX_CANDLES else ""
    st.caption(
        f"{len(candles):,} candles of {interval} for {exchange} {symbol}{capped}, up to the newest candle, "
        f"opened {_age(newest.to_pydatetime())}. Times in UTC. "
        f"Refreshed {datetime.now(UTC):%H:%M:%S} UTC."
    )


def main() -> None:
    st.title("Markets")
    try:
        markets = data.list_markets()
    except data.DataError:
        markets = None
    if markets is None or markets.empty:
        st.fragment(_wait_for_markets, run_every=REFRESH_SECONDS)()
        return

    exchanges = sorted(markets["exchange"].unique().tolist())
    left, middle, right, live_col = st.columns([2, 2, 3, 1], vertical_alignment="bottom")
    exchange = left.selectbox("Exchange", exchanges, key="exchange", bind="query-params")
    symbols = sorted(markets.loc[markets["exchange"] == exchange, "symbol"].tolist())
    symbol = middle.selectbox("Symbol", symbols, key="symbol", bind="query-params")
    lookback = right.segmented_control(
        "Lookback", list(LOOKBACKS), default=DEFAULT_LOOKBACK, required=True, key="lookback", bind="query-params"
    )
    live = live_col.toggle("Live", value=True, key="live", help=f"Redraw every {REFRESH_SECONDS} s")
    if exchange is None or symbol is None:
        return
    # The fragment is built per run so that "Live" off really stops its timer.
    chart = st.fragment(_show_market, run_every=REFRESH_SECONDS if live else None)
    chart(exchange, symbol, lookback or DEFAULT_LOOKBACK)


main()
