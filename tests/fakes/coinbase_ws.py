"""A fake Coinbase Exchange WebSocket feed: recorded real `match` frames, replayed live on loopback.

Like `ws-feed.exchange.coinbase.com`, a connection must first send
`{"type":"subscribe","product_ids":[...],"channels":["matches","heartbeat"]}`; the server answers with a
`subscriptions` message, then (matches channel) a `last_match` per product, the last match that
happened before the subscription, then each `match` when it happens (times shifted to the present).
The heartbeat channel sends per product every `heartbeat_s`
`{"type":"heartbeat","sequence":..,"last_trade_id":..,"product_id":..,"time":..}` whose id is the last
match that has happened, sent to this connection or not. A product not in the recording gets
`{"type":"error","message":"Failed to subscribe","reason":"..."}`. The recording's ticker frames are
never sent (the ticker channel is not offered).

In the recording, `last_match` frames are the replies to the recorder's own (late) subscriptions; here
they are trades like any other: a client subscribed before one happens receives it as a `match`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from websockets.exceptions import ConnectionClosed

from tests.fakes.recording import LiveReplay, coinbase_shifted, dumps
from tests.fakes.ws_server import FakeExchangeWs, Session

TRADE_TYPES = ("match", "last_match")


class FakeCoinbaseWs(FakeExchangeWs):
    """See the module docstring; the fault knobs and counters are `FakeExchangeWs`'s."""

    def __init__(
        self,
        replay: LiveReplay,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        heartbeat_s: float = 1.0,
        ping_interval_s: float | None = 20.0,
        ping_timeout_s: float = 60.0,
        lifetime_s: float | None = None,
    ) -> None:
        super().__init__(
            replay, host, port, ping_interval_s=ping_interval_s, ping_timeout_s=ping_timeout_s, lifetime_s=lifetime_s
        )
        self.heartbeat_s = heartbeat_s
        self._product: list[str | None] = []  # per frame: the product of a trade frame, None for the rest
        self._match: list[dict[str, Any] | None] = []  # per frame: the trade as a shifted `match`
        self._by_product: dict[str, list[int]] = {}  # product -> indices of its trade frames
        for index, frame in enumerate(replay.recording.frames):
            payload = frame.payload
            if payload.get("type") in TRADE_TYPES:
                product = str(payload["product_id"])
                self._product.append(product)
                self._match.append({**coinbase_shifted(payload, replay.shift_us), "type": "match"})
                self._by_product.setdefault(product, []).append(index)
            else:
                self._product.append(None)
                self._match.append(None)
        self._texts = [None if match is None else dumps(match) for match in self._match]

    @property
    def products(self) -> list[str]:
        """The products the recording has trades of."""
        return sorted(self._by_product)

    def last_match_before(self, product: str, happened: int) -> dict[str, Any] | None:
        """The product's last trade among the first `happened` frames, as a shifted `match` payload."""
        indices = self._by_product.get(product, [])
        position = bisect.bisect_left(indices, happened)
        return self._match[indices[position - 1]] if position else None

    def last_trade_id(self, product: str, happened: int) -> int:
        """The product's last trade id among the first `happened` frames; before its first recorded trade,
        the id just below it (Coinbase trade ids count up by one per product)."""
        last = self.last_match_before(product, happened)
        if last is not None:
            return int(last["trade_id"])
        first = self._match[self._by_product[product][0]]
        assert first is not None
        return int(first["trade_id"]) - 1

    async def produce(self, session: Session) -> None:
        subscribed: asyncio.Event = session.state.setdefault("subscribed", asyncio.Event())
        await subscribed.wait()
        products: set[str] = session.state["products"]
        channels: set[str] = session.state["channels"]
        start: int = session.state["start"]
        tasks = []
        if "heartbeat" in channels:
            tasks.append(asyncio.ensure_future(self._heartbeats(session, sorted(products))))
        try:
            if "matches" in channels:
                texts, of = self._texts, self._product
                await self.play(session, lambda i: texts[i] if of[i] in products else None, start)
            await asyncio.Future()  # the recording is over: heartbeats go on until the connection closes
        finally:
            for task in tasks:
                task.cancel()

    async def on_client_message(self, session: Session, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            return
        if not isinstance(request, dict) or request.get("type") != "subscribe" or "products" in session.state:
            return  # only the first subscription counts here
        asked, channels = _subscription(request)
        products = {product for product in asked if product in self._by_product}
        for product in sorted(asked - products):
            reason = f"{product} is not a valid product"
            await self.send(session, dumps({"type": "error", "message": "Failed to subscribe", "reason": reason}))
        start = self.happened()
        reply = {
            "type": "subscriptions",
            "channels": [{"name": name, "product_ids": sorted(products)} for name in sorted(channels)],
        }
        await self.send(session, dumps(reply))
        if "matches" in channels:
            for product in sorted(products):
                last = self.last_match_before(product, start)
                if last is not None:
                    await self.send(session, dumps({**last, "type": "last_match"}))
        session.state.update(products=products, channels=channels, start=start)
        session.state.setdefault("subscribed", asyncio.Event()).set()

    async def _heartbeats(self, session: Session, products: list[str]) -> None:
        sequences = dict.fromkeys(products, 0)
        with contextlib.suppress(ConnectionClosed):
            while True:
                happened = self.happened()
                for product in products:
                    last = self.last_match_before(product, happened)
                    sequences[product] = max(sequences[product], int(last["sequence"]) if last else 0)
                    heartbeat = {
                        "type": "heartbeat",
                        "last_trade_id": self.last_trade_id(product, happened),
                        "product_id": product,
                        "sequence": sequences[product],
                        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    }
                    await self.send(session, dumps(heartbeat))
                await asyncio.sleep(self.heartbeat_s)


def _subscription(request: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Products and channel names of a subscribe request; channels may be names or
    `{"name": .., "product_ids": [..]}` objects."""
    products = set(_strings(request.get("product_ids", [])))
    channels = set()
    for channel in request.get("channels", []):
        if isinstance(channel, dict):
            channels.add(str(channel.get("name")))
            products.update(_strings(channel.get("product_ids", [])))
        else:
            channels.add(str(channel))
    return products, channels


def _strings(values: Iterable[object]) -> list[str]:
    return [value for value in values if isinstance(value, str)]
