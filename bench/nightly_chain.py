"""Measure the nightly chain for one UTC day: compaction, recompute, validation, curated load.

    .venv/bin/python bench/nightly_chain.py --trades 1000000 4000000

For each N: N simulator trades over one day (bench/batch_recompute.py's generator) are written as the
streaming job would write them, one small Parquet file per lake micro-batch with its batch record: at
1,000 trades/s and a 10 s lake trigger a day is 8,640 files of 10,000 trades, so N trades make
N / 10,000 files. The lake is a temporary folder (no checkpoint: every recorded batch counts as
committed); PostgreSQL is the platform's (`candlelake up --only postgres`), under an exchange name of
its own that is deleted afterwards. Then each step runs as the DAGs run it, as its own process:

1. `jobs/compact_lake.py --date D --exchange E`          (lake_compaction)
2. `jobs/batch_candles.py --date D --exchange E --stage`  (data_quality: write)
3. `jobs/validate_day.py --date D --exchange E`           (data_quality: audit)
4. `candlelake.nightly.curated_load.load_day`                      (load_curated_candles: publish)

Reports each step's wall and CPU seconds and the chain's total, and the linear extrapolation to a day
at 1,000 trades/s (86.4 million) from the two largest sizes. Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow.parquet as pq

from candlelake import coverage
from candlelake.config import load_settings
from candlelake.lake import catalog
from candlelake.util import to_us

ROOT = Path(__file__).resolve().parents[1]
TRADES_PER_FILE = 10_000  # a 10 s lake batch at 1,000 trades/s
FULL_DAY = 86_400_000


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("batch_recompute", ROOT / "bench" / "batch_recompute.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_bronze(lake: Path, exchange: str, n: int) -> tuple[str, int]:
    """N trades of one day as the stream writes them: one file and one batch record per micro-batch."""
    gen = _generator()
    block = gen.simulated_block(min(n, gen.BLOCK), rate=n / 86_400)
    span_us = int(block["trade_time"].to_numpy()[-1]) - int(gen.DAY_START.timestamp()) * 1_000_000 + 1
    rows = gen.lake_rows(block, 0, span_us)
    copy = 1
    while len(rows) < n:  # repeat the simulated block (shifted ids and times) up to N trades
        from pyarrow import concat_tables

        rows = concat_tables([rows, gen.lake_rows(block, copy, span_us)])
        copy += 1
    rows = rows.slice(0, n)
    day = rows["trade_date"][0].as_py()
    partition = lake / "trades" / f"exchange={exchange}" / f"trade_date={day.isoformat()}"
    partition.mkdir(parents=True, exist_ok=True)
    body = rows.drop_columns(["exchange", "trade_date"])
    for batch_id, start in enumerate(range(0, n, TRADES_PER_FILE)):
        path = partition / f"batch-{batch_id:012d}-0000.parquet"
        pq.write_table(body.slice(start, TRADES_PER_FILE), path)
        catalog.write_batch_record(partition, batch_id, [path])
    return day.isoformat(), (n + TRADES_PER_FILE - 1) // TRADES_PER_FILE


def run_step(name: str, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=str(ROOT))
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"  {name}: {wall:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr)
    return {"step": name, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "stdout_tail": result.stdout[-400:]}


def measure(n: int) -> dict[str, Any]:
    settings = load_settings()
    exchange = f"bench{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="candlelake-nightly-") as tmp:
        lake = Path(tmp) / "lake"
        print(f"{n:,} trades: writing bronze", file=sys.stderr)
        day, files = write_bronze(lake, exchange, n)
        # The simulator saw the whole day: each market covered, as its producer records it.
        gen = _generator()
        seen = (to_us(gen.DAY_START), to_us(gen.DAY_START + timedelta(days=1)))
        coverage.record_dsn(
            settings.pg_dsn(), [coverage.Interval(exchange, s, "simulator", "simulator", *seen) for s in gen.SYMBOLS]
        )
        env = {
            **os.environ,
            "CANDLELAKE_LAKE_DIR": str(lake),
            "CANDLELAKE_CURATED_DIR": str(lake / "curated"),
            "CANDLELAKE_CHECKPOINT_DIR": str(Path(tmp) / "checkpoints"),
            "CANDLELAKE_REPORTS_DIR": str(Path(tmp) / "reports"),
            # What the DAGs give each Spark step (driver_memory="2g" in dags/).
            "CANDLELAKE_SPARK_DRIVER_MEMORY": "2g",
        }
        run_id = f"bench-{n}"
        common = ["--exchange", exchange, "--date", day, "--run-id", run_id]
        py = sys.executable
        steps = [
            run_step("compaction", [py, "jobs/compact_lake.py", *common], env),
            run_step("recompute", [py, "jobs/batch_candles.py", *common, "--stage"], env),
            run_step("validation", [py, "jobs/validate_day.py", *common], env),
            run_step(
                "load",
                [
                    py,
                    "-c",
                    "import sys; from datetime import date; from candlelake.config import load_settings; "
                    "from candlelake.nightly.curated_load import load_day; "
                    "day = date.fromisoformat(sys.argv[2]); "
                    "print(load_day(load_settings(), sys.argv[1], day, sys.argv[3]).text())",
                    exchange,
                    day,
                    run_id,
                ],
                env,
            ),
        ]
    _cleanup(settings.pg_dsn(), exchange)
    total = sum(s["wall_s"] for s in steps)
    print(f"  chain: {total:.1f} s for {n:,} trades in {files:,} files", file=sys.stderr)
    return {"trades": n, "files": files, "steps": steps, "total_s": round(total, 1)}


def _cleanup(dsn: str, exchange: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for table in ("candles", "curated_loads", "quality_runs", "lake_compactions", "coverage"):
            cur.execute(f"DELETE FROM {table} WHERE exchange = %s", (exchange,))  # table names are constants
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, nargs="+", default=[1_000_000, 4_000_000])
    args = parser.parse_args()
    results = [measure(n) for n in sorted(args.trades)]
    extrapolated = None
    if len(results) >= 2:
        a, b = results[-2], results[-1]
        per_trade = (b["total_s"] - a["total_s"]) / (b["trades"] - a["trades"])
        extrapolated = round(a["total_s"] + per_trade * (FULL_DAY * 1.0 - a["trades"]), 0)
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = {
        "when": when,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
        "extrapolated_86_4m_s": extrapolated,
    }
    out = ROOT / "bench" / "results" / f"nightly_chain-{when}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print("| trades | files | compaction s | recompute s | validation s | load s | chain s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        s = {x["step"]: x["wall_s"] for x in r["steps"]}
        print(
            f"| {r['trades']:,} | {r['files']:,} | {s['compaction']} | {s['recompute']} | {s['validation']} "
            f"| {s['load']} | {r['total_s']} |"
        )
    if extrapolated is not None:
        print(f"\nlinear extrapolation to 86.4 million trades (a day at 1,000/s): {extrapolated:.0f} s")
    print(f"\nwritten {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
