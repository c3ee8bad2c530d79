"""The canonical trade record and its wire format on the Kafka `trades` topic.

Wire format (JSON, UTF-8), key `exchange:symbol`::

    {"exchange": "binance", "symbol": "BTCUSDT", "trade_id": 123, "price": "27123.45",
     "qty": "0.0012", "trade_time": 1700000000123456, "is_buyer_maker": true,
     "ingest_time": 1700000000124000, "source": "binance-ws"}

Times are epoch microseconds, UTC. Prices and quantities travel as decimal strings so that no binary
float ever touches them between the exchange and PostgreSQL's NUMERIC.

`WIRE_FIELDS` is the one definition of the message: the producer writes it (`Trade.to_json_bytes`) and
the Spark jobs read it with a schema built from it (candlelake.spark.transforms.KAFKA_VALUE_SCHEMA);
tests/unit/test_trade_message.py holds both ends to it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

WireKind = Literal["text", "integer", "decimal", "boolean", "epoch_us"]

WIRE_FIELDS: tuple[tuple[str, WireKind], ...] = (
    ("exchange", "text"),
    ("symbol", "text"),
    ("trade_id", "integer"),
    ("price", "decimal"),  # a JSON string in plain notation: exact, never a JSON number
    ("qty", "decimal"),
    ("trade_time", "epoch_us"),
    ("is_buyer_maker", "boolean"),
    ("ingest_time", "epoch_us"),
    ("source", "text"),
)
"""The Kafka `trades` value, field by field in the order the producer writes them."""

CANDLE_INPUTS: tuple[str, ...] = ("exchange", "symbol", "trade_id", "price", "qty", "trade_time", "is_buyer_maker")
"""The fields a trade cannot be counted into a candle without: the stream drops a trade missing one, and
the nightly validation expects none missing in the lake. `ingest_time` and `source` are provenance."""

TRADE_KEY: tuple[str, ...] = ("exchange", "symbol", "trade_id")
"""What makes a trade unique, end to end: every dedupe and every idempotent sink keys on it."""


@functools.lru_cache(maxsize=4096)
def _quoted(text: str) -> str:
    """A JSON string literal (escaped as json.dumps does); a feed repeats a handful of names."""
    return json.dumps(text)


def decimal_text(value: Decimal) -> str:
    """Plain positional notation (never `1E-8`), which every consumer parses the same way."""
    return format(value, "f")


@dataclass(frozen=True, slots=True)
class Trade:
    exchange: str
    symbol: str
    trade_id: int
    price: Decimal
    qty: Decimal
    trade_time_us: int
    is_buyer_maker: bool
    ingest_time_us: int
    source: str

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"

    def to_wire(self) -> dict[str, object]:
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "trade_id": self.trade_id,
            "price": decimal_text(self.price),
            "qty": decimal_text(self.qty),
            "trade_time": self.trade_time_us,
            "is_buyer_maker": self.is_buyer_maker,
            "ingest_time": self.ingest_time_us,
            "source": self.source,
        }

    def to_json_bytes(self) -> bytes:
        """`to_wire()` as compact JSON, byte for byte what json.dumps writes, built without the dict:
        replays serialize tens of thousands of trades a second and json.dumps was a fifth of the cost."""
        maker = "true" if self.is_buyer_maker else "false"
        return (
            f'{{"exchange":{_quoted(self.exchange)},"symbol":{_quoted(self.symbol)},"trade_id":{self.trade_id},'
            f'"price":"{decimal_text(self.price)}","qty":"{decimal_text(self.qty)}","trade_time":{self.trade_time_us},'
            f'"is_buyer_maker":{maker},"ingest_time":{self.ingest_time_us},"source":{_quoted(self.source)}}}'
        ).encode()

    @classmethod
    def from_wire(cls, payload: dict[str, object]) -> Trade:
        """Inverse of `to_wire` (used by tests and tools reading the topic back)."""
        return cls(
            exchange=str(payload["exchange"]),
            symbol=str(payload["symbol"]),
            trade_id=int(payload["trade_id"]),  # type: ignore[call-overload]
            price=Decimal(str(payload["price"])),
            qty=Decimal(str(payload["qty"])),
            trade_time_us=int(payload["trade_time"]),  # type: ignore[call-overload]
            is_buyer_maker=bool(payload["is_buyer_maker"]),
            ingest_time_us=int(payload["ingest_time"]),  # type: ignore[call-overload]
            source=str(payload["source"]),
        )
