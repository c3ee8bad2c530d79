"""Binance spot and USD-M futures trades from the combined-stream WebSocket endpoint.

One connection carries the trade streams of every symbol:
`wss://stream.binance.com:9443/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade`. Each message is
wrapped as `{"stream": "btcusdt@aggTrade", "data": {...}}` (see `candlelake.sources.binance` for the
event); bare events, as `/ws/<stream>` sends them, are accepted too.

Binance cuts every connection at 24 hours and announces earlier shutdowns with
`{"event": {"e": "serverShutdown", "E": 1770123456789}}`; both start a planned, overlapped rotation.
Its server pings every 20 s (spot) and drops a connection that does not answer within a minute;
websockets answers pings by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Literal

from candlelake.sources.binance import is_trade, normalize_symbol, parse_trade
from candlelake.sources.events import Emit
from candlelake.sources.fields import InvalidTrade, Rejection
from candlelake.sources.websocket_feed import FeedSettings, WebSocketFeed

log = logging.getLogger(__name__)

SPOT_URL = "wss://stream.binance.com:9443"
USDM_URL = "wss://fstream.binance.com"
BASE_URLS = {"binance": SPOT_URL, "binance-usdm": USDM_URL}
SOURCES = {"binance": "binance-ws", "binance-usdm": "binance-usdm-ws"}
# Binance allows at most 1024 streams on one connection.
MAX_STREAMS = 1024
SHUTDOWN_NOTICE = "serverShutdown notice"

BinanceExchange = Literal["binance", "binance-usdm"]
BinanceStream = Literal["aggTrade", "trade"]


def stream_url(base_url: str, symbols: Sequence[str], stream: str) -> str:
    """The combined-stream URL: `{base}/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade` (lower case)."""
    names = "/".join(f"{normalize_symbol(symbol).lower()}@{stream}" for symbol in symbols)
    return f"{base_url.rstrip('/')}/stream?streams={names}"


def event_of(payload: Mapping[str, object]) -> Mapping[str, object]:
    """The event inside a message: the `data` of a combined-stream wrapper, else the message itself."""
    data = payload.get("data")
    return data if "stream" in payload and isinstance(data, Mapping) else payload


def is_shutdown_notice(event: Mapping[str, object]) -> bool:
    """`{"event": {"e": "serverShutdown", ...}}` (WebSocket API form) or a bare `{"e": "serverShutdown"}`."""
    inner = event.get("event")
    kind = inner.get("e") if isinstance(inner, Mapping) else event.get("e")
    return kind == "serverShutdown"


class BinanceTradeFeed:
    """Live trades of some symbols of one Binance market, as `Trade` events (see `run`).

    `exchange` is "binance" (spot) or "binance-usdm"; `base_url` defaults to that market's live
    endpoint; `stream` is "aggTrade" (what the candles are built from) or "trade".
    """

    def __init__(
        self,
        exchange: BinanceExchange,
        symbols: Sequence[str],
        base_url: str | None = None,
        stream: BinanceStream = "aggTrade",
        settings: FeedSettings | None = None,
    ) -> None:
        if exchange not in BASE_URLS:
            raise ValueError(f"exchange must be one of {', '.join(BASE_URLS)}, got {exchange!r}")
        if not symbols or len(symbols) > MAX_STREAMS:
            raise ValueError(f"give 1 to {MAX_STREAMS} symbols, got {len(symbols)}")
        self.exchange = exchange
        self.symbols = tuple(dict.fromkeys(normalize_symbol(symbol) for symbol in symbols))
        self.url = stream_url(base_url or BASE_URLS[exchange], self.symbols, stream)
        self.source = SOURCES[exchange]
        self.settings = settings or FeedSettings()
        self._known = frozenset(self.symbols)

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        """Emit trades, rejections and connection events until `stop` is set."""
        feed = WebSocketFeed(
            exchange=self.exchange,
            symbols=self.symbols,
            url=self.url,
            on_message=lambda text, _received_us: self.handle(text, emit),
            settings=self.settings,
        )
        await feed.run(emit, stop)

    def handle(self, text: str, emit: Emit) -> str | None:
        """One raw message: emit a `Trade` or a `Rejection`, ignore other events; a shutdown notice
        returns the reason to rotate the connection."""
        try:
            # Decimal keeps a number Binance might send unquoted exact; validation takes it as is.
            payload = json.loads(text, parse_float=Decimal)
        except ValueError as exc:
            emit(Rejection(text, "malformed", f"not JSON: {exc}", self.source))
            return None
        if not isinstance(payload, dict):
            emit(Rejection(text, "malformed", f"not a JSON object but {type(payload).__name__}", self.source))
            return None
        event = event_of(payload)
        if is_shutdown_notice(event):
            log.warning("%s: the server announced a shutdown: %s", self.exchange, text)
            return SHUTDOWN_NOTICE
        if not is_trade(event):
            return None  # subscription replies, klines and other streams
        symbol = event.get("s")
        if isinstance(symbol, str) and normalize_symbol(symbol) not in self._known:
            reason = f"symbol {symbol!r} is not one of the subscribed {', '.join(self.symbols)}"
            emit(Rejection(text, "unknown-symbol", reason, self.source))
            return None
        try:
            trade = parse_trade(event, exchange=self.exchange, source=self.source)
        except InvalidTrade as exc:
            emit(Rejection(text, exc.code, str(exc), self.source))
            return None
        emit(trade)
        return None
