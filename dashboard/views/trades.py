"""Trades page: the raw trades behind one 1m candle, and a market's time-and-sales tape, from the lake.

The candle is PostgreSQL's; its trades are the lake's (DuckDB over the committed Parquet files), each
once. The page recomputes the candle from those trades and says whether the two agree: a live candle
the stream is still updating, or trades whose lake batch has not committed yet, can differ for a few
seconds; a curated candle must agree exactly. The tape shows the market's newest trades and redraws
itself every few seconds. Market and candle are kept in the URL, so a link opens the same trades.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import streamlit as st

from dashboard import data, trades_data
from dashboard.formats import exact, in_zone

TAPE_SECONDS = 2
TAPE_ROWS = 50
MINUTE_FORMAT = "%Y-%m-%d %H:%M"
FIGURES = ("open", "high", "low", "close", "volume", "trades")
# What the trades fix unambiguously. A count can differ without anything being wrong: an exchange's
# aggregate trade (Binance's aggTrade) is one row here, and a candle loaded from the exchange's own
# klines counts the raw trades inside it.
CHECKED = ("open", "high", "low", "close", "volume")


def _market() -> tuple[str, str] | None:
    try:
        markets = data.list_markets()
    except data.DataError as exc:
        st.error(str(exc))
        return None
    if markets.empty:
        st.info("No candles yet, so no market to show trades of: run `candlelake up`, or `candlelake replay FILE`.")
        return None
    names = [f"{e}:{s}" for e, s in zip(markets["exchange"], markets["symbol"], strict=True)]
    chosen = st.query_params.get("trades_market")
    if chosen is not None and chosen not in names:
        st.warning(f"Unknown market {chosen!r} in the link; showing {names[0]} instead.")
        del st.query_params["trades_market"]
    market = st.selectbox("Market", names, key="trades_market", bind="query-params")
    exchange, _, symbol = (market or names[0]).partition(":")
    return exchange, symbol


def _minute(newest: datetime) -> datetime | None:
    """The candle the user asked for (UTC), by default the market's newest; None (with why) for bad input."""
    text = st.text_input(
        "Candle (its open time, UTC, YYYY-MM-DD HH:MM)",
        value=f"{newest:{MINUTE_FORMAT}}",
        key="trades_minute",
        bind="query-params",
    )
    try:
        return datetime.strptime(text.strip(), MINUTE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        st.error(f"{text!r} is not a minute: write it as {newest:{MINUTE_FORMAT}}")
        return None


def _side(is_buyer_maker: bool) -> str:
    # The buyer was the resting order: the taker sold into the bid.
    return "sell" if is_buyer_maker else "buy"


def _table(trades: pd.DataFrame, tz: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": [
                f"{t.astimezone(ZoneInfo(tz)):%H:%M:%S}.{t.microsecond // 1000:03d}" for t in trades["trade_time"]
            ],
            "trade id": trades["trade_id"],
            "price": [exact(p) for p in trades["price"]],
            "qty": [exact(q) for q in trades["qty"]],
            "side": [_side(m) for m in trades["is_buyer_maker"]],
            "source": trades["source"],
        }
    )


def _behind_the_candle(exchange: str, symbol: str, minute: datetime, tz: str) -> None:
    st.subheader(f"Trades of the {in_zone(minute, tz)} candle", anchor="candle")
    try:
        candles = data.load_candles(exchange, symbol, "1m", minute, minute + timedelta(minutes=1))
        trades = trades_data.minute_trades(exchange, symbol, minute)
    except data.DataError as exc:
        st.error(str(exc))
        return
    made = trades_data.candle_of(trades)
    stored = None if candles.empty else candles.iloc[0]
    if stored is None and made is None:
        st.info(f"No candle and no trades of {exchange}:{symbol} at {in_zone(minute, tz)}.")
        return
    columns = st.columns(len(FIGURES))
    for column, name in zip(columns, FIGURES, strict=True):
        ours = None if made is None else getattr(made, name)
        column.metric(f"{name} (trades)", "-" if ours is None else exact(ours))
    if stored is None:
        st.warning("The lake has trades for this minute but PostgreSQL has no candle for it (yet).")
    elif made is None:
        if int(stored["trades"]) == 0:
            st.info("A quiet minute: the candle carries the previous close and no trade made it.")
        else:
            st.warning(
                f"PostgreSQL's candle counts {int(stored['trades'])} trades, the lake holds none of them: "
                "their lake batch has not committed yet, or the lake was cleared."
            )
    else:
        differ = [n for n in CHECKED if getattr(made, n) != stored[n]]  # Decimals: 1.50 == 1.5
        state = stored["state"]
        if not differ:
            st.success(f"The {len(trades):,} trades make exactly PostgreSQL's candle ({state}).")
            if int(stored["trades"]) != made.trades:
                st.caption(
                    f"PostgreSQL's candle counts {int(stored['trades']):,} trades: it counts the raw trades inside "
                    "the exchange's aggregate ones, which the lake holds as one row each."
                )
        else:
            shown = ", ".join(f"{n} {exact(stored[n])} in PostgreSQL" for n in differ)
            still = " It is still live: the stream may not have landed every trade." if state == "live" else ""
            st.warning(f"The trades differ from PostgreSQL's {state} candle: {shown}.{still}")
    if not trades.empty:
        st.dataframe(_table(trades, tz), hide_index=True, width="stretch")


def _tape(exchange: str, symbol: str, until: datetime) -> None:
    try:
        trades = trades_data.tape(exchange, symbol, until, TAPE_ROWS)
    except data.DataError as exc:
        st.error(str(exc))
        return
    if trades.empty:
        st.info(f"No trades of {exchange}:{symbol} in the lake in the day before {until:%Y-%m-%d %H:%M} UTC.")
        return
    newest_first = _table(trades, st.session_state.get("tz", "UTC")).iloc[::-1]
    st.dataframe(
        newest_first.style.map(lambda side: f"color: {'#2e7d32' if side == 'buy' else '#c62828'}", subset=["side"]),
        hide_index=True,
        width="stretch",
    )


def main() -> None:
    st.title("Trades")
    tz = st.session_state.get("tz", "UTC")
    market = _market()
    if market is None:
        return
    exchange, symbol = market
    try:
        span = data.market_span(exchange, symbol)
    except data.DataError as exc:
        st.error(str(exc))
        return
    if span is None:
        st.info(f"No candles for {exchange}:{symbol} any more; pick another market.")
        return
    minute = _minute(span[1])
    if minute is not None:
        _behind_the_candle(exchange, symbol, minute, tz)
    st.subheader("Time and sales", anchor="tape")
    st.caption(f"The newest {TAPE_ROWS} trades, redrawn every {TAPE_SECONDS} s; buys green, sells red.")
    # The tape ends at the market's newest candle, not at now(): a replayed day still shows its last trades.
    st.fragment(_tape, run_every=TAPE_SECONDS)(exchange, symbol, span[1] + timedelta(minutes=1))


main()
