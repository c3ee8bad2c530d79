"""Batch recompute of curated candles from the Parquet lake (the nightly "final word").

Run with spark-submit or plain python:

    python jobs/batch_candles.py --exchange binance --symbols BTCUSDT,ETHUSDT \
        --start 2026-11-20T00:00:00Z --end 2026-11-21T00:00:00Z --write-postgres
    python jobs/batch_candles.py --exchange simulator --start ... --end ... --output /tmp/candles
    python jobs/batch_candles.py --exchange binance --date 2026-11-20 --run-id manual --stage

Reads `<CANDLELAKE_LAKE_DIR>/trades` (only the trade_date partitions in range), dedupes, builds the
candles at the base interval, fills empty intervals, and upserts them as 'curated', writes Parquet, or
stages one whole UTC day (`--stage`, candlelake.staging) for jobs/validate_day.py to audit and the
curated load to publish. `--date D` is short for `--start D --end D+1`.
Prints a JSON summary on stdout. Exit 0 on success, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from candlelake import batch, staging
from candlelake.config import load_settings
from candlelake.lake import catalog
from candlelake.sinks.postgres_candles import upsert_candles_df
from candlelake.spark_session import build_session

log = logging.getLogger("candlelake.batch")


def _utc_time(text: str) -> datetime:
    try:
        return batch.utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date-time: {text!r}") from exc


def _utc_day(text: str) -> date:
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):  # fromisoformat also takes 20261120, 2026-W47-5
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def parse_args(argv: list[str] | None, default_interval: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Recompute curated candles from the Parquet lake.")
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--symbols", default="", help="comma-separated; all symbols when omitted")
    parser.add_argument("--start", type=_utc_time, help="ISO UTC, inclusive")
    parser.add_argument("--end", type=_utc_time, help="ISO UTC, exclusive")
    parser.add_argument("--date", type=_utc_day, help="one UTC day, YYYY-MM-DD (instead of --start/--end)")
    parser.add_argument("--interval", default=default_interval, help=f"base interval (default {default_interval!r})")
    parser.add_argument("--run-id", default="manual", help="the Airflow run, recorded with a stage")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--write-postgres", action="store_true", help="upsert into `candles` as 'curated'")
    target.add_argument("--output", type=Path, help="write the candles as Parquet to this folder (replaced)")
    target.add_argument("--stage", action="store_true", help="stage one whole UTC day for validation and the load")
    args = parser.parse_args(argv)
    if args.date is not None:
        if args.start is not None or args.end is not None:
            parser.error("give either --date or --start and --end")
        args.start = datetime.combine(args.date, datetime.min.time(), tzinfo=UTC)
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
        # The day's files from the catalog: curated manifests plus the committed bronze after them.
        curated, checkpoint = settings.curated_dir, catalog.lake_checkpoint(settings)
        trades_read = batch.read_lake_trades(
            spark,
            settings.lake_dir,
            args.exchange,
            symbols,
            args.start,
            args.end,
            curated=curated,
            checkpoint=checkpoint,
        ).count()
        candles = batch.recompute(
            spark,
            settings.lake_dir,
            args.exchange,
            symbols,
            args.start,
            args.end,
            args.interval,
            curated=curated,
            checkpoint=checkpoint,
        ).persist()
        stage = None
        if args.write_postgres:
            upsert_candles_df(candles, settings.pg_dsn(), "curated")
        elif args.stage:
            stage = staging.write_stage(candles, settings.lake_dir, args.exchange, args.start.date(), args.run_id)
        else:
            candles.write.mode("overwrite").parquet(str(args.output))
        summary = batch.summarize(candles, trades_read, started)
        spark.catalog.clearCache()
    finally:
        spark.stop()
    print(json.dumps({**summary.as_dict(), **({"stage": asdict(stage)} if stage else {})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
