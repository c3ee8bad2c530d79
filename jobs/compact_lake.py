"""Compact one UTC day of the Parquet lake's bronze into the curated area (candlelake.nightly.compaction).

Run with spark-submit (the `lake_compaction` DAG does) or plain python:

    spark-submit jobs/compact_lake.py --date 2026-11-20 [--date ...] [--exchange binance]... [--run-id R]
    python jobs/compact_lake.py --date 2026-11-20

Without --exchange, every exchange with a bronze partition for the day is compacted. Several --date
compact several days in one job (one JVM start). Each compaction
is recorded in `lake_compactions`. Spark starts only when some exchange has something new to write.
Prints one JSON summary line on stdout. Exit 0 when every compaction switched or was skipped, 1 when
one failed (a check, the database, a busy lock: the message says which), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from candlelake.config import ConfigError, Settings, load_settings
from candlelake.lake import catalog
from candlelake.nightly import compaction
from candlelake.spark import job_args

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("candlelake.compact")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Compact one UTC day of the lake's bronze into the curated area.")
    parser.add_argument(
        "--date",
        required=True,
        action="append",
        type=job_args.utc_day,
        help="the UTC day to compact, YYYY-MM-DD (repeatable)",
    )
    parser.add_argument(
        "--exchange",
        action="append",
        type=job_args.exchange_name,
        default=[],
        help="repeatable; default: every exchange",
    )
    parser.add_argument("--run-id", default="", help="recorded in lake_compactions (default: manual__<now>)")
    parser.add_argument(
        "--lock-wait", type=float, default=0.0, metavar="SECONDS", help="wait this long for a running compaction"
    )
    parser.add_argument(
        "--adopt-unrecorded",
        action="store_true",
        help="first write batch records for committed bronze files of a lake written before batch records",
    )
    args = parser.parse_args(argv)
    args.date = sorted(set(args.date))
    if args.lock_wait < 0:
        parser.error("--lock-wait must be at least 0")
    return args


def _session_factory(settings: Settings) -> tuple[list[SparkSession], Callable[[], SparkSession]]:
    """A builder of the job's one SparkSession, and the list that holds it once built (to stop it)."""
    started: list[SparkSession] = []

    def build() -> SparkSession:
        if not started:
            from candlelake.spark.session import build_session

            started.append(build_session(settings, "candlelake-compact-lake"))
            started[0].sparkContext.setLogLevel("WARN")
        return started[0]

    return started, build


def main(argv: list[str] | None = None) -> int:
    """Compact the day's exchanges, print the summary; return the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"compact_lake: {exc}", file=sys.stderr)
        return 2
    run_id = args.run_id or f"manual__{datetime.now(UTC).isoformat(timespec='seconds')}"
    work = [
        (exchange, day)
        for day in args.date
        for exchange in (args.exchange or catalog.exchanges_with_bronze(settings.lake_dir, day))
    ]
    journal = compaction.PgJournal(settings.pg_dsn())
    try:
        journal.check()
    except Exception as exc:  # psycopg2's errors: the record is part of the job, so nothing starts
        print(f"compact_lake: cannot record in PostgreSQL ({str(exc).strip()}); is it running?", file=sys.stderr)
        return 1
    if args.adopt_unrecorded:
        commits = catalog.read_commits(catalog.lake_checkpoint(settings))
        for exchange, day in work:
            adopted = catalog.adopt_unrecorded(catalog.partition_dir(settings.lake_dir, exchange, day), commits)
            log.info("%s %s: wrote records for %d unrecorded batches", exchange, day, len(adopted))
    started, build = _session_factory(settings)
    results = []
    try:
        for exchange, day in work:
            try:
                result = compaction.compact_day(
                    build, settings, exchange, day, run_id, journal=journal, lock_wait_s=args.lock_wait
                )
            except Exception as exc:  # the record could not be written (the database went away)
                log.error("%s %s: %s: %s", exchange, day, type(exc).__name__, exc)
                result = compaction.CompactionResult(
                    exchange, day.isoformat(), run_id, "failed", note=f"{type(exc).__name__}: {exc}"
                )
            results.append(result)
    finally:
        for spark in started:
            spark.stop()
    ok = all(r.status in ("switched", "skipped") for r in results)
    summary: dict[str, object] = {
        "dates": [day.isoformat() for day in args.date],
        "run_id": run_id,
        "ok": ok,
        "compactions": [r.as_dict() for r in results],
    }
    if not work:
        summary["note"] = "no exchange has bronze for these days"
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
