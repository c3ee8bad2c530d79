"""Pure Spark transforms from Kafka records to trades to candles, shared by the streaming and batch jobs.

Nothing here reads or writes: every function takes a DataFrame and returns one, so the same code runs
inside a streaming aggregation (jobs/stream_candles.py) and on a batch DataFrame (the nightly job, tests).

Decimal types (the wire carries prices and quantities as decimal strings; no float ever touches them):

- price and qty are DECIMAL(28,10): 18 integer digits, 10 fractional digits (exchanges use at most 8).
- price * qty is DECIMAL(38,20): 10 + 10 fractional digits, so the product is exact; 18 integer digits
  remain, so a single trade's quote value must stay below 1e18.
- volume = sum(qty) is DECIMAL(38,10) and quote_volume = sum(price*qty) DECIMAL(38,20): a sum keeps
  its operands' scale, so both are exact. Overflow raises under ANSI mode (Spark 4's default) rather
  than returning NULL.
- vwap = quote_volume / volume rounded half-up to 20 fractional digits, DECIMAL(38,20). It is derived,
  not an exchange field: exact to 1e-20, ten digits finer than any price.

Spark's default `spark.sql.decimalOperations.allowPrecisionLoss=true` would type DECIMAL(28,10) *
DECIMAL(28,10) as DECIMAL(38,6) and silently round every quote value to 6 digits. With `false` the
product is DECIMAL(38,20) (scale kept, precision capped). `candles()` refuses to run on a session
where precision loss is allowed instead of returning numbers that are quietly wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DataType,
    DecimalType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from candlelake import candle, coverage
from candlelake.trade import CANDLE_INPUTS, TRADE_KEY, WIRE_FIELDS, WireKind
from candlelake.util import interval_micros, to_us

PRICE_TYPE = DecimalType(28, 10)
QTY_TYPE = DecimalType(28, 10)
QUOTE_TYPE = DecimalType(38, 20)  # price * qty, exact: scale 10 + 10
VOLUME_TYPE = DecimalType(38, 10)  # sum of qty
VWAP_TYPE = DecimalType(38, 20)

PRECISION_LOSS_CONF = "spark.sql.decimalOperations.allowPrecisionLoss"

# The Kafka record value as the producer writes it (candlelake.trade.WIRE_FIELDS). Decimals stay strings
# here and are converted by `parse_trades`, which checks them first: Spark's own string-to-decimal
# conversion rounds extra fractional digits half-up and would silently change a value.
_WIRE_TYPES = {
    "text": StringType(),
    "integer": LongType(),
    "decimal": StringType(),
    "boolean": BooleanType(),
    "epoch_us": LongType(),
}


def wire_schema(fields: Sequence[tuple[str, WireKind]]) -> StructType:
    """The Spark schema that reads a Kafka message defined field by field (trade.WIRE_FIELDS and the like)."""
    return StructType([StructField(name, _WIRE_TYPES[kind]) for name, kind in fields])


KAFKA_VALUE_SCHEMA = wire_schema(WIRE_FIELDS)
assert PRICE_TYPE == QTY_TYPE, "parse_trades reads every wire decimal as one type"

# A canonical trade, as `parse_trades` returns it and the lake stores it.
TRADE_SCHEMA = StructType(
    [
        StructField("exchange", StringType(), False),
        StructField("symbol", StringType(), False),
        StructField("trade_id", LongType(), False),
        StructField("price", PRICE_TYPE, False),
        StructField("qty", QTY_TYPE, False),
        StructField("trade_time", TimestampType(), False),
        StructField("is_buyer_maker", BooleanType(), False),
        StructField("ingest_time", TimestampType(), True),
        StructField("source", StringType(), True),
    ]
)

_CANDLE_TYPES: dict[str, DataType] = {
    "exchange": StringType(),
    "symbol": StringType(),
    "open_time": TimestampType(),
    "close_time": TimestampType(),
    **dict.fromkeys(candle.PRICES, PRICE_TYPE),
    "volume": VOLUME_TYPE,
    "taker_buy_volume": VOLUME_TYPE,
    **dict.fromkeys(candle.QUOTE_VOLUMES, QUOTE_TYPE),
    "trades": LongType(),
    "vwap": VWAP_TYPE,
    **dict.fromkeys(candle.TRADE_IDS, LongType()),
}
# NULL in a quiet candle, as Binance's empty kline has no trade ids (and no vwap).
_CANDLE_NULLABLE = ("vwap", *candle.TRADE_IDS)
# One candle per (exchange, symbol, open_time); columns and their order are the PostgreSQL table
# `candles`' (candlelake.candle.COLUMNS).
CANDLE_SCHEMA = StructType([StructField(c, _CANDLE_TYPES[c], c in _CANDLE_NULLABLE) for c in candle.COLUMNS])
CANDLE_COLUMNS: tuple[str, ...] = tuple(CANDLE_SCHEMA.fieldNames())

# A recomputed (curated) candle: the candle and what coverage made of it, 'complete' or 'partial'
# (candlelake.coverage). Staged files and the curated rows in PostgreSQL carry it.
CURATED_SCHEMA = StructType([*CANDLE_SCHEMA.fields, StructField("coverage", StringType(), False)])
CURATED_COLUMNS: tuple[str, ...] = tuple(CURATED_SCHEMA.fieldNames())

_GRID_SCHEMA = StructType(
    [
        StructField("exchange", StringType(), False),
        StructField("symbol", StringType(), False),
        StructField("_open_us", LongType(), False),
        StructField("_stretch_us", LongType(), False),
        StructField("_carrier_us", LongType(), False),
    ]
)


_MICROS_PER_DAY = 86_400_000_000

# Kafka's own record metadata, kept next to each trade (when the input has it) so a row in the lake can
# be traced back to the record it came from: (Kafka source column, our column).
KAFKA_METADATA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("partition", "kafka_partition"),
    ("offset", "kafka_offset"),
    ("timestamp", "kafka_time"),
)


def exact_decimal(text: Column, dtype: DecimalType) -> Column:
    """The decimal a string spells, or NULL when it is not a plain decimal that fits `dtype` without
    rounding: at most precision - scale integer digits and scale significant fractional digits (trailing
    zeros beyond those are harmless, e.g. "0.001200000000" for DECIMAL(28,10))."""
    fits = rf"^[0-9]{{1,{dtype.precision - dtype.scale}}}(\.[0-9]{{0,{dtype.scale}}}0*)?$"
    return F.when(text.rlike(fits), text.try_cast(dtype))


def parse_trades(kafka_df: DataFrame) -> DataFrame:
    """Kafka records (a `value` column, binary or string JSON) -> typed trades (TRADE_SCHEMA columns).

    When the input is a Kafka source DataFrame, its `partition`, `offset` and `timestamp` follow as
    `kafka_partition`, `kafka_offset` and `kafka_time`. A field that is missing or malformed becomes
    NULL instead of failing the query (one bad record must not stop the stream); `valid_trades` keeps
    the complete ones. Times arrive as epoch microseconds and become UTC timestamps, microseconds kept.
    """
    record = F.from_json(F.col("value").cast("string"), KAFKA_VALUE_SCHEMA).alias("r")
    metadata = [F.col(source).alias(name) for source, name in KAFKA_METADATA_COLUMNS if source in kafka_df.columns]
    return kafka_df.select(record, *metadata).select(
        *[from_wire(kind, F.col(f"r.{name}"), PRICE_TYPE).alias(name) for name, kind in WIRE_FIELDS],
        *[F.col(name) for source, name in KAFKA_METADATA_COLUMNS if source in kafka_df.columns],
    )


def from_wire(kind: WireKind, value: Column, decimal_type: DecimalType) -> Column:
    """One wire field typed: decimals checked and exact in `decimal_type` (a trade's price and qty share
    DECIMAL(28,10)), epoch microseconds as timestamps."""
    if kind == "decimal":
        return exact_decimal(value, decimal_type)
    if kind == "epoch_us":
        return F.timestamp_micros(value)
    return value


def valid_trades(trades: DataFrame) -> DataFrame:
    """Only the trades whose every field a candle needs (trade.CANDLE_INPUTS) is present."""
    condition = F.lit(True)
    for name in CANDLE_INPUTS:
        condition = condition & F.col(name).isNotNull()
    return trades.where(condition)


def with_trade_date(trades: DataFrame) -> DataFrame:
    """Add `trade_date`, the UTC calendar date of `trade_time` (the lake's partition column).

    Computed from epoch microseconds so it does not depend on the session time zone.
    """
    return trades.withColumn("trade_date", utc_date("trade_time"))


def utc_date(timestamp: str) -> Column:
    """The UTC calendar date of a timestamp column, from its epoch microseconds: whatever the session's
    time zone."""
    micros = F.unix_micros(timestamp)
    day = (micros - F.pmod(micros, F.lit(_MICROS_PER_DAY))) / F.lit(_MICROS_PER_DAY)
    return F.date_from_unix_date(day.cast("int"))


def require_exact_decimals(df: DataFrame) -> None:
    """Fail when the session would round decimal products (see the module docstring)."""
    allowed = df.sparkSession.conf.get(PRECISION_LOSS_CONF, "true")
    if str(allowed).strip().lower() != "false":
        raise ValueError(
            f"{PRECISION_LOSS_CONF} is {allowed!r}: Spark would round price*qty to 6 decimal places. "
            f"Build the SparkSession with .config('{PRECISION_LOSS_CONF}', 'false')"
        )


def candles(trades: DataFrame, interval: str = "1 minute") -> DataFrame:
    """Typed trades -> one candle per (exchange, symbol, open_time) at a fixed `interval` (CANDLE_SCHEMA).

    open_time = floor(epoch(trade_time) / interval) * interval in UTC, which is what Spark's tumbling
    `window()` computes; grouping on the window (not on a derived timestamp) keeps the event-time
    watermark attached, so a streaming aggregation can drop late rows and evict finished buckets.
    open/close are the prices of the first/last trade ordered by (trade_time, trade_id): min_by/max_by
    on that struct give the same answer for any arrival order and any split into micro-batches. (A single
    DECIMAL(38,0) key, time * 10^20 + id, would let Spark hash-aggregate instead of sort: 8% less driver
    CPU at 1,000 trades/s, but its BigDecimal arithmetic per row cut the rate sustained at 20,000/s.)
    Trades must be deduplicated on (exchange, symbol, trade_id) before this.
    """
    require_exact_decimals(trades)
    order = F.struct(F.col("trade_time"), F.col("trade_id"))
    quote = (F.col("price").cast(PRICE_TYPE) * F.col("qty").cast(QTY_TYPE)).cast(QUOTE_TYPE)
    taker_buy = ~F.col("is_buyer_maker")  # the buyer took liquidity: a market buy
    volume = F.sum(F.col("qty")).cast(VOLUME_TYPE)
    quote_volume = F.sum(quote).cast(QUOTE_TYPE)
    grouped = trades.groupBy(F.col("exchange"), F.col("symbol"), F.window(F.col("trade_time"), interval).alias("w"))
    agg = grouped.agg(
        F.min_by(F.col("price"), order).alias("open"),
        F.max(F.col("price")).alias("high"),
        F.min(F.col("price")).alias("low"),
        F.max_by(F.col("price"), order).alias("close"),
        volume.alias("volume"),
        quote_volume.alias("quote_volume"),
        F.count(F.lit(1)).alias("trades"),
        # coalesce: a bucket with only maker buys has zero taker-buy volume, not NULL.
        F.coalesce(F.sum(F.when(taker_buy, F.col("qty"))).cast(VOLUME_TYPE), F.lit(0).cast(VOLUME_TYPE)).alias(
            "taker_buy_volume"
        ),
        F.coalesce(F.sum(F.when(taker_buy, quote)).cast(QUOTE_TYPE), F.lit(0).cast(QUOTE_TYPE)).alias(
            "taker_buy_quote_volume"
        ),
        F.min_by(F.col("trade_id"), order).alias("first_trade_id"),
        F.max_by(F.col("trade_id"), order).alias("last_trade_id"),
    )
    return agg.select(
        F.col("exchange"),
        F.col("symbol"),
        F.col("w.start").alias("open_time"),
        (F.col("w.end") - F.expr("INTERVAL 1 MILLISECOND")).alias("close_time"),
        F.col("open").cast(PRICE_TYPE).alias("open"),
        F.col("high").cast(PRICE_TYPE).alias("high"),
        F.col("low").cast(PRICE_TYPE).alias("low"),
        F.col("close").cast(PRICE_TYPE).alias("close"),
        F.col("volume"),
        F.col("quote_volume"),
        F.col("trades"),
        F.col("taker_buy_volume"),
        F.col("taker_buy_quote_volume"),
        # Zero volume (only zero-quantity trades) has no average price; dividing would raise under ANSI.
        F.when(F.col("volume") != 0, (F.col("quote_volume") / F.col("volume")).cast(VWAP_TYPE)).alias("vwap"),
        F.col("first_trade_id"),
        F.col("last_trade_id"),
    )


MARKET_KEY: tuple[str, ...] = ("exchange", "symbol")


def dedupe_trades(trades: DataFrame) -> DataFrame:
    """One row per (exchange, symbol, trade_id): the copy ingested first, the same one on every run.

    Copies of one trade carry the same exchange fields; they differ in ingest_time, source and Kafka
    metadata. The order (ingest_time with NULL last, then every other column) is total over the
    columns that can differ, so the choice never depends on file or partition order. `row_number() == 1`
    lets Spark keep one row per key in each partition before the shuffle (a window group limit).
    """
    ordering = [F.col("ingest_time").asc_nulls_last()] + [
        F.col(name).asc_nulls_last() for name in trades.columns if name not in (*TRADE_KEY, "ingest_time")
    ]
    window = Window.partitionBy(*TRADE_KEY).orderBy(*ordering)
    return trades.withColumn("_copy", F.row_number().over(window)).where(F.col("_copy") == 1).drop("_copy")


def _bucket_micros(moment: datetime, step: int) -> int:
    """Epoch microseconds of the start of the bucket holding `moment` (aware, or naive meaning UTC)."""
    micros = to_us(moment)
    return micros - micros % step


def fill_empty_intervals(
    candles: DataFrame,
    interval: str,
    covered: Mapping[tuple[str, str], Sequence[coverage.Span]],
    start: datetime,
    end: datetime,
    previous: DataFrame | None = None,
) -> DataFrame:
    """Candles with their coverage, plus a quiet candle for every covered interval without trades.

    `covered` holds each market's merged coverage (candlelake.coverage; epoch microseconds). A candle
    whose interval lies inside it throughout is `complete`, any other candle `partial`. An interval of
    [start, end) without trades becomes a candle (open = high = low = close = the previous close, zero
    volumes, trades = 0, NULL vwap and trade ids, as Binance emits it) only when it is covered throughout
    and the previous close is known inside the same covered stretch (coverage.complete_buckets): from a
    candle in range, or from `previous` (columns exchange, symbol, close, trade_us: each market's last
    trade before `start`). Everything else without trades is absent: `trades = 0` means "no trades",
    never "data missing".

    The complete buckets are listed on the driver (1,440 rows per market and day) and joined to the
    candles; the previous close is the last non-NULL close in open_time order: exact (closes are copied,
    never computed). Returns CURATED_SCHEMA columns.
    """
    step = interval_micros(interval)
    keys = list(MARKET_KEY)
    first_us, end_us = _bucket_micros(start, step), _bucket_micros(end - timedelta(microseconds=1), step) + step
    grid_rows = [
        (exchange, symbol, open_us, stretch, carrier)
        for (exchange, symbol), spans in sorted(covered.items())
        for open_us, stretch, carrier in coverage.complete_buckets(spans, first_us, end_us, step)
    ]
    grid = candles.sparkSession.createDataFrame(grid_rows, _GRID_SCHEMA).select(
        *keys,
        F.timestamp_micros(F.col("_open_us")).alias("open_time"),
        F.lit(True).alias("_complete"),
        "_stretch_us",
        "_carrier_us",
    )
    real = candles.select(*CANDLE_COLUMNS, F.lit(True).alias("_real"))
    rows = real.join(grid, [*keys, "open_time"], "full_outer")
    if previous is not None:
        prev = previous.select(
            *keys, F.col("close").cast(PRICE_TYPE).alias("_prev_close"), F.col("trade_us").alias("_prev_us")
        )
        rows = rows.join(prev, keys, "left")
    else:
        rows = rows.withColumn("_prev_close", F.lit(None).cast(PRICE_TYPE)).withColumn(
            "_prev_us", F.lit(None).cast(LongType())
        )
    before = Window.partitionBy(*keys).orderBy("open_time").rowsBetween(Window.unboundedPreceding, -1)
    real_close = F.when(F.col("_real").isNotNull(), F.col("close"))
    real_open = F.when(F.col("_real").isNotNull(), F.unix_micros(F.col("open_time")))
    marked = rows.withColumn("_before", F.last(real_close, ignorenulls=True).over(before)).withColumn(
        "_before_us", F.last(real_open, ignorenulls=True).over(before)
    )
    carried = F.when(
        F.col("_before").isNotNull() & (F.col("_before_us") >= F.col("_carrier_us")), F.col("_before")
    ).when(F.col("_before").isNull() & (F.col("_prev_us") >= F.col("_stretch_us")), F.col("_prev_close"))
    state = F.when(F.col("_complete").isNotNull(), F.lit(coverage.COMPLETE)).otherwise(F.lit(coverage.PARTIAL))
    found = real.join(grid.select(*keys, "open_time", "_complete"), [*keys, "open_time"], "left").select(
        *CANDLE_COLUMNS, state.alias("coverage")
    )
    empty = marked.where(F.col("_real").isNull()).withColumn("_carried", carried).where(F.col("_carried").isNotNull())
    zero_volume = F.lit(0).cast(VOLUME_TYPE)
    zero_quote = F.lit(0).cast(QUOTE_TYPE)
    fills = empty.select(
        *keys,
        F.col("open_time"),
        F.timestamp_micros(F.unix_micros(F.col("open_time")) + F.lit(step - 1_000)).alias("close_time"),
        *[F.col("_carried").alias(name) for name in candle.PRICES],
        zero_volume.alias("volume"),
        zero_quote.alias("quote_volume"),
        F.lit(0).cast(LongType()).alias("trades"),
        zero_volume.alias("taker_buy_volume"),
        zero_quote.alias("taker_buy_quote_volume"),
        F.lit(None).cast(VWAP_TYPE).alias("vwap"),
        F.lit(None).cast(LongType()).alias("first_trade_id"),
        F.lit(None).cast(LongType()).alias("last_trade_id"),
        F.lit(coverage.COMPLETE).alias("coverage"),
    )
    return found.unionByName(fills)
