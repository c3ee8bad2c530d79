"""The nightly recompute: trades from the Parquet lake -> exact, gap-filled candles (the final word).

The lake (`<lake>/trades/exchange=<exchange>/trade_date=<UTC date>/*.parquet`, written by
jobs/stream_candles.py through candlelake.stream.parquet_lake) may hold a trade twice when its second
copy arrived after the stream's dedupe window, so the recompute dedupes again on
(exchange, symbol, trade_id) before aggregating with the same `candles()` the stream uses.

A day's trades are the files candlelake.lake.catalog names, never a folder listing: the curated
manifest's files (when a curated area is given) plus the committed bronze batches above the manifest's
covered batch (committed per the lake query's checkpoint when given; without one, every recorded
batch). Only the days that overlap [start, end) are read; rows are then cut to
start <= trade_time < end. The close before `start` (for buckets at the start of the range without
trades) is the price of each market's last trade in the `lookback` before `start`.

Coverage decides what an interval without trades is (candlelake.coverage): a quiet candle where the
market was covered throughout, nothing where it was not; and every candle says whether its interval
was covered throughout (`complete`) or not (`partial`). `load_coverage` reads it from PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from candlelake import coverage
from candlelake.lake import catalog
from candlelake.spark import transforms
from candlelake.util import from_us, interval_micros, to_us, utc

TRADES_TABLE = "trades"
LAKE_PARTITIONS = ("exchange", "trade_date")
DEFAULT_LOOKBACK = timedelta(days=1)


def settled_end(day_end: datetime, now: datetime, watermark_delay: str, interval: str) -> datetime:
    """Where a recompute of a day should stop: the day's end, or for a day not over yet the last whole bucket
    behind the live watermark (now - delay).

    A curated candle is final for the live path (a live upsert never overwrites it), so a bucket that
    can still get on-time trades must stay live: recomputing it, or filling the rest of the day with
    empty candles, would freeze it.
    """
    step = interval_micros(interval)
    behind = to_us(now) - interval_micros(watermark_delay)
    return min(utc(day_end), from_us(behind // step * step))


def _dates(start: datetime, end: datetime) -> list[date]:
    """Every UTC date that holds an instant of [start, end)."""
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def read_lake_trades(
    spark: SparkSession,
    lake: Path,
    exchange: str,
    symbols: Sequence[str] | None,
    start: datetime,
    end: datetime,
    *,
    curated: Path | None = None,
    checkpoint: Path | None = None,
) -> DataFrame:
    """Trades of `exchange` (and `symbols`, all when None) with start <= trade_time < end, duplicates kept.

    `curated`: the curated area (settings.curated_dir) whose manifests replace compacted bronze;
    `checkpoint`: the lake query's checkpoint (catalog.lake_checkpoint(settings)), so that a batch the
    stream has not committed is not read. Production callers pass both.
    """
    start, end = utc(start), utc(end)
    if end <= start:
        raise ValueError(f"the range is empty: end {end.isoformat()} is not after start {start.isoformat()}")
    files = [
        path
        for d in _dates(start, end)
        for path in catalog.day_files(lake, exchange, d, curated=curated, checkpoint=checkpoint).files
    ]
    raw = catalog.read_trades(spark, files, exchange)
    trades = raw.where((F.col("trade_time") >= F.lit(start)) & (F.col("trade_time") < F.lit(end)))
    if symbols:
        trades = trades.where(F.col("symbol").isin(list(symbols)))
    return transforms.valid_trades(trades.select(*transforms.TRADE_SCHEMA.fieldNames()))


def previous_closes(
    spark: SparkSession,
    lake: Path,
    exchange: str,
    symbols: Sequence[str] | None,
    start: datetime,
    lookback: timedelta = DEFAULT_LOOKBACK,
    *,
    curated: Path | None = None,
    checkpoint: Path | None = None,
) -> DataFrame:
    """(exchange, symbol, close): each market's last trade price in [start - lookback, start)."""
    start = utc(start)
    trades = read_lake_trades(
        spark, lake, exchange, symbols, start - lookback, start, curated=curated, checkpoint=checkpoint
    )
    order = F.struct(F.col("trade_time"), F.col("trade_id"))
    return trades.groupBy(*transforms.MARKET_KEY).agg(
        F.max_by(F.col("price"), order).alias("close"), F.max(F.unix_micros(F.col("trade_time"))).alias("trade_us")
    )


def load_coverage(
    dsn: str, exchange: str, start: datetime, end: datetime, lookback: timedelta = DEFAULT_LOOKBACK
) -> dict[tuple[str, str], list[coverage.Span]]:
    """(exchange, symbol) -> the market's merged coverage of [start - lookback, end), as recompute() takes it.

    The lookback is read too, so that a covered stretch running into the range from before it (a live
    session over midnight, yesterday's day file) carries the close of its last trade.
    """
    found = coverage.load_dsn(dsn, exchange, utc(start) - lookback, utc(end))
    return {(exchange, symbol): spans for symbol, spans in found.items()}


def recompute(
    spark: SparkSession,
    lake: Path,
    exchange: str,
    symbols: Sequence[str] | None,
    start: datetime,
    end: datetime,
    interval: str = "1 minute",
    lookback: timedelta = DEFAULT_LOOKBACK,
    *,
    covered: Mapping[tuple[str, str], Sequence[coverage.Span]],
    curated: Path | None = None,
    checkpoint: Path | None = None,
) -> DataFrame:
    """Curated candles for [start, end) (CURATED_SCHEMA): lake trades, deduplicated, aggregated, judged
    against `covered` ((exchange, symbol) -> merged coverage, from load_coverage), quiet where covered.

    A covered bucket without trades is a quiet candle when the previous close is known inside the same
    covered stretch: from a candle in range or the last trade in the `lookback` before it. The
    candles before filling are cached (persisted) for the query's lifetime in the session: a day of
    them is small. `curated` and `checkpoint` as in read_lake_trades.
    """
    where = {"curated": curated, "checkpoint": checkpoint}
    trades = transforms.dedupe_trades(read_lake_trades(spark, lake, exchange, symbols, start, end, **where))
    # fill_empty_intervals reads the candles three times (bounds, closes, the union); caching them
    # keeps that to one pass over the trades. The cache goes with the session (or spark.catalog.clearCache()).
    built = transforms.candles(trades, interval).persist()
    previous = previous_closes(spark, lake, exchange, symbols, start, lookback, **where) if lookback else None
    wanted = set(symbols or ())
    spans = {key: merged for key, merged in covered.items() if key[0] == exchange and (not wanted or key[1] in wanted)}
    return transforms.fill_empty_intervals(built, interval, spans, utc(start), utc(end), previous)


@dataclass(frozen=True)
class RecomputeSummary:
    trades_read: int
    duplicates_dropped: int
    candles_written: int
    empty_intervals_filled: int
    partial_candles: int
    seconds: float

    @property
    def trades_per_second(self) -> float:
        return self.trades_read / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            **asdict(self),
            "seconds": round(self.seconds, 3),
            "trades_per_second": round(self.trades_per_second, 1),
        }


def summarize(candles: DataFrame, trades_read: int, started: float) -> RecomputeSummary:
    """Counts of a recomputed candles DataFrame; trades counted once each, so read - counted = duplicates."""
    row = candles.agg(
        F.count(F.lit(1)).alias("n"),
        F.coalesce(F.sum("trades"), F.lit(0)).alias("counted"),
        F.count_if(F.col("trades") == 0).alias("empty"),
        F.count_if(F.col("coverage") == coverage.PARTIAL).alias("partial"),
    ).first()
    assert row is not None  # a global aggregate always has one row
    return RecomputeSummary(
        trades_read=trades_read,
        duplicates_dropped=trades_read - int(row["counted"]),
        candles_written=int(row["n"]),
        empty_intervals_filled=int(row["empty"]),
        partial_candles=int(row["partial"]),
        seconds=time.monotonic() - started,
    )
