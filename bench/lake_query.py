"""DuckDB over the lake: a day of N trades (default 30 million), one market's day of 1m candles, its last
hour of trades and one minute's trades, p50/p95 over --runs.

    .venv/bin/python bench/lake_query.py [--trades 30000000] [--symbols 20] [--runs 20] [--keep DIR]

The day is written by DuckDB itself as compaction lays it out: one exchange partition, files sorted by
symbol and time (a few of about 128 MB, zstd), trade ids increasing, prices with 2 decimals. The
queries run through candlelake.serve.lake_trades on its read-only connection (2 threads), a fresh
connection per query as the dashboard opens one per read, so every figure includes reading the files'
footers, and each ends in a pandas frame with exact Decimals, as the dashboard takes it. Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from candlelake.serve.lake_trades import LakeTrades, Partition  # noqa: E402

DAY = date(2026, 11, 20)
EXCHANGE = "bench"


def write_day(folder: Path, trades: int, symbols: int) -> list[Path]:
    per_market = trades // symbols
    step_us = 86_400_000_000 // per_market
    start_us = int(datetime.combine(DAY, datetime.min.time(), UTC).timestamp()) * 1_000_000
    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"threads": 2, "memory_limit": "4GB"})
    con.execute(f"""
        COPY (
            SELECT 'S' || lpad(CAST(i // {per_market} AS VARCHAR), 3, '0') AS symbol,
                   i AS trade_id,
                   CAST(100 + (hash(i) % 10000) / 100 AS DECIMAL(28,10)) AS price,
                   CAST(1 + hash(i * 7) % 1000 / 1000 AS DECIMAL(28,10)) AS qty,
                   make_timestamptz({start_us} + (i % {per_market}) * {step_us}) AS trade_time,
                   hash(i) % 2 = 0 AS is_buyer_maker,
                   make_timestamptz({start_us} + (i % {per_market}) * {step_us} + 50000) AS ingest_time,
                   'bench' AS source
              FROM range({per_market * symbols}) AS r(i)
        ) TO '{folder}' (FORMAT parquet, COMPRESSION zstd, FILE_SIZE_BYTES '128MB', ROW_GROUP_SIZE 122880)
    """)
    con.close()
    return sorted(folder.glob("*.parquet"))


def timed(runs: int, work: Callable[[], int]) -> dict[str, float]:
    times, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = work()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
        "rows": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=30_000_000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="write the day here and keep it (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lake-query-") as scratch:
        root = args.keep or Path(scratch)
        folder = root / "trades" / f"exchange={EXCHANGE}" / f"trade_date={DAY.isoformat()}"
        started = time.perf_counter()
        files = sorted(folder.glob("*.parquet")) or write_day(folder, args.trades, args.symbols)
        written_s = time.perf_counter() - started
        day_start = datetime.combine(DAY, datetime.min.time(), UTC)
        market = f"S{args.symbols // 2:03d}"
        last_hour = day_start + timedelta(hours=23)
        results: dict[str, dict[str, dict[str, float]]] = {}
        # The same files read as a compacted day (each trade once: no dedupe) and as the stream's bronze
        # (copies possible: every read deduplicates).
        for layout, deduplicated in (("compacted", True), ("bronze", False)):
            parts = [Partition(EXCHANGE, DAY, tuple(files), deduplicated=deduplicated)]

            def candles(parts: list[Partition] = parts) -> int:
                with LakeTrades(parts) as lake:
                    return len(lake.minute_candles(EXCHANGE, market, day_start, day_start + timedelta(days=1)).frame())

            def hour(parts: list[Partition] = parts) -> int:
                with LakeTrades(parts) as lake:
                    return len(lake.between(EXCHANGE, market, last_hour, last_hour + timedelta(hours=1)).frame())

            def minute(parts: list[Partition] = parts) -> int:
                start = day_start + timedelta(hours=12, minutes=34)
                with LakeTrades(parts) as lake:
                    return len(lake.between(EXCHANGE, market, start, start + timedelta(minutes=1)).frame())

            def tape(parts: list[Partition] = parts) -> int:
                with LakeTrades(parts) as lake:
                    return len(lake.newest(EXCHANGE, market, day_start, day_start + timedelta(days=1), 50).frame())

            results[layout] = {
                "one market's day of 1m candles": timed(args.runs, candles),
                "one market's last hour of trades": timed(args.runs, hour),
                "one minute's trades (a candle's)": timed(args.runs, minute),
                "the newest 50 trades of a day (the tape)": timed(args.runs, tape),
            }
        size = sum(f.stat().st_size for f in files)
    out = {
        "trades": args.trades,
        "symbols": args.symbols,
        "files": len(files),
        "bytes": size,
        "write_s": written_s,
        "duckdb": duckdb.__version__,
        "queries": results,
    }
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    path = ROOT / "bench" / "results" / f"lake_query-{stamp}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"\n{args.trades:,} trades of {args.symbols} markets in {len(files)} files ({size / 2**20:,.0f} MiB)\n")
    print("| query | rows | compacted p50 / p95 ms | bronze (deduplicated on read) p50 / p95 ms |")
    print("|---|---:|---:|---:|")
    for name, r in results["compacted"].items():
        b = results["bronze"][name]
        cells = [f"{x['p50_ms']:.0f} / {x['p95_ms']:.0f}" for x in (r, b)]
        print(f"| {name} | {r['rows']:,} | {cells[0]} | {cells[1]} |")
    print(f"\nwrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
