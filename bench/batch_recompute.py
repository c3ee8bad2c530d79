"""Measure the batch recompute (candlelake.nightly.recompute.recompute) on a synthetic lake of N trades.

    .venv/bin/python bench/batch_recompute.py --trades 1000000 5000000 [--duplicates 0.01]

For each N: the seeded simulator (candlelake.sources.simulator.Simulator, 3 symbols) generates a block of up
to 500,000 trades, which is repeated with shifted trade ids and times (Python generation would take
longer than the measurement) until N trades span one UTC day. They are written with pyarrow in the
lake's layout (`trades/exchange=simulator/trade_date=.../*.parquet`) into a temporary folder, plus a
fraction `--duplicates` of late copies in separate files. Then, like jobs/batch_candles.py, the job
counts the trades read and recomputes the candles (materialized in full, so no column is pruned), on
local[2] with the configured driver memory. Reports trades/s and the peak resident memory of the
Spark JVM (VmHWM) and of this Python process; writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from candlelake.config import load_settings
from candlelake.lake import catalog
from candlelake.nightly import recompute as batch
from candlelake.sources.simulator import Simulator
from candlelake.spark.session import build_session

ROOT = Path(__file__).resolve().parents[1]
DAY_START = datetime(2026, 11, 20, tzinfo=UTC)
DAY_US = 86_400_000_000
BLOCK = 500_000
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
PARTITIONING = ds.partitioning(pa.schema([("exchange", pa.string()), ("trade_date", pa.date32())]), flavor="hive")
DEC = pa.decimal128(28, 10)
TS = pa.timestamp("us", tz="UTC")


def simulated_block(n: int, rate: float) -> pa.Table:
    """`n` simulator trades starting at DAY_START as an Arrow table (decimals exact, via their text)."""
    sim = Simulator(SYMBOLS, rate=rate, seed=42, start_time_us=int(DAY_START.timestamp()) * 1_000_000)
    trades = sim.take(n)
    return pa.table(
        {
            "symbol": pa.array([t.symbol for t in trades]),
            "trade_id": pa.array([t.trade_id for t in trades], pa.int64()),
            "price": pc.cast(pa.array([format(t.price, "f") for t in trades]), DEC),
            "qty": pc.cast(pa.array([format(t.qty, "f") for t in trades]), DEC),
            "trade_time": pa.array([t.trade_time_us for t in trades], pa.int64()),
            "is_buyer_maker": pa.array([t.is_buyer_maker for t in trades]),
        }
    )


def lake_rows(block: pa.Table, copy: int, span_us: int, ingest_delay_us: int = 0, source: str = "bench") -> pa.Table:
    """Copy `copy` of the block, ids and times shifted past the previous copies, with lake columns."""
    t_us = block["trade_time"].to_numpy() + copy * span_us
    n = len(t_us)
    return pa.table(
        {
            "exchange": pa.array(["simulator"] * n),
            "symbol": block["symbol"],
            "trade_id": pa.array(block["trade_id"].to_numpy() + copy * 10_000_000_000),
            "price": block["price"],
            "qty": block["qty"],
            "trade_time": pa.array(t_us, pa.int64()).cast(TS),
            "is_buyer_maker": block["is_buyer_maker"],
            "ingest_time": pa.array(t_us + ingest_delay_us, pa.int64()).cast(TS),
            "source": pa.array([source] * n),
            "trade_date": pa.array((t_us // DAY_US).astype(np.int32), pa.int32()).cast(pa.date32()),
        }
    )


def write_lake(lake: Path, n: int, duplicates: float) -> tuple[int, datetime]:
    """Write `n` trades (+ late copies) over about one day; return the rows written and the range end."""
    block_n = min(n, BLOCK)
    block = simulated_block(block_n, rate=n / 86_400)
    span_us = int(block["trade_time"].to_numpy()[-1]) - int(DAY_START.timestamp()) * 1_000_000 + 1
    table = lake / batch.TRADES_TABLE
    rows, copy = 0, 0
    rng = np.random.default_rng(7)
    while rows < n:
        part = lake_rows(block, copy, span_us).slice(0, n - rows)
        ds.write_dataset(
            part,
            table,
            format="parquet",
            partitioning=PARTITIONING,
            basename_template=f"batch-{copy:06d}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
        )
        if duplicates > 0:
            pick = np.sort(rng.choice(len(part), size=int(len(part) * duplicates), replace=False))
            late = lake_rows(block.take(pick), copy, span_us, ingest_delay_us=900_000_000, source="late")
            ds.write_dataset(
                late,
                table,
                format="parquet",
                partitioning=PARTITIONING,
                basename_template=f"late-{copy:06d}-{{i}}.parquet",
                existing_data_behavior="overwrite_or_ignore",
            )
            rows_dup = len(late)
        else:
            rows_dup = 0
        rows += len(part)
        copy += 1
        print(f"  wrote {rows:,} trades (+{rows_dup:,} late copies in block {copy})", file=sys.stderr)
    # Readers take a partition's files from its batch records (candlelake.lake.catalog): one for all.
    for folder in table.glob("exchange=*/trade_date=*"):
        catalog.write_batch_record(folder, 0, sorted(folder.glob("*.parquet")))
    end_us = int(DAY_START.timestamp()) * 1_000_000 + copy * span_us
    return rows, DAY_START + timedelta(microseconds=end_us - int(DAY_START.timestamp()) * 1_000_000)


def vm_hwm_mib(pid: int) -> float:
    """Peak resident memory of a process from /proc (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(n: int, duplicates: float, driver_memory: str) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix="candlelake-bench-"))
    try:
        generated = time.monotonic()
        written, end = write_lake(folder, n, duplicates)
        generate_s = time.monotonic() - generated
        settings = load_settings()
        spark = build_session(
            settings,
            "candlelake-bench-batch",
            {"spark.master": "local[2]", "spark.driver.memory": driver_memory},
        )
        spark.sparkContext.setLogLevel("WARN")
        jvm_pid = int(spark.sparkContext._jvm.ProcessHandle.current().pid())  # type: ignore[union-attr]
        try:
            started = time.monotonic()
            trades_read = batch.read_lake_trades(spark, folder, "simulator", None, DAY_START, end).count()
            # The simulator saw the whole span: every minute is covered, so quiet ones are filled as before.
            seen = [(int(DAY_START.timestamp()) * 1_000_000, int(end.timestamp() * 1_000_000))]
            covered = {("simulator", s): seen for s in SYMBOLS}
            result = batch.recompute(
                spark, folder, "simulator", None, DAY_START, end, "1 minute", covered=covered
            ).persist()
            result.count()  # every column: the cache holds whole rows
            summary = batch.summarize(result, trades_read, started)
            spark.catalog.clearCache()
            jvm_peak = vm_hwm_mib(jvm_pid)
        finally:
            spark.stop()
        return {
            "trades": written,
            "generate_seconds": round(generate_s, 1),
            **summary.as_dict(),
            "peak_rss_jvm_mib": round(jvm_peak, 1),
            "peak_rss_python_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--duplicates", type=float, default=0.01, help="fraction of trades written twice")
    parser.add_argument("--driver-memory", default=load_settings().spark_driver_memory)
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    runs = []
    for n in args.trades:
        print(f"{n:,} trades:", file=sys.stderr)
        runs.append(measure(n, args.duplicates, args.driver_memory))
        print(json.dumps(runs[-1]), file=sys.stderr)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "master": "local[2]",
        "driver_memory": args.driver_memory,
        "duplicates": args.duplicates,
        "runs": runs,
    }
    out = ROOT / "bench" / "results" / f"batch_recompute-{result['when']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| trades | read | duplicates | candles | filled | seconds | trades/s | JVM peak MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['trades']:,} | {r['trades_read']:,} | {r['duplicates_dropped']:,} | {r['candles_written']:,} "
            f"| {r['empty_intervals_filled']:,} | {r['seconds']} | {r['trades_per_second']:,.0f} "
            f"| {r['peak_rss_jvm_mib']} |"
        )
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
