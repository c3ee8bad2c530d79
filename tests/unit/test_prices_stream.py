"""The `prices` message from both ends, and the stream's reading of it (candlelake.spark.prices).

candlelake.price.PRICE_WIRE_FIELDS is the one definition: the producer writes exactly it, and Spark reads
every field back exactly or drops the point.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from candlelake.price import PRICE_WIRE_FIELDS, PricePoint
from candlelake.spark import prices as P
from candlelake.util import from_us, to_us

pytestmark = pytest.mark.unit

AGGTRADES = Path(__file__).resolve().parents[1] / "fixtures" / "binance-spot-xrpeth-2019-10" / "aggtrades.json.gz"
MICROS = 1_000_000

POINTS = [
    PricePoint("coingecko", "BTC-USD", Decimal("67187.33589365664"), 1_711_356_300_000_000, "coingecko-simple-price"),
    # the finest price the lake keeps, and the largest
    PricePoint("coingecko", "PEPE-USD", Decimal("0.000000000123456789"), 1_711_356_300_000_001, "coingecko"),
    PricePoint("binance", "BTCUSDT", Decimal("99999999999999999999.999999999999999999"), 1, 'a "quoted" \\ source'),
]


def kafka_rows(spark, values: list[bytes]):
    return spark.createDataFrame([(v,) for v in values], "value binary")


def test_the_producer_writes_exactly_the_defined_fields() -> None:
    for point in POINTS:
        wire = json.loads(point.to_json_bytes())
        assert list(wire) == [name for name, _ in PRICE_WIRE_FIELDS]
        assert PricePoint.from_wire(wire) == point
        assert isinstance(wire["price"], str) and isinstance(wire["time"], int)


def test_spark_reads_every_field_back_exactly(spark) -> None:
    rows = P.parse_prices(kafka_rows(spark, [p.to_json_bytes() for p in POINTS])).collect()
    got = [PricePoint(r["exchange"], r["symbol"], r["price"], to_us(r["time"]), r["source"]) for r in rows]
    assert got == POINTS


def test_points_spark_cannot_keep_exactly_are_dropped(spark) -> None:
    good = POINTS[0].to_wire()
    bad = [
        {**good, "price": "0.0000000001234567891"},  # 19 fractional digits: would round
        {**good, "price": "100000000000000000000"},  # 21 integer digits
        {**good, "price": "0"},
        {k: v for k, v in good.items() if k != "time"},
    ]
    values = [json.dumps(b).encode() for b in bad] + [b"not json", POINTS[0].to_json_bytes()]
    assert P.parse_prices(kafka_rows(spark, values)).count() == 1


def test_a_point_polled_twice_counts_once_and_its_date_is_the_utc_day(spark, tmp_path) -> None:
    point = POINTS[0]
    row = (point.exchange, point.symbol, point.price, from_us(point.time_us), point.source)
    other = (point.exchange, point.symbol, point.price, from_us(point.time_us + 1), point.source)
    spark.createDataFrame([row, row, other], P.POINT_SCHEMA).write.parquet(str(tmp_path / "points"))
    # The job's dedupe, on a stream (a processing-time watermark has no meaning on a static frame).
    points = spark.readStream.schema(P.POINT_SCHEMA).parquet(str(tmp_path / "points"))
    query = (
        P.dedupe_points(points, "10 minutes")
        .writeStream.format("memory")
        .queryName("deduped_points")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(120)
    df = spark.table("deduped_points")
    times = sorted(r["time"] for r in df.collect())  # naive, in the session's UTC
    assert times == [from_us(point.time_us).replace(tzinfo=None), from_us(point.time_us + 1).replace(tzinfo=None)]
    df = df.where(F.col("time") == from_us(point.time_us))
    (dated,) = P.with_price_date(df).collect()
    assert str(dated["price_date"]) == "2024-03-25"
