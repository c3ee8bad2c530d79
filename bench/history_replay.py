"""Time from `candlelake replay` of a day-sized aggTrades file to its curated candles, and where it goes.

    .venv/bin/python bench/history_replay.py [--trades 1000000] [--date 2024-03-01]

Needs the whole platform up (`candlelake up`: Kafka, PostgreSQL, the streaming job, Airflow). Builds a
data.binance.vision spot aggTrades day file `XRPETH-aggTrades-<date>.csv` of `--trades` rows from the
real XRP/ETH aggTrades in tests/fixtures (prices, sizes and sides as recorded, cycled; ids contiguous;
times spread over the day in order), then runs the real command, `candlelake replay FILE --exchange
binance`, as a user would, and stamps each line it prints. Phases, each ending at the line that says so:

    replay      every trade read, validated and acknowledged by Kafka (its summary)
    lake        the streaming job's lake query has read the replay's last offsets
    compaction  lake_compaction finished (the day's files compacted, sorted, deduplicated)
    quality     data_quality finished (recompute to staging, Great Expectations)
    load        load_curated_candles finished (COPY, upsert as curated)
    reconcile   reconcile_klines finished (offline: skipped, no kline source)

Afterwards the day's candles, coverage rows and lake partitions are removed again (`--keep` keeps them).
Writes JSON to bench/results/ and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg2

from candlelake.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "fixtures" / "binance-spot-xrpeth-2019-10" / "aggtrades.json.gz"
CLI = str(Path(sys.executable).parent / "candlelake")
SYMBOL = "XRPETH"
# (phase, the start of the line that ends it)
PHASES = (
    ("replay", "replayed "),
    ("lake", "chain: the lake query has read"),
    ("compaction", "chain: lake_compaction "),
    ("quality", "chain: data_quality "),
    ("load", "chain: load_curated_candles "),
    ("reconcile", "chain: reconcile_klines "),
)
DAG_STATES = ("success", "failed", "skipped")


def build_day_file(rows: int, day: date, folder: Path) -> Path:
    """`rows` aggTrades over the UTC `day`, in data.binance.vision's spot layout (8 columns, no header)."""
    records = [item["info"] for item in json.loads(gzip.decompress(SOURCE.read_bytes()))]
    start_ms = int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp() * 1000)
    path = folder / f"{SYMBOL}-aggTrades-{day.isoformat()}.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        for n in range(rows):
            r = records[n % len(records)]
            at = start_ms + n * 86_400_000 // rows
            writer.writerow([1_000_000 + n, r["p"], r["q"], 5_000_000 + n, 5_000_000 + n, at, r["m"], r["M"]])
    return path


def run_replay(path: Path) -> tuple[dict[str, float], list[str], int]:
    """The command's phases (seconds each), its output, and its exit code."""
    started = time.monotonic()
    ends: dict[str, float] = {}
    lines: list[str] = []
    process = subprocess.Popen(
        [CLI, "replay", str(path), "--exchange", "binance"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        print(f"{time.monotonic() - started:8.1f} s  {line}", file=sys.stderr)
        for phase, prefix in PHASES:
            done = line.startswith(prefix) and (phase in ("replay", "lake") or line.split()[-1] in DAG_STATES)
            if phase not in ends and done:
                ends[phase] = time.monotonic() - started
    code = process.wait()
    ends["total"] = time.monotonic() - started
    phases, previous = {}, 0.0
    for phase, _ in PHASES:
        if phase in ends:
            phases[phase] = round(ends[phase] - previous, 1)
            previous = ends[phase]
    phases["total"] = round(ends["total"], 1)
    return phases, lines, code


def cleanup(settings: Settings, day: date, file_name: str) -> None:
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM candles WHERE exchange = 'binance' AND symbol = %s AND open_time >= %s AND open_time < %s",
            (SYMBOL, start, start + timedelta(days=1)),
        )
        cur.execute("DELETE FROM coverage WHERE source = %s", (f"replay:{file_name}",))
    conn.close()
    for root in (
        settings.lake_dir / "trades",
        settings.curated_dir / "trades",
        settings.lake_dir / "staging" / "candles",
    ):
        shutil.rmtree(root / "exchange=binance" / f"trade_date={day.isoformat()}", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--date", type=date.fromisoformat, default=date(2024, 3, 1))
    parser.add_argument("--keep", action="store_true", help="keep the day's candles, coverage and lake files")
    args = parser.parse_args()
    settings = load_settings()
    if subprocess.run([CLI, "status"], capture_output=True, check=False).returncode != 0:
        raise SystemExit("the platform is not up: run `candlelake up` first")
    with tempfile.TemporaryDirectory(prefix="candlelake-history-") as tmp:
        built = time.monotonic()
        path = build_day_file(args.trades, args.date, Path(tmp))
        print(f"built {path.name}: {args.trades:,} trades in {time.monotonic() - built:.1f} s", file=sys.stderr)
        try:
            phases, lines, code = run_replay(path)
        finally:
            if not args.keep:
                cleanup(settings, args.date, path.name)
    if code != 0:
        raise SystemExit(f"candlelake replay exited {code}:\n" + "\n".join(lines[-30:]))
    summary = [line.strip() for line in lines if line.strip().startswith(f"{SYMBOL} {args.date.isoformat()}:")]
    result = {
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "trades": args.trades,
        "day": args.date.isoformat(),
        "phases_s": phases,
        "candles": summary,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    out = ROOT / "bench" / "results" / f"history_replay-{result['when']}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| trades | " + " | ".join(f"{p} s" for p in phases) + " |")
    print("|---" * (len(phases) + 1) + "|")
    print(f"| {args.trades:,} | " + " | ".join(str(v) for v in phases.values()) + " |")
    print("\n".join(summary))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
