"""Coinbase Exchange `matches` channel: `match` and `last_match` messages as `Trade`s.

A raw message, as the Coinbase Exchange WebSocket feed sends it::

    {"type": "match", "trade_id": 881614, "maker_order_id": "27fff20b-af29-4f45-8744-56dd1ef57dc0",
     "taker_order_id": "1da6ce16-c8da-4732-9f71-6049f4c6aaf8", "side": "sell", "size": "0.04",
     "price": "14.7775", "product_id": "BAND-GBP", "sequence": 333938799,
     "time": "2021-04-17T16:43:30.244075Z"}

`side` is the maker order's side: `buy` means the resting buy order was hit, so the buyer is the maker;
`sell` means the taker bought. `last_match` (sent once on subscribe) is the same trade record. A message
without one of `MATCH_FIELDS` (Coinbase always sends them) is a dead letter that names what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping

from candlelake.sources.fields import InvalidTrade, iso_us, make_trade, require_all, text_field
from candlelake.trade import Trade

TRADE_TYPES = ("match", "last_match")
# What every match carries, on the WebSocket and in the REST trades list alike (where the product is the
# request's and the caller adds it).
MATCH_FIELDS = {
    "product_id": "product",
    "trade_id": "trade id",
    "price": "price",
    "size": "size",
    "side": "maker side",
    "time": "trade time",
}


def is_trade(payload: Mapping[str, object]) -> bool:
    """Matches are trades; heartbeats, tickers and subscription replies are not."""
    return payload.get("type") in TRADE_TYPES


def parse_match(payload: Mapping[str, object], *, source: str) -> Trade:
    """One `match`/`last_match` message as a `Trade`; raises `InvalidTrade`."""
    data = dict(payload)
    require_all(data, MATCH_FIELDS, f"a Coinbase {data.get('type') or 'trade'} message")
    side = text_field(data["side"], "side")
    if side not in ("buy", "sell"):
        raise InvalidTrade("wrong-type", f"side must be 'buy' or 'sell', got {side!r}")
    return make_trade(
        exchange="coinbase",
        symbol=text_field(data["product_id"], "product_id"),
        trade_id=data["trade_id"],
        price=data["price"],
        qty=data["size"],
        trade_time_us=iso_us(data["time"], "time"),
        is_buyer_maker=side == "buy",
        source=source,
    )
