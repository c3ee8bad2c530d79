"""The `prices` topic in Spark: price points typed exactly, deduplicated, dated for the lake.

Pure DataFrame functions, for the streaming job (jobs/stream_candles.py) and its tests alike. A point
is read from the one message definition (candlelake.price.PRICE_WIRE_FIELDS); its price becomes
DECIMAL(38,18), which holds every digit CoinGecko sends for its smallest coins, or the point is dropped
when its price does not fit without rounding (as a trade with an over-fine price is). The points'
sliding-window KPIs are computed where all of a window's points are: candlelake.stream.price_kpis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import functions as F
from pyspark.sql.types import DecimalType, StringType, StructField, StructType, TimestampType

from candlelake.price import PRICE_KEY, PRICE_WIRE_FIELDS
from candlelake.spark.transforms import from_wire, utc_date, wire_schema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

POINT_PRICE_TYPE = DecimalType(38, 18)
PRICE_VALUE_SCHEMA = wire_schema(PRICE_WIRE_FIELDS)

POINT_SCHEMA = StructType(
    [
        StructField("exchange", StringType(), False),
        StructField("symbol", StringType(), False),
        StructField("price", POINT_PRICE_TYPE, False),
        StructField("time", TimestampType(), False),
        StructField("source", StringType(), False),
    ]
)
"""A price point as `parse_prices` returns it and the lake's `prices` table stores it (with `price_date`)."""


def parse_prices(kafka_df: DataFrame) -> DataFrame:
    """Kafka records of the `prices` topic -> complete, typed price points (POINT_SCHEMA's columns)."""
    record = F.from_json(F.col("value").cast("string"), PRICE_VALUE_SCHEMA).alias("r")
    points = kafka_df.select(record).select(
        *[from_wire(kind, F.col(f"r.{name}"), POINT_PRICE_TYPE).alias(name) for name, kind in PRICE_WIRE_FIELDS]
    )
    complete = F.lit(True)
    for name in POINT_SCHEMA.fieldNames():
        complete = complete & F.col(name).isNotNull()
    return points.where(complete & (F.col("price") > 0))


def with_price_date(points: DataFrame) -> DataFrame:
    """Add `price_date`, the UTC date of the point's time (the lake's partition column)."""
    return points.withColumn("price_date", utc_date("time"))


def dedupe_points(points: DataFrame, window: str) -> DataFrame:
    """One row per PRICE_KEY: a poller asking again before its source updated sends the same point.

    In a stream, a key is remembered for `window` of processing time (the batch's clock only moves
    forward, so no point is ever late; a copy arriving later than that lands again and is dropped by the
    lake's and PostgreSQL's keys). On a static frame the watermark does nothing and every copy goes.
    """
    return (
        points.withColumn("_seen_at", F.current_timestamp())
        .withWatermark("_seen_at", window)
        .dropDuplicatesWithinWatermark(list(PRICE_KEY))
        .drop("_seen_at")
    )
