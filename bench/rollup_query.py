"""Measure rollup query latency (candles at any bucket) over a year of 1-minute candles for one symbol.

    .venv/bin/python bench/rollup_query.py [--runs 30] [--keep]

Loads 525,600 synthetic 1m candles (one year, every minute) for one symbol with COPY under a
bench-only exchange name (the rollup triggers maintain candle_rollups as they would for the stream),
records the year's coverage as a live feed would (one session a day, rotated with an overlap, and a
30-second loss every week, so every query judges its buckets against a multirange of 54 ranges),
vacuums and analyzes both tables as autovacuum would have, then runs every lookback/bucket combination
below, each returning at most 5,000 candles, `--runs` times through `candlelake.serve.rollups.fetch_rollup` on
the read-only role, as the CLI and dashboard do. It also times the cost the triggers add to writes: the
COPY itself, and the stream's upsert of one minute and of one hour of candles, against a trigger-less
copy of the table. Prints Markdown tables, writes the figures as JSON to bench/results/, and deletes its
rows (unless --keep).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg2
from psycopg2.extras import execute_values

from candlelake import coverage
from candlelake.config import load_settings
from candlelake.serve.rollups import Bucket, fetch_rollup, parse_bucket
from candlelake.stream.postgres_candles import TEMPLATE, UPSERT_SQL, upsert_candles
from candlelake.util import to_us

ROOT = Path(__file__).resolve().parents[1]
SYMBOL = "BENCHUSDT"
START = datetime(2025, 1, 1, tzinfo=UTC)
MINUTES = 525_600
END = START + timedelta(minutes=MINUTES)
# (label, lookback, bucket): each returns at most 5,000 candles.
COMBOS: tuple[tuple[str, timedelta, str], ...] = (
    ("3d", timedelta(days=3), "1m"),
    ("6d", timedelta(days=6), "2m"),
    ("24d", timedelta(days=24), "7m"),
    ("45d", timedelta(days=45), "13m"),
    ("2w", timedelta(weeks=2), "5m"),
    ("1M", timedelta(days=30), "15m"),
    ("3M", timedelta(days=90), "45m"),
    ("6M", timedelta(days=182), "1h"),
    ("1y", timedelta(days=365), "2h"),
    ("1y", timedelta(days=365), "4h"),
    ("1y", timedelta(days=365), "1d"),
    ("1y", timedelta(days=365), "1w"),
)
COPY_COLUMNS = (
    "exchange, symbol, open_time, close_time, open, high, low, close, volume, quote_volume, trades, "
    "taker_buy_volume, taker_buy_quote_volume, vwap, state"
)


def year_of_candles(exchange: str) -> io.StringIO:
    """A seeded random walk, one candle per minute, as COPY text."""
    rng = random.Random(2025)
    out = io.StringIO()
    price = 60_000_00  # in cents
    for i in range(MINUTES):
        t = START + timedelta(minutes=i)
        o = price
        moves = [price + rng.randint(-3000, 3000) for _ in range(3)]
        price = moves[-1]
        h, low = max(o, *moves), min(o, *moves)
        vol = Decimal(rng.randint(1, 2_000_000)) / 100_000
        p = Decimal(price) / 100
        quote = vol * p
        out.write(
            f"{exchange}\t{SYMBOL}\t{t.isoformat()}\t{(t + timedelta(seconds=59.999)).isoformat()}\t"
            f"{Decimal(o) / 100}\t{Decimal(h) / 100}\t{Decimal(low) / 100}\t{p}\t{vol}\t{quote}\t"
            f"{rng.randint(1, 500)}\t{vol / 2}\t{quote / 2}\t{p}\tcurated\n"
        )
    out.seek(0)
    return out


def year_of_coverage(exchange: str) -> list[coverage.Interval]:
    """Daily live sessions, each overlapping the next by a minute, but for a 30 s loss every Wednesday noon."""
    sessions = []
    for day in range(MINUTES // 1440):
        start = START + timedelta(days=day)
        end = start + timedelta(days=1, minutes=1)
        if day % 7 == 0:  # 2025-01-01 is a Wednesday: the session is lost at noon, a new one starts 30 s on
            noon = start + timedelta(hours=12)
            sessions.append((start, noon))
            sessions.append((noon + timedelta(seconds=30), end))
        else:
            sessions.append((start, end))
    return [coverage.Interval(exchange, SYMBOL, "bench-live", "live", to_us(a), to_us(b)) for a, b in sessions]


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    q = statistics.quantiles(ms, n=20, method="inclusive")
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(q[18], 2), "max_ms": round(ms[-1], 2)}


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="leave the bench rows in place")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error("--runs must be at least 2 (percentiles need two samples)")
    settings = load_settings()
    exchange = f"benchrollup{uuid.uuid4().hex[:6]}"
    writer = psycopg2.connect(settings.pg_dsn(), application_name="candlelake-bench")
    reader = psycopg2.connect(settings.pg_reader_dsn, application_name="candlelake-bench")
    reader.autocommit = True
    results: dict[str, object] = {"exchange": exchange, "base_rows": MINUTES, "runs": args.runs}
    try:
        data = year_of_candles(exchange)
        t0 = time.perf_counter()
        with writer, writer.cursor() as cur:
            cur.copy_expert(f"COPY candles ({COPY_COLUMNS}) FROM STDIN", data)
        copy_s = time.perf_counter() - t0
        sessions = year_of_coverage(exchange)
        with writer, writer.cursor() as cur:
            coverage.record(cur, sessions)
        results["coverage_rows"] = len(sessions)
        data.seek(0)
        with writer, writer.cursor() as cur:
            cur.execute("CREATE TEMP TABLE candles_plain (LIKE candles INCLUDING ALL)")
            t0 = time.perf_counter()
            cur.copy_expert(f"COPY candles_plain ({COPY_COLUMNS}) FROM STDIN", data)
            plain_copy_s = time.perf_counter() - t0
        # A year of candles in service has long been vacuumed (visibility map set, statistics fresh):
        # measure that state, not the minutes after a bulk load, and keep autovacuum out of the runs.
        writer.autocommit = True
        with writer.cursor() as cur:
            cur.execute("VACUUM (ANALYZE) candles, candle_rollups")
        writer.autocommit = False
        results["copy_s"] = {"with_triggers": round(copy_s, 2), "without_triggers": round(plain_copy_s, 2)}

        queries = []
        for label, lookback, text in COMBOS:
            bucket = parse_bucket(text)
            start = END - lookback

            def query(bucket: Bucket = bucket, start: datetime = start) -> list[tuple[object, ...]]:
                return fetch_rollup(reader, exchange, SYMBOL, bucket, start, END)

            rows = query()  # warm the cache, and check the answer's size
            assert 0 < len(rows) <= 5000, (label, text, len(rows))
            partial = sum(r[-1] == "partial" for r in rows)
            queries.append(
                {
                    "lookback": label,
                    "bucket": text,
                    "rows": len(rows),
                    "partial": partial,
                    **percentiles(timed(query, args.runs)),
                }
            )
        results["queries"] = queries

        # What the triggers add to the stream's upsert: re-upsert existing minutes (the common case:
        # the stream rewrites the current candle), into candles and into the trigger-less copy.
        with writer.cursor() as cur:
            cur.execute(
                "SELECT exchange, symbol, open_time, close_time, open, high, low, close, volume, quote_volume, "
                "trades, taker_buy_volume, taker_buy_quote_volume, vwap, first_trade_id, last_trade_id "
                "FROM candles WHERE exchange = %s AND open_time >= %s ORDER BY open_time",
                (exchange, END - timedelta(hours=1)),
            )
            last_hour = cur.fetchall()
        writer.commit()
        plain_sql = UPSERT_SQL.replace("INTO candles ", "INTO candles_plain AS candles ", 1)

        def plain(rows: list[tuple[object, ...]]) -> None:
            with writer, writer.cursor() as cur:
                execute_values(cur, plain_sql, [(*r, "curated") for r in rows], template=TEMPLATE)

        upserts = []
        for label, rows in (("1 minute", last_hour[-1:]), ("1 hour (60 rows)", last_hour)):
            upserts.append(
                {
                    "upsert": label,
                    "with_triggers": percentiles(
                        timed(lambda rows=rows: upsert_candles(writer, rows, "curated"), args.runs)
                    ),
                    "without_triggers": percentiles(timed(lambda rows=rows: plain(rows), args.runs)),
                }
            )
        results["upserts"] = upserts
    finally:
        if not args.keep:
            writer.rollback()
            t0 = time.perf_counter()
            with writer, writer.cursor() as cur:
                cur.execute("DELETE FROM candles WHERE exchange = %s", (exchange,))
                cur.execute("DELETE FROM coverage WHERE exchange = %s", (exchange,))
            results["delete_s"] = round(time.perf_counter() - t0, 2)
        writer.close()
        reader.close()

    print(f"\n{MINUTES:,} 1m candles for one symbol; {args.runs} runs per combination\n")
    print("| lookback | bucket | candles | partial | p50 ms | p95 ms | max ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for q in queries:
        print(
            f"| {q['lookback']} | {q['bucket']} | {q['rows']} | {q['partial']} | {q['p50_ms']} | {q['p95_ms']} "
            f"| {q['max_ms']} |"
        )
    print("\n| stream upsert | with triggers p50 / p95 ms | without p50 / p95 ms |")
    print("|---|---:|---:|")
    for u in upserts:
        w, p = u["with_triggers"], u["without_triggers"]
        print(f"| {u['upsert']} | {w['p50_ms']} / {w['p95_ms']} | {p['p50_ms']} / {p['p95_ms']} |")
    copy_with, copy_without = round(copy_s, 2), round(plain_copy_s, 2)
    print(f"\nCOPY of {MINUTES:,} rows: {copy_with} s with the rollup triggers, {copy_without} s without")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = ROOT / "bench" / "results" / f"rollup_query-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
