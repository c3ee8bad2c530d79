"""Binance spot and USD-M futures trades: WebSocket events, REST records and data.binance.vision CSV rows.

A combined-stream WebSocket `aggTrade` message, as Binance sends it (the adapter takes the `data` part)::

    {"stream": "btcusdt@aggTrade",
     "data": {"e": "aggTrade", "E": 1617566591315, "s": "BTCUSDT", "a": 665076760, "p": "58001.03000000",
              "q": "0.08620500", "f": 745522877, "l": 745522877, "T": 1617566591314, "m": true, "M": true}}

A `trade` event carries `t` (trade id) instead of `a`/`f`/`l`. A WebSocket event (it has `e`) must carry
every field Binance always sends (`EVENT_FIELDS`): one without is a dead letter naming what is missing,
even where the value could be had elsewhere (the symbol from the stream name), because a frame that lost
a field is not a frame Binance sent. The REST `/api/v3/aggTrades` record is the event without `e`, `E`
and `s`; the REST `/api/v3/trades` record is
`{"id": 28457, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.000012", "time": 1499865549590,
"isBuyerMaker": true, "isBestMatch": true}`. USD-M futures omit the best-match flag `M`, which is how a
record whose market is not given is told apart. Times are epoch milliseconds, or microseconds where
Binance sends them (spot files from 2025 on): the magnitude tells which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from candlelake.sources.fields import (
    InvalidTrade,
    bool_field,
    epoch_us,
    make_trade,
    require,
    require_all,
    text_field,
)
from candlelake.trade import Trade

TRADE_EVENTS = ("aggTrade", "trade")
# What each WebSocket trade event always carries, on spot and USD-M futures alike (every recorded frame
# has them); `M` (best match) is spot only and the trade stream's order ids `b`/`a` were dropped in 2024.
EVENT_FIELDS: dict[str, dict[str, str]] = {
    "aggTrade": {
        "E": "event time", "s": "symbol", "a": "aggregate trade id", "p": "price", "q": "quantity",
        "f": "first trade id", "l": "last trade id", "T": "trade time", "m": "buyer is maker",
    },
    "trade": {
        "E": "event time", "s": "symbol", "t": "trade id", "p": "price", "q": "quantity", "T": "trade time",
        "m": "buyer is maker",
    },
}  # fmt: skip
AGG_TRADES = "aggTrades"
TRADES = "trades"


def normalize_symbol(symbol: str) -> str:
    """`XRP/ETH`, `xrp-eth` and `xrpeth` are all Binance's `XRPETH`."""
    return symbol.replace("/", "").replace("-", "").strip().upper()


def market_of(payload: Mapping[str, object]) -> str:
    """`binance` (spot) or `binance-usdm`, for a record that does not say: only spot has a best-match flag."""
    return "binance" if "M" in payload or "isBestMatch" in payload else "binance-usdm"


def is_trade(payload: Mapping[str, object]) -> bool:
    """Whether a payload is a trade (WS event or REST record) rather than a kline, ticker or reply."""
    event = payload.get("e")
    if event is not None:
        return event in TRADE_EVENTS
    return ("a" in payload and "T" in payload) or ("id" in payload and "time" in payload and "price" in payload)


def parse_trade(payload: Mapping[str, object], *, exchange: str, source: str, symbol: str | None = None) -> Trade:
    """One Binance trade payload (WS `aggTrade`/`trade` event or REST record) as a `Trade`.

    `symbol` is used for REST records, which carry none; a WebSocket event must name its own (see
    `EVENT_FIELDS`). Raises `InvalidTrade`.
    """
    data = dict(payload)
    event = data.get("e")
    if event is not None:
        if event not in EVENT_FIELDS:
            raise InvalidTrade("wrong-type", f"event type {event!r} is not a trade event ({', '.join(TRADE_EVENTS)})")
        require_all(data, EVENT_FIELDS[str(event)], f"a Binance {event} event")
    raw_symbol: object = data["s"] if event is not None or data.get("s") is not None else symbol
    if raw_symbol is None:
        raise InvalidTrade("missing-field", "missing field 's' (symbol) and no symbol given")
    if "id" in data and "a" not in data and "t" not in data:  # REST /api/v3/trades
        trade_id, price, qty = require(data, "id"), require(data, "price"), require(data, "qty")
        time_us = epoch_us(require(data, "time"), "time")
        maker = bool_field(require(data, "isBuyerMaker"), "isBuyerMaker")
    else:
        trade_id = require(data, "t" if data.get("e") == "trade" else "a")
        price, qty = require(data, "p"), require(data, "q")
        time_us = epoch_us(require(data, "T"), "T")
        maker = bool_field(require(data, "m"), "m")
    return make_trade(
        exchange=exchange,
        symbol=normalize_symbol(text_field(raw_symbol, "symbol")),
        trade_id=trade_id,
        price=price,
        qty=qty,
        trade_time_us=time_us,
        is_buyer_maker=maker,
        source=source,
    )


def parse_csv_row(row: Sequence[str], *, kind: str, exchange: str, symbol: str, source: str) -> Trade:
    """One data.binance.vision CSV row as a `Trade`.

    trades:    ``id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match]``
    aggTrades: ``agg_id,price,qty,first_id,last_id,time,is_buyer_maker[,is_best_match]``
    e.g. ``665076760,58001.03000000,0.08620500,745522877,745522877,1617566591314,True,True``.
    """
    time_col, maker_col = (5, 6) if kind == AGG_TRADES else (4, 5)
    if len(row) not in (maker_col + 1, maker_col + 2):
        raise InvalidTrade("malformed", f"a {kind} row has {maker_col + 1} or {maker_col + 2} columns, not {len(row)}")
    return make_trade(
        exchange=exchange,
        symbol=symbol,
        trade_id=row[0],
        price=row[1],
        qty=row[2],
        trade_time_us=epoch_us(row[time_col], "time"),
        is_buyer_maker=bool_field(row[maker_col], "is_buyer_maker"),
        source=source,
    )
