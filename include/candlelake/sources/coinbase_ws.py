"""Coinbase Exchange trades from the WebSocket feed's `matches` channel, with `heartbeat` id marks.

On each connection the feed subscribes with
`{"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["matches", "heartbeat"]}`. Coinbase
answers with a `subscriptions` message, then a `last_match` per product and a `match` per trade (see
`candlelake.sources.coinbase`). The heartbeat channel sends, per product and every second::

    {"type": "heartbeat", "sequence": 90, "last_trade_id": 20, "product_id": "BTC-USD",
     "time": "2014-11-07T08:19:28.464459Z"}

Its `last_trade_id` becomes a `TradeIdMark`, so the pipeline sees trades missed at the end of a stream.
Because heartbeats arrive every second, a quiet connection is detected quickly (watchdog 10 s).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from decimal import Decimal

from websockets.asyncio.client import ClientConnection

from candlelake.sources.coinbase import is_trade, parse_match
from candlelake.sources.events import Emit, TradeIdMark
from candlelake.sources.fields import InvalidTrade, Rejection, integer_field, require
from candlelake.sources.websocket_feed import FeedSettings, WebSocketFeed

log = logging.getLogger(__name__)

URL = "wss://ws-feed.exchange.coinbase.com"
SOURCE = "coinbase-ws"
EXCHANGE = "coinbase"
CHANNELS = ("matches", "heartbeat")
DEFAULT_SETTINGS = FeedSettings(watchdog_s=10.0)


def subscribe_message(product_ids: Sequence[str]) -> str:
    return json.dumps({"type": "subscribe", "product_ids": list(product_ids), "channels": list(CHANNELS)})


class CoinbaseMatchesFeed:
    """Live trades of some Coinbase Exchange products as `Trade` events, plus `TradeIdMark`s (see `run`)."""

    def __init__(self, product_ids: Sequence[str], url: str = URL, settings: FeedSettings | None = None) -> None:
        if not product_ids:
            raise ValueError("give at least one product id")
        self.product_ids = tuple(dict.fromkeys(product.strip().upper() for product in product_ids))
        self.url = url
        self.settings = settings or DEFAULT_SETTINGS
        self._known = frozenset(self.product_ids)

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        """Emit trades, id marks, rejections and connection events until `stop` is set."""
        feed = WebSocketFeed(
            exchange=EXCHANGE,
            symbols=self.product_ids,
            url=self.url,
            on_message=lambda text, _received_us: self.handle(text, emit),
            on_open=self.subscribe,
            settings=self.settings,
        )
        await feed.run(emit, stop)

    async def subscribe(self, ws: ClientConnection) -> None:
        await ws.send(subscribe_message(self.product_ids))

    def handle(self, text: str, emit: Emit) -> None:
        """One raw message: a `Trade`, a `TradeIdMark` or a `Rejection`; replies and tickers are ignored."""
        try:
            payload = json.loads(text, parse_float=Decimal)
        except ValueError as exc:
            emit(Rejection(text, "malformed", f"not JSON: {exc}", SOURCE))
            return
        if not isinstance(payload, dict):
            emit(Rejection(text, "malformed", f"not a JSON object but {type(payload).__name__}", SOURCE))
            return
        kind = payload.get("type")
        if kind == "error":
            reason = f"{payload.get('message', 'error')}: {payload.get('reason', 'no reason given')}"
            log.warning("coinbase: the exchange sent an error: %s", reason)
            emit(Rejection(text, "exchange-error", reason, SOURCE))
            return
        if not is_trade(payload) and kind != "heartbeat":
            return  # subscriptions replies, tickers
        product = payload.get("product_id")
        if isinstance(product, str) and product not in self._known:
            reason = f"product {product!r} is not one of the subscribed {', '.join(self.product_ids)}"
            emit(Rejection(text, "unknown-symbol", reason, SOURCE))
            return
        try:
            if kind == "heartbeat":
                emit(self._mark(payload))
            else:
                emit(parse_match(payload, source=SOURCE))
        except InvalidTrade as exc:
            emit(Rejection(text, exc.code, str(exc), SOURCE))

    @staticmethod
    def _mark(payload: dict[str, object]) -> TradeIdMark:
        product = require(payload, "product_id")
        if not isinstance(product, str):
            raise InvalidTrade("wrong-type", f"product_id must be text, got {product!r}")
        last_id = integer_field(require(payload, "last_trade_id"), "last_trade_id")
        return TradeIdMark(EXCHANGE, product, last_id)
