"""Audit an exchange's UTC days before they are published: Great Expectations on trades and staged candles.

Run with spark-submit or plain python, after `jobs/batch_candles.py --stage` staged the day:

    python jobs/validate_day.py --exchange binance --date 2026-11-20 [--date 2026-11-21 ...] --run-id manual

Repeat `--date` to validate several days in one Spark session (one JVM start); each day is validated
and recorded on its own. Reads each day's trades as the batch does (curated files plus late bronze), the staged candles
(`<lake>/staging/candles/...`) and a fresh recomputation of them from the same trades, and runs the
trades and candles suites (candlelake.nightly.quality). Every result is kept under CANDLELAKE_REPORTS_DIR,
the Data Docs site there is rebuilt (data_docs/index.html) and `quality_runs` gets one row per suite.

Prints one JSON summary line per day on stdout. Exit 0 when both suites pass on every day; 1 when an
expectation failed on some day (each failed expectation in plain words on stderr: that day must not be
loaded); 2 on bad arguments; 3 when a validation could not run (e.g. PostgreSQL down: nothing was
recorded for that day). The days after a failed one are still validated; after a broken one they are
not (whatever broke it would break them too).
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, date, datetime, time, timedelta

from pyspark.sql import SparkSession

from candlelake.config import ConfigError, Settings, load_settings
from candlelake.lake import catalog
from candlelake.nightly import recompute as batch
from candlelake.nightly import staging
from candlelake.nightly.quality.context import import_in_background
from candlelake.nightly.quality.outcomes import summary_json
from candlelake.nightly.quality.validate import validate_day
from candlelake.spark import job_args, transforms
from candlelake.spark.session import build_session

log = logging.getLogger("candlelake.validate_day")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BROKEN = 0, 1, 2, 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Validate an exchange's UTC days of trades and staged candles.")
    parser.add_argument("--exchange", required=True, type=job_args.exchange_name)
    parser.add_argument(
        "--date",
        required=True,
        type=job_args.utc_day,
        action="append",
        dest="dates",
        help="a UTC day, YYYY-MM-DD (repeatable)",
    )
    parser.add_argument("--run-id", default="manual", help="the Airflow run (recorded with the results)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Validate, record, print the summary; return the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage and the error
        return EXIT_USAGE if exc.code else EXIT_OK
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"validate_day: {exc}", file=sys.stderr)
        return EXIT_USAGE
    import_in_background()  # overlaps Great Expectations' 15 s import with the JVM's start and the reads
    spark = build_session(settings, "candlelake-validate")
    spark.sparkContext.setLogLevel("WARN")
    code = EXIT_OK
    try:
        for day in sorted(set(args.dates)):
            day_code = _validate(spark, settings, args.exchange, day, args.run_id)
            code = max(code, day_code)
            if day_code == EXIT_BROKEN:
                break
    finally:
        spark.stop()
    return code


def _validate(spark: SparkSession, settings: Settings, exchange: str, day: date, run_id: str) -> int:
    """Validate and record one day; print its summary (stdout) and failures (stderr); its exit code."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    stage = staging.read_stage_info(settings.lake_dir, exchange, day)
    # Recompute what was staged: the whole day, or the part of today that had settled at staging time.
    end = (
        stage.end()
        if stage
        else batch.settled_end(
            start + timedelta(days=1), datetime.now(UTC), settings.watermark_delay, settings.candle_interval
        )
    )
    # The same trades the nightly recompute reads: the curated files and the bronze batches after them.
    curated, checkpoint = settings.curated_dir, catalog.lake_checkpoint(settings)
    lake = settings.lake_dir
    try:
        trades = batch.read_lake_trades(spark, lake, exchange, None, start, end, curated=curated, checkpoint=checkpoint)
        # The coverage as it stands now: a backfill since staging makes the stage stale, and the audit says so.
        covered = batch.load_coverage(settings.pg_dsn(), exchange, start, end)
        recomputed = batch.recompute(
            spark,
            lake,
            exchange,
            None,
            start,
            end,
            settings.candle_interval,
            covered=covered,
            curated=curated,
            checkpoint=checkpoint,
        )
        staged = None
        if stage is not None:
            files = [str(p) for p in staging.staged_files(lake, exchange, day)]
            reader = spark.read.schema(transforms.CURATED_SCHEMA)
            staged = reader.parquet(*files) if files else spark.createDataFrame([], transforms.CURATED_SCHEMA)
        outcome = validate_day(
            settings,
            exchange,
            day,
            run_id,
            trades=trades,
            staged=staged,
            recomputed=recomputed,
            stage=stage,
            interval=settings.candle_interval,
            covered=covered,
        )
    except Exception as exc:
        import psycopg2

        # Exit 3, never 1: 1 means "the data failed an expectation", and nothing was recorded here.
        if not isinstance(exc, psycopg2.OperationalError | OSError | catalog.CatalogError):
            log.exception("%s %s: the validation broke", exchange, day)
        print(f"validate_day: {exchange} {day}: could not validate: {exc}".strip(), file=sys.stderr)
        return EXIT_BROKEN
    finally:
        spark.catalog.clearCache()  # the day's cached trades; the next day reads its own
    print(summary_json(outcome), flush=True)
    if outcome.success:
        log.info("%s %s: every expectation passed; Data Docs: %s", exchange, day, outcome.docs_index)
        return EXIT_OK
    lines = [f"{exchange} {day}: validation failed (the staged candles must not be loaded):"]
    lines += [f"  - {line}" for line in outcome.failure_lines()]
    lines += [f"  Data Docs: {s.docs_path or outcome.docs_index}" for s in outcome.suites if not s.success]
    print("\n".join(lines), file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
