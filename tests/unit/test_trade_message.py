"""The Kafka `trades` message, from both ends: what the producer writes and what the Spark jobs read.

candlelake.trade.WIRE_FIELDS is the one definition. These tests fail if the producer's hand-built JSON
drifts from it, or if the Spark side reads any field back other than exactly as the trade had it.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from candlelake.spark import transforms as T
from candlelake.trade import WIRE_FIELDS, Trade
from candlelake.util import from_us

pytestmark = pytest.mark.unit

TRADES = [
    # a plain spot trade
    Trade(
        "binance",
        "BTCUSDT",
        4_711_815_309,
        Decimal("97123.45"),
        Decimal("0.00120"),
        1_733_011_200_123_000,
        True,
        1_733_011_200_124_987,
        "binance-ws",
    ),
    # values that break naive encoders: an exponent-prone tiny qty, the largest price the lake holds,
    # a quote and a backslash in a name, microseconds to the last digit, trade id 0
    Trade(
        "coinbase",
        "BTC-USD",
        0,
        Decimal("999999999999999999.9999999999"),
        Decimal("1E-8"),
        1_700_000_000_000_001,
        False,
        1_700_000_000_000_002,
        'coinbase-ws "a\\b"',
    ),
    Trade("binance-usdm", "ETHUSDT", 2**62, Decimal("0.0000000001"), Decimal("123456789.5"), 0, False, 1, "replay"),
]

JSON_TYPES = {"text": str, "integer": int, "decimal": str, "boolean": bool, "epoch_us": int}


@pytest.mark.parametrize("trade", TRADES, ids=["spot", "awkward", "extremes"])
def test_the_producer_writes_exactly_the_defined_fields_in_order(trade: Trade) -> None:
    written = trade.to_json_bytes()
    payload = json.loads(written)
    assert list(payload) == [name for name, _ in WIRE_FIELDS]
    for name, kind in WIRE_FIELDS:
        assert type(payload[name]) is JSON_TYPES[kind], name
    assert written == json.dumps(trade.to_wire(), separators=(",", ":")).encode()
    assert "E" not in payload["price"] + payload["qty"]  # plain notation: every reader parses it alike


@pytest.mark.parametrize("trade", TRADES, ids=["spot", "awkward", "extremes"])
def test_a_written_message_reads_back_as_the_same_trade(trade: Trade) -> None:
    assert Trade.from_wire(json.loads(trade.to_json_bytes())) == trade


def test_spark_reads_every_field_back_exactly_as_the_producer_wrote_it(spark) -> None:
    records = [(t.key.encode(), t.to_json_bytes()) for t in TRADES]
    kafka = spark.createDataFrame(records, "key binary, value binary")
    parsed = T.parse_trades(kafka)
    assert parsed.schema.fieldNames() == T.TRADE_SCHEMA.fieldNames() == [name for name, _ in WIRE_FIELDS]
    rows = {row["trade_id"]: row for row in parsed.collect()}
    for trade in TRADES:
        row = rows[trade.trade_id]
        assert (row["exchange"], row["symbol"], row["source"]) == (trade.exchange, trade.symbol, trade.source)
        assert row["price"] == trade.price and row["qty"] == trade.qty
        assert row["trade_time"].replace(tzinfo=None) == from_us(trade.trade_time_us).replace(tzinfo=None)
        assert row["ingest_time"].replace(tzinfo=None) == from_us(trade.ingest_time_us).replace(tzinfo=None)
        assert row["is_buyer_maker"] is trade.is_buyer_maker
    assert T.valid_trades(parsed).count() == len(TRADES)


def test_a_value_spark_would_round_or_a_missing_field_is_not_read_as_a_trade(spark) -> None:
    wire = TRADES[0].to_wire()
    too_fine = json.dumps({**wire, "qty": "0.00000000001"}).encode()  # 11 decimals: Spark's cast would round it
    missing = json.dumps({k: v for k, v in wire.items() if k != "trade_time"}).encode()
    kafka = spark.createDataFrame([(b"k", too_fine), (b"k", missing)], "key binary, value binary")
    parsed = T.parse_trades(kafka)
    rows = parsed.collect()
    assert rows[0]["qty"] is None and rows[0]["price"] == TRADES[0].price
    assert rows[1]["trade_time"] is None and rows[1]["qty"] == TRADES[0].qty
    assert T.valid_trades(parsed).count() == 0
