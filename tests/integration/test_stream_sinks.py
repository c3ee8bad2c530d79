"""The streaming job's PostgreSQL and Parquet sinks against a real PostgreSQL and real Spark batches.

Uses the platform database of the current settings (`candlelake up`, or CANDLELAKE_PG_* pointing at
another cluster with the schema applied); tests/integration/conftest.py starts it for the tier. Every test writes under
names of its own (the tier's `exchange`) and deletes them afterwards, so it can run next to live traffic.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import psycopg2
import pytest

from candlelake.config import Settings
from candlelake.stream import parquet_lake
from candlelake.stream.postgres_candles import COLUMNS, upsert_candles, upsert_candles_df
from candlelake.stream.progress import IDLE_BATCH_ID, ProgressRecorder, ProgressRow, fresh_queries

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def settings(services: Settings) -> Settings:
    return services  # PostgreSQL up, schema applied (tests/integration/conftest.py)


def row(exchange: str, minute: int, close: str, volume: str, trades: int) -> tuple[object, ...]:
    open_time = T0 + timedelta(minutes=minute)
    values = {
        "exchange": exchange,
        "symbol": "BTCUSDT",
        "open_time": open_time,
        "close_time": open_time + timedelta(seconds=59.999),
        "open": D("100"),
        "high": D("101.5"),
        "low": D("99.25"),
        "close": D(close),
        "volume": D(volume),
        "quote_volume": D("1234.56789012345678901234"),
        "trades": trades,
        "taker_buy_volume": D("0.5"),
        "taker_buy_quote_volume": D("50.00000000000000000001"),
        "vwap": D("100.12345678901234567890"),
        "first_trade_id": 1,
        "last_trade_id": trades,
    }
    return tuple(values[c] for c in COLUMNS)


def table(settings: Settings, exchange: str) -> dict[datetime, dict[str, object]]:
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(COLUMNS)}, state FROM candles WHERE exchange = %s", (exchange,))
        names = [*COLUMNS, "state"]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    conn.close()
    return {r["open_time"]: r for r in rows}  # type: ignore[misc]


def upsert(settings: Settings, rows: list[tuple[object, ...]], state: str) -> int:
    conn = psycopg2.connect(settings.pg_dsn())
    try:
        return upsert_candles(conn, rows, state)
    finally:
        conn.close()


def test_upserting_the_same_batch_twice_equals_once(settings: Settings, exchange: str) -> None:
    batch = [row(exchange, 0, "100.5", "3.1", 3), row(exchange, 1, "101", "1", 1)]
    assert upsert(settings, batch, "live") == 2
    once = table(settings, exchange)
    assert upsert(settings, batch, "live") == 2  # Spark replaying the batch after a crash
    assert table(settings, exchange) == once
    stored = once[T0]
    assert stored["quote_volume"] == D("1234.56789012345678901234")  # NUMERIC keeps every digit
    assert stored["vwap"] == D("100.12345678901234567890") and stored["state"] == "live"


def test_a_later_batch_replaces_the_candle_instead_of_adding(settings: Settings, exchange: str) -> None:
    upsert(settings, [row(exchange, 0, "100.5", "3.1", 3)], "live")
    upsert(settings, [row(exchange, 0, "100.7", "4.1", 4)], "live")  # update mode: the full candle again
    stored = table(settings, exchange)[T0]
    assert (stored["close"], stored["volume"], stored["trades"]) == (D("100.7"), D("4.1"), 4)


def test_live_never_overwrites_curated_but_curated_overwrites_live(settings: Settings, exchange: str) -> None:
    upsert(settings, [row(exchange, 0, "1", "1", 1), row(exchange, 1, "1", "1", 1)], "live")
    upsert(settings, [row(exchange, 0, "2", "2", 2)], "curated")
    upsert(settings, [row(exchange, 1, "3", "3", 3)], "closed")
    upsert(settings, [row(exchange, 0, "9", "9", 9), row(exchange, 1, "9", "9", 9)], "live")
    stored = table(settings, exchange)
    assert (stored[T0]["state"], stored[T0]["close"]) == ("curated", D("2"))
    assert (stored[T0 + timedelta(minutes=1)]["state"], stored[T0 + timedelta(minutes=1)]["close"]) == (
        "closed",
        D("3"),
    )
    upsert(settings, [row(exchange, 1, "4", "4", 4)], "curated")
    assert table(settings, exchange)[T0 + timedelta(minutes=1)]["state"] == "curated"


def test_an_unknown_state_is_refused(settings: Settings, exchange: str) -> None:
    with pytest.raises(ValueError, match="state must be one of"):
        upsert(settings, [row(exchange, 0, "1", "1", 1)], "final")


def test_a_spark_candles_batch_lands_exactly_with_utc_times(settings: Settings, exchange: str, spark) -> None:
    from candlelake.spark import transforms

    trades = [
        (exchange, "BTCUSDT", 2, D("27123.45678901"), D("0.00012345"), T0 + timedelta(seconds=59.999), False, T0, "t"),
        (exchange, "BTCUSDT", 1, D("27000.1"), D("0.3"), T0, True, T0, "t"),
    ]
    candles = transforms.candles(spark.createDataFrame(trades, transforms.TRADE_SCHEMA))  # type: ignore[attr-defined]
    assert upsert_candles_df(candles, settings.pg_dsn(), "live") == 1
    assert upsert_candles_df(candles, settings.pg_dsn(), "live") == 1
    stored = table(settings, exchange)
    assert list(stored) == [T0]  # not shifted by the machine's or the session's time zone
    c = stored[T0]
    assert c["close_time"] == T0 + timedelta(seconds=59.999)
    assert (c["open"], c["close"]) == (D("27000.1"), D("27123.45678901"))
    assert c["quote_volume"] == D("27000.1") * D("0.3") + D("27123.45678901") * D("0.00012345")
    assert c["taker_buy_quote_volume"] == D("3.3483907406032845")


def test_progress_is_recorded_buffered_while_postgres_is_away_and_idle_runs_stay_fresh(settings: Settings) -> None:
    query, run = f"test-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    since = datetime.now(UTC) - timedelta(seconds=5)
    progress = ProgressRow(query, run, 0, datetime.now(UTC), 10, 2.5, None, 1, None, 40)
    away = ProgressRecorder(settings.pg_dsn(dbname="candlelake_no_such_db"), retry_s=0)
    assert away.record(progress) is False and away.pending == 1  # never raises
    recorder = ProgressRecorder(settings.pg_dsn(), retry_s=0)
    try:
        assert recorder.touch(query, run, datetime.now(UTC))  # idle since start: a marker row
        assert recorder.record(progress)
        assert recorder.record(ProgressRow(query, run, 1, datetime.now(UTC), 0, None, None, 0, None, 3))
        assert recorder.touch(query, run)
        conn = psycopg2.connect(settings.pg_dsn())
        try:
            ages = fresh_queries(conn, [query], since)
            with conn.cursor() as cur:
                cur.execute("SELECT batch_id FROM stream_progress WHERE query_name = %s ORDER BY batch_id", (query,))
                batches = [r[0] for r in cur.fetchall()]
        finally:
            conn.close()
        assert batches == [IDLE_BATCH_ID, 0, 1]
        assert ages[query] < 5
    finally:
        recorder.close()
        away.close()
        with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM stream_progress WHERE query_name = %s", (query,))
        conn.close()


def test_recording_a_candles_batch_closes_the_live_candles_its_watermark_passed(
    settings: Settings, exchange: str
) -> None:
    # The close is global, as the stream's watermark is, and the platform's own stream keeps closing
    # candles in the shared tables: this test works on copies of the tables in a schema of its own.
    schema = f"closetest_{uuid.uuid4().hex[:8]}"
    dsn = f"{settings.pg_dsn()} options='-c search_path={schema}'"
    admin = psycopg2.connect(settings.pg_dsn())
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
        for name in ("candles", "stream_progress"):
            cur.execute(f"CREATE TABLE {schema}.{name} (LIKE public.{name} INCLUDING ALL)")
    conn = psycopg2.connect(dsn)
    recorder = ProgressRecorder(dsn, retry_s=0)

    def states() -> dict[int, str]:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT open_time, state FROM candles WHERE exchange = %s", (exchange,))
            return {t.minute: state for t, state in cur.fetchall()}

    try:
        upsert_candles(conn, [row(exchange, m, "1", "1", 1) for m in (0, 1, 2)], "live")
        upsert_candles(conn, [row(exchange, -1, "1", "1", 1)], "curated")
        # A lake batch's watermark closes nothing; only the candles query's does.
        assert recorder.record(ProgressRow("lake_trades", "r", 0, T0, 5, None, None, 0, T0 + timedelta(hours=1), 9))
        assert states() == {59: "curated", 0: "live", 1: "live", 2: "live"}
        watermark = T0 + timedelta(minutes=2)  # minute 1 ends at 12:01:59.999, just before it
        assert recorder.record(ProgressRow("live_candles", "r", 7, T0, 5, None, None, 0, watermark, 9))
        assert states() == {59: "curated", 0: "closed", 1: "closed", 2: "live"}

        # A live write of a closed candle (Spark sends one only by replaying an old batch) changes nothing.
        upsert_candles(conn, [row(exchange, 0, "7", "7", 7)], "live")
        with conn, conn.cursor() as cur:
            cur.execute("SELECT state, close FROM candles WHERE exchange = %s AND open_time = %s", (exchange, T0))
            assert cur.fetchone() == ("closed", D("1"))
    finally:
        recorder.close()
        conn.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def test_a_replayed_lake_batch_replaces_its_files(tmp_path: Path, spark) -> None:
    import pyarrow.dataset as ds

    from candlelake.spark import transforms

    trades = [
        ("binance", "BTCUSDT", i, D("1.5"), D("2"), T0 + timedelta(hours=12 * i), True, T0, "t") for i in range(3)
    ]
    df = transforms.with_trade_date(spark.createDataFrame(trades, transforms.TRADE_SCHEMA))  # type: ignore[attr-defined]
    df = df.coalesce(1)  # one task, so one file per date whatever the cores of the tier's session
    lake = tmp_path / "lake" / "trades"
    partitions = ["exchange", "trade_date"]
    assert parquet_lake.write_batch(df, 7, lake, partitions) == 2  # two dates
    parquet_lake.write_batch(df, 7, lake, partitions)  # the same batch again, as after a crash
    parquet_lake.write_batch(df.where("trade_id = 2"), 8, lake, partitions)
    names = sorted(p.relative_to(lake).as_posix() for p in lake.rglob("*.parquet"))
    assert names == [
        "exchange=binance/trade_date=2026-11-20/batch-000000000007-0000.parquet",
        "exchange=binance/trade_date=2026-11-21/batch-000000000007-0000.parquet",
        "exchange=binance/trade_date=2026-11-21/batch-000000000008-0000.parquet",
    ]
    read = ds.dataset(str(lake), format="parquet", partitioning="hive").to_table().to_pylist()
    assert sorted(r["trade_id"] for r in read) == [0, 1, 2, 2]  # batch 8 repeated trade 2 on purpose
    assert not (tmp_path / "lake" / parquet_lake.STAGING_DIR / "trades" / "batch=7").exists()
