"""Real Binance trades replayed through the real pipeline give Binance's own klines, digit for digit.

tests/fixtures/binance-spot-xrpeth-2019-10 (provenance in its README): 12,477 XRP/ETH aggTrades and
Binance's 1m and 5m klines for the same 2.5 days, 1,091 of whose minutes had no trade. The trades go
through `candlelake replay` into Kafka, the streaming job lands them in the lake (they are years older
than the live watermark, so only the lake takes them), and the batch job recomputes curated candles
into PostgreSQL, filling the empty minutes; `candlelake candles` then serves them.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from candlelake.config import Settings
from tests.e2e.conftest import run_cli
from tests.e2e.test_pipeline import lake_rows, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "fixtures" / "binance-spot-xrpeth-2019-10"
TRADES = 12_477


def klines(name: str) -> list[list[float]]:
    return json.loads((DATA / name).read_text())


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def curated_xrpeth(platform: Settings) -> Settings:
    replay = run_cli("replay", str(DATA / "aggtrades.json.gz"), "--exchange", "binance", "--symbol", "XRPETH")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    wait_for(
        "every replayed trade in the lake",
        lambda: len({r["trade_id"] for r in lake_rows(platform, "binance") if r["symbol"] == "XRPETH"}) >= TRADES,
        timeout=180,
    )
    first, last = klines("klines-1m.json")[0][0], klines("klines-1m.json")[-1][0] + 60_000
    batch = subprocess.run(
        [
            sys.executable,
            str(ROOT / "jobs" / "batch_candles.py"),
            "--exchange",
            "binance",
            "--symbols",
            "XRPETH",
            "--start",
            iso(first),
            "--end",
            iso(last),
            "--write-postgres",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert batch.returncode == 0, batch.stderr[-3000:]
    return platform


def served(interval: str, first_ms: int, end_ms: int) -> list[dict[str, str]]:
    result = run_cli(
        "candles",
        "--exchange",
        "binance",
        "--symbol",
        "XRPETH",
        "--interval",
        interval,
        "--start",
        iso(first_ms),
        "--end",
        iso(end_ms),
    )
    assert result.returncode == 0, result.stderr
    return list(csv.DictReader(io.StringIO(result.stdout)))


@pytest.mark.parametrize(
    ("interval", "file", "step_ms"), [("1m", "klines-1m.json", 60_000), ("5m", "klines-5m.json", 300_000)]
)
def test_candles_equal_binance_klines_for_every_interval(curated_xrpeth, interval, file, step_ms) -> None:
    expected = klines(file)
    rows = served(interval, expected[0][0], expected[-1][0] + step_ms)
    assert [r["open_time"] for r in rows] == [iso(k[0]) for k in expected]
    mismatches = []
    for row, kline in zip(rows, expected, strict=True):
        for name, value in zip(("open", "high", "low", "close", "volume"), kline[1:6], strict=True):
            if Decimal(row[name]) != Decimal(repr(value)):
                mismatches.append(f"{row['open_time']} {name}: ours {row[name]}, Binance {value!r}")
    assert mismatches == [], f"{len(mismatches)} mismatches, first: {mismatches[:5]}"
    empty = sum(1 for r in rows if r["trades"] == "0")
    assert empty == sum(1 for k in expected if k[5] == 0)
    assert empty > 0
