"""A live feed that lost its connection for three minutes: those minutes are no quiet candles.

The producer's pipeline (candlelake.ingest.pipeline) follows the feed's Reconnected and Disconnect events
and writes its sessions into the platform's PostgreSQL (table `coverage`) on its maintenance beats, as
the running producer does; the trades land in a lake of their own. The nightly recompute then reads
coverage back through market_coverage() (candlelake.nightly.recompute.load_coverage) and builds the candles: the
minutes nobody watched have none, the two it was lost and found in are partial, and a minute the
market was quiet while connected is a quiet candle.

The clocks are the test's (the events carry the times a feed would give them), so three minutes of
disconnect take no three minutes of test.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
import pytest

from candlelake import coverage
from candlelake.config import Settings
from candlelake.ingest.counters import Counters
from candlelake.ingest.pipeline import Pipeline
from candlelake.lake import catalog
from candlelake.nightly import recompute as batch
from candlelake.sources.events import Disconnect, Reconnected
from candlelake.spark import transforms as T
from candlelake.stream import parquet_lake
from candlelake.trade import Trade
from candlelake.util import from_us, to_us

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
T0_US = to_us(T0)
SECOND = 1_000_000
MINUTE = 60 * SECOND
LOST, FOUND = T0_US + 3 * MINUTE + 10 * SECOND, T0_US + 6 * MINUTE + 10 * SECOND  # 12:03:10 .. 12:06:10
QUIET_MINUTE = 8  # connected, and nobody traded


class Sink:
    def __init__(self) -> None:
        self.items: list[Any] = []  # trades to the lake, dead letters nowhere

    def send(self, item: Any) -> None:
        self.items.append(item)


@pytest.fixture(scope="module")
def settings(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("coverage-live")
    return dataclasses.replace(services, lake_dir=root / "lake", curated_dir=root / "curated")


def live_session(settings: Settings, exchange: str) -> list[Trade]:
    """Ten minutes of a feed: a trade every 20 s, none while disconnected and none in the quiet minute."""
    wall = [T0_US]
    store = coverage.CoverageStore(settings.pg_dsn())
    trades = Sink()
    pipeline = Pipeline(
        Counters(), trades, Sink(), source="binance@test", coverage=store, coverage_every_s=0, now_us=lambda: wall[0]
    )
    symbols = ("BTCUSDT",)
    pipeline.emit(Reconnected(exchange, "ws://test", True, symbols))
    lost = False
    for n, at in enumerate(range(T0_US + 5 * SECOND, T0_US + 10 * MINUTE, 20 * SECOND)):
        if LOST <= at < FOUND or (at - T0_US) // MINUTE == QUIET_MINUTE:
            continue
        if at >= FOUND and not lost:
            # Back at FOUND: the feed reports the loss with its times, then the new connection.
            wall[0] = FOUND
            pipeline.emit(Disconnect(exchange, symbols, LOST, FOUND, "server closed the connection (code 1006)"))
            pipeline.emit(Reconnected(exchange, "ws://test", False, symbols))
            lost = True
        wall[0] = at
        price = Decimal(100) + Decimal(n % 7)
        pipeline.emit(Trade(exchange, "BTCUSDT", 1000 + n, price, Decimal("0.5"), at, False, at, "test"))
        pipeline.maintain()  # a beat: coverage written up to now
    wall[0] = T0_US + 10 * MINUTE
    pipeline.close_coverage()  # the producer stops
    store.close()
    return trades.items


def test_three_disconnected_minutes_are_no_quiet_candles(settings: Settings, exchange: str, spark: Any) -> None:
    from pyspark.sql import functions as F

    trades = live_session(settings, exchange)
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT (extract(epoch FROM started_at) * 1e6)::bigint, (extract(epoch FROM ended_at) * 1e6)::bigint "
            "FROM coverage WHERE exchange = %s ORDER BY started_at",
            (exchange,),
        )
        assert cur.fetchall() == [(T0_US, LOST), (FOUND, T0_US + 10 * MINUTE)]
    conn.close()

    rows = [
        (t.exchange, t.symbol, t.trade_id, t.price, t.qty, from_us(t.trade_time_us), t.is_buyer_maker,
         from_us(t.ingest_time_us), t.source)
        for t in trades
    ]  # fmt: skip
    end = T0 + timedelta(minutes=10)
    df = T.with_trade_date(spark.createDataFrame(rows, T.TRADE_SCHEMA))
    parquet_lake.write_batch(df.coalesce(1), 0, settings.lake_dir / "trades", ["exchange", "trade_date"])
    covered = batch.load_coverage(settings.pg_dsn(), exchange, T0, end)
    lake = {"curated": settings.curated_dir, "checkpoint": catalog.lake_checkpoint(settings)}
    candles = batch.recompute(spark, settings.lake_dir, exchange, None, T0, end, "1 minute", covered=covered, **lake)
    minute = ((F.unix_micros("open_time") - T0_US) / MINUTE).cast("int")
    got = {
        r["m"]: (r["trades"], r["coverage"]) for r in candles.select(minute.alias("m"), "trades", "coverage").collect()
    }

    assert set(got) == {0, 1, 2, 3, 6, 7, 8, 9}, "minutes 4 and 5 were not watched: no candle at all"
    assert got[3] == (got[3][0], "partial") and got[3][0] > 0  # traded until 12:03:10, then lost
    assert got[6] == (got[6][0], "partial") and got[6][0] > 0  # back at 12:06:10
    assert got[QUIET_MINUTE] == (0, "complete")  # watched, and nobody traded: Binance's empty kline
    assert all(got[m][1] == "complete" and got[m][0] == 3 for m in (0, 1, 2, 7, 9))
