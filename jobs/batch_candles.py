"""Batch recompute of curated candles from the Parquet lake (the nightly "final word").

Run with spark-submit or plain python:

    python jobs/batch_candles.py --exchange binance --symbols BTCUSDT,ETHUSDT \
        --start 2026-11-20T00:00:00Z --end 2026-11-21T00:00:00Z --write-postgres
    python jobs/batch_candles.py --exchange simulator --start ... --end ... --output /tmp/candles
    python jobs/batch_candles.py --exchange binance --date 2026-11-20 --date 2026-11-21 --run-id manual --stage

Reads `<CANDLELAKE_LAKE_DIR>/trades` (only the trade_date partitions in range), dedupes, builds the
candles at the base interval, fills empty intervals, and upserts them as 'curated', writes Parquet, or
stages whole UTC days (`--stage`, candlelake.nightly.staging; today only up to the live watermark) for
jobs/validate_day.py to audit and the curated load to publish. `--date D` is short for
`--start D --end D+1`; with `--stage` it may be repeated, so that one Spark session (one JVM start)
stages all of a nightly run's days.
Prints a JSON summary on stdout, one line per staged day. Exit 0 on success, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from candlelake.config import Settings, load_settings
from candlelake.lake import catalog
from candlelake.nightly import recompute as batch
from candlelake.nightly import staging
from candlelake.spark import job_args
from candlelake.spark.session import build_session
from candlelake.stream.postgres_candles import upsert_candles_df
from candlelake.util import utc

log = logging.getLogger("candlelake.nightly.recompute")


def _utc_time(text: str) -> datetime:
    try:
        return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date-time: {text!r}") from exc


def parse_args(argv: list[str] | None, default_interval: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Recompute curated candles from the Parquet lake.")
    parser.add_argument("--exchange", required=True, type=job_args.exchange_name)
    parser.add_argument("--symbols", default="", help="comma-separated; all symbols when omitted")
    parser.add_argument("--start", type=_utc_time, help="ISO UTC, inclusive")
    parser.add_argument("--end", type=_utc_time, help="ISO UTC, exclusive")
    parser.add_argument(
        "--date",
        type=job_args.utc_day,
        action="append",
        dest="dates",
        help="a UTC day, YYYY-MM-DD (instead of --start/--end); repeat it with --stage for several days",
    )
    parser.add_argument("--interval", default=default_interval, help=f"base interval (default {default_interval!r})")
    parser.add_argument("--run-id", default="manual", help="the Airflow run, recorded with a stage")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--write-postgres", action="store_true", help="upsert into `candles` as 'curated'")
    target.add_argument("--output", type=Path, help="write the candles as Parquet to this folder (replaced)")
    target.add_argument("--stage", action="store_true", help="stage one whole UTC day for validation and the load")
    args = parser.parse_args(argv)
    if args.dates:
        if args.start is not None or args.end is not None:
            parser.error("give either --date or --start and --end")
        args.dates = sorted(set(args.dates))
        if len(args.dates) > 1 and not args.stage:
            parser.error("several --date values only with --stage; use --start and --end for a range")
        args.start = datetime.combine(args.dates[0], datetime.min.time(), tzinfo=UTC)
        args.end = args.start + timedelta(days=1)
    elif args.start is None or args.end is None:
        parser.error("give --date, or both --start and --end")
    if args.end <= args.start:
        parser.error("--end must be after --start")
    if args.stage:
        # A stage is what the audit compares with its own recomputation of the whole day.
        midnight = datetime.combine(args.start.date(), datetime.min.time(), tzinfo=UTC)
        if args.start != midnight or args.end - args.start != timedelta(days=1):
            parser.error("--stage stages one whole UTC day: use --date (or --start at 00:00Z and --end a day later)")
        if args.symbols.strip():
            parser.error("--stage stages every symbol of the exchange's day: omit --symbols")
        args.dates = args.dates or [args.start.date()]
    return args


def _recompute(
    spark: SparkSession, settings: Settings, args: argparse.Namespace, start: datetime, end: datetime
) -> tuple[DataFrame, int, float]:
    """The candles of [start, end) from the catalog's files (persisted), the trades read, the start time."""
    started = time.monotonic()
    # The day's files from the catalog: curated manifests plus the committed bronze after them.
    curated, checkpoint = settings.curated_dir, catalog.lake_checkpoint(settings)
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()] or None
    lake = settings.lake_dir
    trades_read = batch.read_lake_trades(
        spark, lake, args.exchange, symbols, start, end, curated=curated, checkpoint=checkpoint
    ).count()
    covered = batch.load_coverage(settings.pg_dsn(), args.exchange, start, end)
    candles = batch.recompute(
        spark,
        lake,
        args.exchange,
        symbols,
        start,
        end,
        args.interval,
        covered=covered,
        curated=curated,
        checkpoint=checkpoint,
    ).persist()
    return candles, trades_read, started


def main(argv: list[str] | None = None) -> int:
    """Recompute, write, print the summary; return the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    settings = load_settings()
    args = parse_args(argv, settings.candle_interval)
    spark = build_session(settings, "candlelake-batch")
    spark.sparkContext.setLogLevel("WARN")
    lines: list[Mapping[str, object]] = []
    try:
        if args.stage:
            for day in args.dates:
                start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
                # A day not over yet is staged only up to the live watermark (batch.settled_end).
                end = batch.settled_end(
                    start + timedelta(days=1), datetime.now(UTC), settings.watermark_delay, args.interval
                )
                if end <= start:
                    log.warning("%s %s: nothing of the day is behind the watermark yet; not staged", args.exchange, day)
                    continue
                candles, trades_read, started = _recompute(spark, settings, args, start, end)
                stage = staging.write_stage(candles, settings.lake_dir, args.exchange, day, args.run_id, until=end)
                summary = batch.summarize(candles, trades_read, started)
                lines.append({**summary.as_dict(), "stage": asdict(stage)})
                log.info("%s %s: %d candles staged (%s)", args.exchange, day, stage.rows, stage.fingerprint)
                candles.unpersist()
        else:
            candles, trades_read, started = _recompute(spark, settings, args, args.start, args.end)
            if args.write_postgres:
                upsert_candles_df(candles, settings.pg_dsn(), "curated")
            else:
                candles.write.mode("overwrite").parquet(str(args.output))
            lines.append(batch.summarize(candles, trades_read, started).as_dict())
        spark.catalog.clearCache()
    finally:
        spark.stop()
    for line in lines:
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
