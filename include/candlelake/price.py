"""A price point, observed without a trade behind it, and its wire format on the Kafka `prices` topic.

Wire format (JSON, UTF-8), key `exchange:symbol`::

    {"exchange": "coingecko", "symbol": "BTC-USD", "price": "67187.33589365664", "time": 1711356300000000,
     "source": "coingecko-simple-price"}

A REST ticker or an aggregator's price (Binance REST, CoinGecko) is not a trade: it has no id, no side
and no volume, so it never becomes a candle. `time` is when the source says the price held (epoch
microseconds, UTC); the price travels as a decimal string, exact. `PRICE_WIRE_FIELDS` is the one
definition of the message: `PricePoint.to_json_bytes` writes it and the stream reads it with a schema
built from it (candlelake.spark.prices); tests/unit/test_price_message.py holds both ends to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

from candlelake.trade import WireKind, decimal_text

PRICE_WIRE_FIELDS: tuple[tuple[str, WireKind], ...] = (
    ("exchange", "text"),
    ("symbol", "text"),
    ("price", "decimal"),
    ("time", "epoch_us"),
    ("source", "text"),
)
"""The Kafka `prices` value, field by field in the order the producer writes them."""

PRICE_KEY: tuple[str, ...] = ("exchange", "symbol", "source", "time")
"""What makes a price point unique: a poller that asks again before the source updated gets the same
point (CoinGecko's `last_updated_at` moves every minute or so), which every sink keeps once."""


@dataclass(frozen=True, slots=True)
class PricePoint:
    """A price observed at `time_us` without a trade behind it (REST ticker, CoinGecko): no volume."""

    exchange: str
    symbol: str
    price: Decimal
    time_us: int
    source: str

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"

    def to_wire(self) -> dict[str, object]:
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "price": decimal_text(self.price),
            "time": self.time_us,
            "source": self.source,
        }

    def to_json_bytes(self) -> bytes:
        return json.dumps(self.to_wire(), separators=(",", ":")).encode()

    @classmethod
    def from_wire(cls, payload: dict[str, object]) -> PricePoint:
        """Inverse of `to_wire` (tests and tools reading the topic back)."""
        return cls(
            exchange=str(payload["exchange"]),
            symbol=str(payload["symbol"]),
            price=Decimal(str(payload["price"])),
            time_us=int(payload["time"]),  # type: ignore[call-overload]
            source=str(payload["source"]),
        )
