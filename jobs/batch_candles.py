"""Batch recompute of curated candles from the Parquet lake (the nightly "final word").

Run with spark-submit or plain python:

    python jobs/batch_candles.py --exchange binance --symbols BTCUSDT,ETHUSDT \
        --start 2026-11-20T00:00:00Z --end 2026-11-21T00:00:00Z --write-postgres
    python jobs/batch_candles.py --exchange simulator --start ... --end ... --output /tmp/candles

Reads `<CANDLELAKE_LAKE_DIR>/trades` (only the trade_date partitions in range), dedupes, builds the
candles at the base interval, fills empty intervals, and upserts them as 'curated' or writes Parquet.
Prints a JSON summary on stdout. Exit 0 on success, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime
from pathlib import Path

from candlelake import batch
from candlelake.config import load_settings
from candlelake.sinks.postgres_candles import upsert_candles_df
from candlelake.spark_session import build_session

log = logging.getLogger("candlelake.batch")


def _utc_time(text: str) -> datetime:
    try:
        return batch.utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date-time: {text!r}") from exc


def parse_args(argv: list[str] | None, default_interval: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Recompute curated candles from the Parquet lake.")
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--symbols", default="", help="comma-separated; all symbols when omitted")
    parser.add_argument("--start", required=True, type=_utc_time, help="ISO UTC, inclusive")
    parser.add_argument("--end", required=True, type=_utc_time, help="ISO UTC, exclusive")
    parser.add_argument("--interval", default=default_interval, help=f"base interval (default {default_interval!r})")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--write-postgres", action="store_true", help="upsert into `candles` as 'curated'")
    target.add_argument("--output", type=Path, help="write the candles as Parquet to this folder (replaced)")
    args = parser.parse_args(argv)
    if args.end <= args.start:
        parser.error("--end must be after --start")
    return args


def main(argv: list[str] | None = None) -> int:
    """Recompute, write, print the summary; return the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    settings = load_settings()
    args = parse_args(argv, settings.candle_interval)
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()] or None
    spark = build_session(settings, "candlelake-batch")
    spark.sparkContext.setLogLevel("WARN")
    try:
        started = time.monotonic()
        trades_read = batch.read_lake_trades(
            spark, settings.lake_dir, args.exchange, symbols, args.start, args.end
        ).count()
        candles = batch.recompute(
            spark, settings.lake_dir, args.exchange, symbols, args.start, args.end, args.interval
        ).persist()
        if args.write_postgres:
            upsert_candles_df(candles, settings.pg_dsn(), "curated")
        else:
            candles.write.mode("overwrite").parquet(str(args.output))
        summary = batch.summarize(candles, trades_read, started)
        spark.catalog.clearCache()
    finally:
        spark.stop()
    print(json.dumps(summary.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
