"""The frames the suites validate, built on Spark: the day's distinct trades, and the staged candles with
the evidence columns of the candles suite (see candlelake.nightly.quality.suites).

Pure `DataFrame -> DataFrame` functions; Spark is imported by each function, not by the module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from candlelake import coverage
from candlelake.nightly.quality import suites
from candlelake.trade import CANDLE_INPUTS
from candlelake.util import interval_micros

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


def distinct_trades(trades: DataFrame) -> DataFrame:
    """The fields that make a trade, identical copies collapsed (copies differ only in ingest metadata)."""
    return trades.select(*CANDLE_INPUTS).distinct()


def checked_candles(
    staged: DataFrame,
    recomputed: DataFrame,
    interval: str,
    covered: Mapping[tuple[str, str], Sequence[coverage.Span]],
) -> DataFrame:
    """Staged candles plus the candles suite's evidence columns (see candlelake.nightly.quality.suites).

    `gap_before` compares each staged candle with its market's previous one: more than `interval` apart
    is a gap when the first missing interval had to be a quiet candle, that is when it lies inside a
    covered stretch of `covered` (each market's merged coverage) that the previous candle belongs to
    (coverage.complete_buckets' "earliest carrier"). Uncovered time has no candles, rightly.
    `recompute_mismatch` comes from a full outer join with `recomputed` on (exchange, symbol, open_time),
    so a recomputed candle missing from the stage is a row too (key only, staged values NULL). Equality is
    null-safe and exact on every candle column. Needs a UTC session time zone (the jobs' sessions).
    """
    from pyspark.sql import functions as F

    keys = list(suites.CANDLE_KEY)
    values = _value_columns()
    stage = _with_gaps(staged, interval, covered).withColumn("_in_stage", F.lit(True))
    truth = recomputed.select(*keys, *[F.col(c).alias(f"_r_{c}") for c in values], F.lit(True).alias("_in_recompute"))
    joined = stage.join(truth, keys, "full_outer")
    return joined.select(
        *keys,
        *values,
        F.col(suites.GAP_COLUMN),
        _mismatch(values).alias(suites.MISMATCH_COLUMN),
    )


def _value_columns() -> list[str]:
    """The curated candle columns that are not its key: the ones compared with the recomputation."""
    from candlelake.spark import transforms

    return [c for c in transforms.CURATED_COLUMNS if c not in suites.CANDLE_KEY]


def _with_gaps(
    staged: DataFrame, interval: str, covered: Mapping[tuple[str, str], Sequence[coverage.Span]]
) -> DataFrame:
    """The staged candles with `gap_before`: text on each candle that follows a gap in covered time."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from candlelake.spark import transforms

    step = interval_micros(interval)
    by_market = Window.partitionBy("exchange", "symbol").orderBy("open_time")
    with_previous = staged.select(*transforms.CURATED_COLUMNS).withColumn(
        "_previous", F.lag("open_time").over(by_market)
    )
    flagged = _flag_covered(with_previous, _stretches(staged.sparkSession, covered, step), step)
    return flagged.withColumn(suites.GAP_COLUMN, _gap_text(interval, step)).drop("_previous", "_covered")


def _stretches(spark: SparkSession, covered: Mapping[tuple[str, str], Sequence[coverage.Span]], step: int) -> DataFrame:
    """Each market's covered stretches [_s, _e) with their earliest carrier, in epoch microseconds."""
    return spark.createDataFrame(
        [
            (exchange, symbol, start, end, carrier)
            for (exchange, symbol), spans in sorted(covered.items())
            for (start, end), carrier in zip(spans, coverage.carriers(spans, step), strict=True)
        ],
        "exchange string, symbol string, _s long, _e long, _carrier long",
    )


def _flag_covered(with_previous: DataFrame, stretches: DataFrame, step: int) -> DataFrame:
    """`_covered` on each staged candle: its first missing predecessor lies inside a stretch it had to be
    filled in (a stretch the previous candle belongs to), so that interval had to be a quiet candle."""
    from pyspark.sql import functions as F

    first_missing = F.unix_micros(F.col("_previous")) + F.lit(step)
    return (
        with_previous.alias("s")
        .join(
            F.broadcast(stretches.alias("c")),
            (F.col("s.exchange") == F.col("c.exchange"))
            & (F.col("s.symbol") == F.col("c.symbol"))
            & (F.col("c._s") <= first_missing)
            & (F.col("c._e") >= first_missing + F.lit(step))
            & (F.unix_micros(F.col("s._previous")) >= F.col("c._carrier")),
            "left",
        )
        .select("s.*", F.col("c._s").isNotNull().alias("_covered"))
    )


def _gap_text(interval: str, step: int) -> Column:
    """E.g. `BTCUSDT: 2 missing (one candle every 1 minute) between <previous> and <this>`, on a candle
    more than one interval after its previous one in covered time; NULL elsewhere."""
    from pyspark.sql import functions as F

    apart = F.unix_micros(F.col("open_time")) - F.unix_micros(F.col("_previous"))
    # Whole intervals when the candles are on the grid; a fraction shows one that is not.
    missing = F.when(apart % F.lit(step) == 0, (apart / F.lit(step) - 1).cast("long").cast("string")).otherwise(
        (apart / F.lit(step) - 1).cast("decimal(20,3)").cast("string")
    )
    return F.when(
        F.col("_previous").isNotNull() & (apart > F.lit(step)) & F.col("_covered"),
        F.concat(
            F.col("symbol"),
            F.lit(": "),
            missing,
            F.lit(f" missing (one candle every {interval}) between "),
            _iso(F.col("_previous")),
            F.lit(" and "),
            _iso(F.col("open_time")),
        ),
    )


def _mismatch(values: Sequence[str]) -> Column:
    """After the full outer join with the recomputation: why a candle differs from it, NULL when it does not."""
    from pyspark.sql import functions as F

    where = F.concat(F.col("symbol"), F.lit(" "), _iso(F.col("open_time")), F.lit(": "))
    differences = _differences(values)
    return (
        F.when(F.col("_in_stage").isNull(), F.concat(where, F.lit("missing from the staged candles")))
        .when(
            F.col("_in_recompute").isNull(),
            F.concat(where, F.lit("staged, but the trades give no such candle")),
        )
        .when(differences != F.lit(""), F.concat(where, differences))
    )


def _differences(values: Sequence[str]) -> Column:
    """E.g. `close 101 (recomputed 100); volume 2 (recomputed 1)`: every value column that differs."""
    from pyspark.sql import functions as F

    def text(column: str) -> Column:
        return F.coalesce(F.col(column).cast("string"), F.lit("null"))

    return F.concat_ws(
        "; ",
        *[
            F.when(
                ~F.col(c).eqNullSafe(F.col(f"_r_{c}")),
                F.concat(F.lit(f"{c} "), text(c), F.lit(" (recomputed "), text(f"_r_{c}"), F.lit(")")),
            )
            for c in values
        ],
    )


def _iso(column: Column) -> Column:
    from pyspark.sql import functions as F

    return F.date_format(column, "yyyy-MM-dd'T'HH:mm:ss'Z'")
