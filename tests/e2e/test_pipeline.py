"""Trades the test knows -> producer -> Kafka -> Spark -> PostgreSQL candles and the Parquet lake.

The platform runs as `candlelake up` starts it, simulator traffic included; the test's trades go to an
exchange name of their own, so they mix with live traffic in the same topic, job and tables but can
be told apart. The truth is tests/support/reference_candles.py: plain Python, exact Decimals.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from candlelake.candle import KLINE_VALUES
from candlelake.config import Settings
from candlelake.ingest.counters import Counters
from candlelake.ingest.kafka_sinks import KafkaTradeSink
from candlelake.platform.orchestrator import components
from candlelake.sources.simulator import Simulator
from candlelake.trade import Trade
from tests.e2e.conftest import run_cli
from tests.support.reference_candles import reference_candles
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

N = 600
FIELDS = KLINE_VALUES


def produce(settings: Settings, trades: list[Trade]) -> Counters:
    counters = Counters()
    sink = KafkaTradeSink(settings, counters, client_id="e2e-test")
    for trade in trades:
        sink.send(trade)
    sink.close()
    assert counters.delivery_failures == 0
    assert counters.produced == len(trades)
    return counters


def pg_candles(settings: Settings, exchange: str) -> dict[tuple[str, str, Any], dict[str, Any]]:
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT exchange, symbol, open_time, close_time, " + ", ".join(FIELDS) + ", state "
            "FROM candles WHERE exchange = %s",
            (exchange,),
        )
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    conn.close()
    return {(r["exchange"], r["symbol"], r["open_time"]): r for r in rows}


def differences(expected: dict, actual: dict) -> list[str]:
    out = [f"missing candle {k}" for k in expected.keys() - actual.keys()]
    out += [f"unexpected candle {k}" for k in actual.keys() - expected.keys()]
    for key in expected.keys() & actual.keys():
        ref, got = expected[key], actual[key]
        for name in FIELDS:
            if getattr(ref, name) != got[name]:
                out.append(f"{key} {name}: expected {getattr(ref, name)}, got {got[name]}")
    return out


def lake_rows(settings: Settings, exchange: str) -> list[dict[str, Any]]:
    path = settings.lake_dir / "trades"
    if not path.exists():
        return []
    dataset = ds.dataset(str(path), format="parquet", partitioning="hive", exclude_invalid_files=True)
    table = dataset.to_table(columns=["symbol", "trade_id", "price", "qty"], filter=pc.field("exchange") == exchange)
    return table.to_pylist()


def last_batch_id(settings: Settings) -> int:
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(max(batch_id), -1) FROM stream_progress WHERE recorded_at > now() - interval '1 hour'"
        )
        value = cur.fetchone()[0]
    conn.close()
    return int(value)


@pytest.fixture(scope="module")
def known_trades(platform: Settings) -> tuple[str, list[Trade]]:
    """N trades over the last ~80 s for two markets of a fresh exchange name; a tenth sent twice."""
    exchange = f"e2e{uuid.uuid4().hex[:8]}"
    now_us = time.time_ns() // 1000
    sim = Simulator(
        ["AAAUSDT", "BBBUSDT"], rate=N / 75, seed=2026, start_time_us=now_us - 80_000_000, exchange=exchange
    )
    trades = sim.take(N)
    assert trades[-1].trade_time_us < time.time_ns() // 1000 + 10_000_000
    produce(platform, trades + trades[::10])
    return exchange, trades


def test_up_reports_every_part_healthy(platform: Settings) -> None:
    result = run_cli("status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    parts = {p["name"]: p for p in json.loads(result.stdout)}
    # Every part `up` starts (tests/integration/test_faults.py lists them by name).
    for name in (part.name for part in components(platform)):
        assert parts[name]["healthy"], f"{name} is not healthy: {parts[name]}"
        assert parts[name]["pid"] and parts[name]["rss_kib"] > 0
    # `up` printed where MLflow's UI is, as it prints Airflow's and the dashboard's.
    up = (Path(__file__).resolve().parents[2] / "test-artifacts" / "candlelake-up.txt").read_text()
    assert platform.mlflow_url in up and platform.mlflow_url in parts["mlflow"]["urls"]


def test_up_again_starts_nothing_twice(platform: Settings) -> None:
    before = {p["name"]: p["pid"] for p in json.loads(run_cli("status", "--json").stdout)}
    result = run_cli("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("already running") == len(before)
    after = {p["name"]: p["pid"] for p in json.loads(run_cli("status", "--json").stdout)}
    assert after == before


def test_candles_in_postgres_equal_candles_computed_from_the_trades(platform: Settings, known_trades) -> None:
    exchange, trades = known_trades
    expected = reference_candles(trades)
    assert len(expected) >= 4  # two markets over two or more minutes
    wait_until(
        lambda: not differences(expected, pg_candles(platform, exchange)),
        timeout=180,
        interval=2.0,
        what="the live candles to equal the reference",
    )
    assert differences(expected, pg_candles(platform, exchange)) == []
    # Live until the stream's watermark passes the candle's end, closed from then on. The watermark is
    # read after the candles: any candle closed by then ends before it.
    candles = pg_candles(platform, exchange).values()
    with psycopg2.connect(platform.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT max(watermark) FROM stream_progress WHERE query_name = 'live_candles'")
        watermark = cur.fetchone()[0]
    conn.close()
    for candle in candles:
        assert candle["state"] in ("live", "closed")
        if candle["state"] == "closed":
            assert watermark is not None and candle["close_time"] < watermark
        assert (candle["close_time"] - candle["open_time"]).total_seconds() == pytest.approx(59.999)


def test_lake_holds_each_trade_exactly_once(platform: Settings, known_trades) -> None:
    exchange, trades = known_trades
    rows = wait_until(
        lambda: r if len(r := lake_rows(platform, exchange)) >= N else None,
        timeout=180,
        interval=2.0,
        what=f"{N} trades in the lake",
    )
    assert len(rows) == N, f"the lake holds {len(rows)} rows for {N} distinct trades (duplicates were sent)"
    assert {(r["symbol"], r["trade_id"]) for r in rows} == {(t.symbol, t.trade_id) for t in trades}
    by_id = {(t.symbol, t.trade_id): t for t in trades}
    for r in rows:
        trade = by_id[(r["symbol"], r["trade_id"])]
        assert (Decimal(r["price"]), Decimal(r["qty"])) == (trade.price, trade.qty)


def test_duplicates_sent_again_change_nothing(platform: Settings, known_trades) -> None:
    exchange, trades = known_trades
    expected = reference_candles(trades)
    wait_until(
        lambda: not differences(expected, pg_candles(platform, exchange)),
        timeout=180,
        interval=2.0,
        what="the live candles to equal the reference",
    )
    before = pg_candles(platform, exchange)
    batch = last_batch_id(platform)
    produce(platform, trades[::3])
    # Several micro-batches must pass (the duplicates are in one of them) before we look again.
    wait_until(lambda: last_batch_id(platform) >= batch + 3, timeout=120, interval=2.0, what="three more micro-batches")
    after = pg_candles(platform, exchange)
    assert differences(expected, after) == []
    assert {k: {f: v[f] for f in FIELDS} for k, v in after.items()} == {
        k: {f: v[f] for f in FIELDS} for k, v in before.items()
    }
    assert len(lake_rows(platform, exchange)) == N


def test_candles_command_prints_exact_decimals_as_csv_and_json(platform: Settings, known_trades) -> None:
    exchange, trades = known_trades
    expected = reference_candles(trades)
    wait_until(
        lambda: not differences(expected, pg_candles(platform, exchange)),
        timeout=180,
        interval=2.0,
        what="the live candles",
    )
    first = min(t.trade_time_us for t in trades) // 60_000_000 * 60
    args = [
        "candles",
        "--exchange",
        exchange,
        "--symbol",
        "AAAUSDT",
        "--interval",
        "1m",
        "--start",
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first)),
        "--end",
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first + 3600)),
    ]
    result = run_cli(*args, "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    want = sorted((c for c in expected.values() if c.symbol == "AAAUSDT"), key=lambda c: c.open_time)
    assert [r["open_time"] for r in rows] == [c.open_time.strftime("%Y-%m-%dT%H:%M:%SZ") for c in want]
    plain = re.compile(r"^\d+(\.\d*[1-9])?$")  # no exponent, no trailing zeros
    for row, ref in zip(rows, want, strict=True):
        for name in FIELDS:
            assert plain.match(row[name]), f"{name}={row[name]!r} is not a plain exact decimal"
            assert Decimal(row[name]) == getattr(ref, name), name
    as_json = json.loads(run_cli(*args, "--format", "json").stdout)
    assert as_json == [{**row, "trades": int(row["trades"])} for row in rows]


def test_candles_command_explains_an_unknown_market(platform: Settings) -> None:
    result = run_cli(
        "candles", "--exchange", "nowhere", "--symbol", "NOPE", "--start", "2026-01-01", "--end", "2026-01-02"
    )
    assert result.returncode == 2
    assert "no candles at all for nowhere:NOPE" in result.stderr
    assert "Traceback" not in result.stderr
