"""candlelake.spark.transforms on small in-memory frames, checked against values computed by hand."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual, assertSchemaEqual

from candlelake.spark import transforms as T
from candlelake.stream.progress import progress_row

pytestmark = pytest.mark.unit


def assert_frames_equal(actual, expected):
    """assertDataFrameEqual with exact decimals (it allows a relative 1e-5 by default), any row order."""
    assertSchemaEqual(actual.schema, expected.schema)
    assertDataFrameEqual(actual, expected, rtol=0, atol=0)


BASE = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def at(seconds: float = 0, minutes: int = 0, micros: int = 0) -> datetime:
    return BASE + timedelta(minutes=minutes, seconds=seconds, microseconds=micros)


def trade(tid, price, qty, when, maker, exchange="binance", symbol="BTCUSDT"):
    return (exchange, symbol, tid, D(price), D(qty), when, maker, when, "test")


def trades_df(spark, rows):
    return spark.createDataFrame(rows, T.TRADE_SCHEMA)


def candle(exchange, symbol, open_time, interval, **values):
    row = {
        "exchange": exchange,
        "symbol": symbol,
        "open_time": open_time,
        "close_time": open_time + interval - timedelta(milliseconds=1),
        **{k: (D(v) if isinstance(v, str) else v) for k, v in values.items()},
    }
    return tuple(row[name] for name in T.CANDLE_COLUMNS)


def candles_df(spark, rows):
    return spark.createDataFrame(rows, T.CANDLE_SCHEMA)


MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)

# One market over two minutes, deliberately out of order. In the 12:00 bucket two trades share the
# first instant (the lower id opens) and two share the last instant (the higher id closes); ids and
# times disagree with input order. Prices and quantities have more significant digits than a double
# holds: 27123.45678901 * 0.00012345 = 3.3483907406032845 exactly, but 3.3483907406032842 in floats.
MARKET = [
    trade(104, "27123.45678901", "0.00012345", at(59.999), False),  # last instant, higher id: close
    trade(102, "27130.00000001", "0.1", at(20), False),  # high
    trade(105, "27200.5", "2", at(0, minutes=1), True),  # next bucket, exactly on its first ms
    trade(101, "27120.1", "0.3", at(0), True),  # first instant, higher id
    trade(103, "27100.00000009", "1.00000001", at(59.999), True),  # last instant, lower id; low
    trade(100, "27125.5", "0.2", at(0), False),  # first instant, lower id: open
]


def test_candle_fields_equal_hand_computed_values(spark):
    actual = T.candles(trades_df(spark, MARKET), "1 minute")
    # Hand-computed, digit by digit:
    #   volume = 0.2 + 0.3 + 0.1 + 1.00000001 + 0.00012345 = 1.60012346
    #   price * qty per trade, ids 100..104:
    #     27125.5 * 0.2 = 5425.1;  27120.1 * 0.3 = 8136.03;  27130.00000001 * 0.1 = 2713.000000001
    #     27100.00000009 * 1.00000001 = 27100.00000009 + 0.0002710000000009 = 27100.0002710900000009
    #     27123.45678901 * 0.00012345 = 3.3483907406032845
    q = [D("5425.1"), D("8136.03"), D("2713.000000001"), D("27100.0002710900000009"), D("3.3483907406032845")]
    assert D("27100.00000009") * D("1.00000001") == q[3]
    quote = sum(q, D(0))
    taker_quote = q[0] + q[2] + q[4]  # ids 100, 102, 104: the buyer was not the maker
    expected = candles_df(
        spark,
        [
            candle(
                "binance",
                "BTCUSDT",
                BASE,
                MINUTE,
                open="27125.5",
                high="27130.00000001",
                low="27100.00000009",
                close="27123.45678901",
                volume="1.60012346",
                quote_volume=quote,
                trades=5,
                taker_buy_volume="0.30012345",
                taker_buy_quote_volume=taker_quote,
                vwap=(quote / D("1.60012346")).quantize(D("1e-20")),
                first_trade_id=100,
                last_trade_id=104,
            ),
            candle(
                "binance",
                "BTCUSDT",
                BASE + MINUTE,
                MINUTE,
                open="27200.5",
                high="27200.5",
                low="27200.5",
                close="27200.5",
                volume="2",
                quote_volume="54401",
                trades=1,
                taker_buy_volume="0",
                taker_buy_quote_volume="0",
                vwap="27200.5",
                first_trade_id=105,
                last_trade_id=105,
            ),
        ],
    )
    assert_frames_equal(actual, expected)
    # Floats would have been wrong in the last digits, so the comparison above tells exact from close.
    assert float(q[4]) != 27123.45678901 * 0.00012345


def test_candle_types_are_the_documented_decimals(spark):
    actual = T.candles(trades_df(spark, MARKET))
    assert [(f.name, f.dataType) for f in actual.schema] == [(f.name, f.dataType) for f in T.CANDLE_SCHEMA]


def test_input_order_and_partitioning_do_not_change_candles(spark):
    df = trades_df(spark, MARKET)
    shuffled = df.repartition(3, "trade_id").sortWithinPartitions(F.col("trade_id").desc())
    assert_frames_equal(T.candles(shuffled), T.candles(df))
    assert_frames_equal(T.candles(df.orderBy(F.col("trade_time").desc())), T.candles(df))


def test_a_bucket_holds_its_first_and_last_millisecond_only(spark):
    rows = [
        trade(1, "10", "1", at(0), True),  # hh:mm:00.000
        trade(2, "11", "1", at(59.999), True),  # hh:mm:59.999
        trade(3, "12", "1", at(59.999, micros=999), True),  # hh:mm:59.999999, still the same minute
        trade(4, "13", "1", at(0, minutes=1), True),  # next minute's first instant
        trade(5, "9", "1", at(-0.001), True),  # previous minute's last millisecond
    ]
    out = T.candles(trades_df(spark, rows)).select("open_time", "close_time", "first_trade_id", "last_trade_id")
    expected = spark.createDataFrame(
        [
            (BASE - MINUTE, BASE - timedelta(milliseconds=1), 5, 5),
            (BASE, BASE + timedelta(seconds=59.999), 1, 3),
            (BASE + MINUTE, BASE + MINUTE + timedelta(seconds=59.999), 4, 4),
        ],
        "open_time timestamp, close_time timestamp, first_trade_id long, last_trade_id long",
    )
    assert_frames_equal(out, expected)


def test_open_and_close_follow_time_then_id_at_any_extreme(spark):
    # The order key packs (trade_time, trade_id) into one decimal: the id must never outweigh the time,
    # including the largest and negative ids and times before 1970.
    early = datetime(1969, 12, 31, 23, 59, 30, tzinfo=UTC)
    rows = [
        trade(2**63 - 1, "1", "1", at(10), True),  # the largest id, earlier: opens
        trade(-(2**63), "2", "1", at(10, micros=1), True),  # the smallest id, a microsecond later
        trade(-5, "3", "1", at(50), True),  # same instant as the next: the lower id comes first
        trade(7, "4", "1", at(50), True),  # closes
        trade(9, "5", "1", early, True),
        trade(-9, "6", "1", early, True),  # same instant, lower id: opens its bucket
    ]
    out = T.candles(trades_df(spark, rows)).select("open_time", "open", "close", "first_trade_id", "last_trade_id")
    got = {r.open_time.replace(tzinfo=UTC): (r.open, r.close, r.first_trade_id, r.last_trade_id) for r in out.collect()}
    assert got == {
        BASE: (D("1"), D("4"), 2**63 - 1, 7),
        datetime(1969, 12, 31, 23, 59, tzinfo=UTC): (D("6"), D("5"), -9, 9),
    }


def test_one_second_candles(spark):
    rows = [
        trade(1, "1.1", "0.1", at(0.999), False),
        trade(2, "1.2", "0.2", at(0), True),
        trade(3, "1.3", "0.3", at(1.0), False),
        trade(4, "1.0", "0.4", at(1.999999), True),
    ]
    actual = T.candles(trades_df(spark, rows), "1 second")
    expected = candles_df(
        spark,
        [
            candle(
                "binance", "BTCUSDT", BASE, SECOND,
                open="1.2", high="1.2", low="1.1", close="1.1", volume="0.3", quote_volume="0.35", trades=2,
                taker_buy_volume="0.1", taker_buy_quote_volume="0.11", vwap="1.16666666666666666667",
                first_trade_id=2, last_trade_id=1,
            ),
            candle(
                "binance", "BTCUSDT", BASE + SECOND, SECOND,
                open="1.3", high="1.3", low="1.0", close="1.0", volume="0.7", quote_volume="0.79", trades=2,
                taker_buy_volume="0.3", taker_buy_quote_volume="0.39", vwap="1.12857142857142857143",
                first_trade_id=3, last_trade_id=4,
            ),
        ],
    )  # fmt: skip
    assert_frames_equal(actual, expected)


def test_markets_are_kept_apart_by_exchange_and_symbol(spark):
    rows = [
        trade(7, "100", "1", at(1), False, "binance", "BTCUSDT"),
        trade(7, "200", "2", at(2), True, "binance", "ETHUSDT"),  # same id, other symbol: not a duplicate
        trade(7, "300", "3", at(3), False, "coinbase", "BTCUSDT"),  # same id and symbol, other exchange
        trade(8, "400", "4", at(4), True, "coinbase", "ETHUSDT"),
        trade(9, "101", "1", at(5), True, "binance", "BTCUSDT"),
    ]
    out = T.candles(trades_df(spark, rows)).select("exchange", "symbol", "open", "close", "volume", "trades")
    expected = spark.createDataFrame(
        [
            ("binance", "BTCUSDT", D("100"), D("101"), D("2"), 2),
            ("binance", "ETHUSDT", D("200"), D("200"), D("2"), 1),
            ("coinbase", "BTCUSDT", D("300"), D("300"), D("3"), 1),
            ("coinbase", "ETHUSDT", D("400"), D("400"), D("4"), 1),
        ],
        "exchange string, symbol string, open decimal(28,10), close decimal(28,10), volume decimal(38,10), trades long",
    )
    assert_frames_equal(out, expected)


def test_maker_only_bucket_has_zero_taker_buy_volume_not_null(spark):
    out = T.candles(trades_df(spark, [trade(1, "5", "2", at(3), True)])).first()
    assert out["taker_buy_volume"] == D(0) and out["taker_buy_quote_volume"] == D(0)
    assert out["quote_volume"] == D("10") and out["vwap"] == D("5")


def test_a_session_that_would_round_decimals_is_refused(spark):
    df = trades_df(spark, MARKET)
    spark.conf.set(T.PRECISION_LOSS_CONF, "true")
    try:
        with pytest.raises(ValueError, match="allowPrecisionLoss"):
            T.candles(df)
    finally:
        spark.conf.set(T.PRECISION_LOSS_CONF, "false")


def wire(**overrides):
    record = {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "trade_id": 123,
        "price": "27123.45000000",
        "qty": "0.00120000",
        "trade_time": 1700000000123456,
        "is_buyer_maker": True,
        "ingest_time": 1700000000124000,
        "source": "simulator",
    }
    record.update(overrides)
    return json.dumps({k: v for k, v in record.items() if v is not ...})


def test_parse_trades_reads_the_wire_format_exactly(spark):
    kafka = spark.createDataFrame([(bytearray(wire().encode()),)], "value binary")  # Kafka hands bytes
    parsed = T.parse_trades(kafka)
    assert [(f.name, f.dataType) for f in parsed.schema] == [(f.name, f.dataType) for f in T.TRADE_SCHEMA]
    row = parsed.select(
        "exchange", "symbol", "trade_id", "price", "qty", "is_buyer_maker", "source",
        F.unix_micros("trade_time").alias("trade_us"), F.unix_micros("ingest_time").alias("ingest_us"),
    ).first()  # fmt: skip
    assert row.asDict() == {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "trade_id": 123,
        "price": D("27123.45"),
        "qty": D("0.0012"),
        "is_buyer_maker": True,
        "source": "simulator",
        "trade_us": 1700000000123456,  # microseconds kept
        "ingest_us": 1700000000124000,
    }


def test_parse_trades_keeps_kafka_metadata_when_present(spark):
    kafka = spark.createDataFrame(
        [(wire(), 2, 41, datetime(2026, 11, 20, tzinfo=UTC))],
        "value string, partition int, offset long, timestamp timestamp",
    )
    row = T.parse_trades(kafka).first()
    assert (row["kafka_partition"], row["kafka_offset"]) == (2, 41)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"price": "1,000.5"}, "price"),  # grouping separators are not a number here
        ({"price": "0.12345678901"}, "price"),  # 11 significant decimals would be rounded: refused
        ({"qty": "1e-8"}, "qty"),  # exponent notation is not the wire format
        ({"qty": "-1"}, "qty"),
        ({"price": "1234567890123456789"}, "price"),  # 19 integer digits do not fit DECIMAL(28,10)
        ({"trade_id": "12x"}, "trade_id"),
        ({"trade_time": ...}, "trade_time"),
    ],
)
def test_malformed_fields_become_null_and_are_filtered(spark, overrides, field):
    records = [(wire(),), (wire(**{"trade_id": 124, "source": "bad", **overrides}),), ("not json",)]
    parsed = T.parse_trades(spark.createDataFrame(records, "value string"))
    bad = parsed.where(F.col("source") == "bad").collect()
    assert len(bad) == 1 and bad[0][field] is None  # the other fields of the record still parse
    assert [r.trade_id for r in T.valid_trades(parsed).collect()] == [123]


def test_trailing_zeros_beyond_ten_decimals_are_accepted(spark):
    kafka = spark.createDataFrame([(wire(price="0.000000012300000000"),)], "value string")
    assert T.parse_trades(kafka).first()["price"] == D("0.0000000123")


def test_trade_date_is_the_utc_date_whatever_the_session_zone(spark):
    rows = [
        trade(1, "1", "1", datetime(2026, 11, 20, 23, 59, 59, 999999, tzinfo=UTC), True),
        trade(2, "1", "1", datetime(2026, 11, 21, 0, 0, tzinfo=UTC), True),
    ]
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        dates = [r.trade_date for r in T.with_trade_date(trades_df(spark, rows)).orderBy("trade_id").collect()]
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    assert dates == [date(2026, 11, 20), date(2026, 11, 21)]


def test_progress_rows_take_rates_drops_and_watermark_from_spark_progress():
    # The shape of StreamingQueryProgress.json from Spark 4.2 (trimmed): two stateful operators.
    progress = {
        "id": "q-id",
        "runId": "run-1",
        "name": "live_candles",
        "timestamp": "2026-11-22T04:22:26.049Z",
        "batchId": 7,
        "batchDuration": 812,
        "numInputRows": 40,
        "inputRowsPerSecond": 19.5,
        "processedRowsPerSecond": 49.2,
        "durationMs": {"triggerExecution": 812},
        "eventTime": {"watermark": "2026-11-22T04:20:00.000Z"},
        "stateOperators": [
            {"operatorName": "stateStoreSave", "numRowsDroppedByWatermark": 1},
            {"operatorName": "dedupeWithinWatermark", "numRowsDroppedByWatermark": 2},
        ],
    }
    row = progress_row(progress)
    assert (row.query_name, row.run_id, row.batch_id, row.num_input_rows) == ("live_candles", "run-1", 7, 40)
    assert row.rows_dropped_by_watermark == 3 and row.duration_ms == 812
    assert row.watermark == datetime(2026, 11, 22, 4, 20, tzinfo=UTC)
    assert row.batch_time == datetime(2026, 11, 22, 4, 22, 26, 49000, tzinfo=UTC)
    idle = progress_row({**progress, "stateOperators": [], "inputRowsPerSecond": "NaN",
                         "eventTime": {"watermark": "1970-01-01T00:00:00.000Z"}})  # fmt: skip
    assert idle.watermark is None and idle.input_rows_per_second is None and idle.rows_dropped_by_watermark == 0
