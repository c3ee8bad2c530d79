"""Price points end to end: the real producer polls a fake CoinGecko -> Kafka `prices` -> the streaming
job -> `price_points`, the lake's `prices` table, `price_kpis` and the KPI topic.

CoinGecko is a local server speaking its `/simple/price` (tests/fakes/coingecko.py) whose prices move
every second: real XRP/ETH prices (tests/fixtures/binance-spot-xrpeth-2019-10) for one coin, the same
scaled down to 18 decimals for another. The producer polls twice a second, so most points are polled
twice and must count once. Coin ids are the test's own (unmapped: symbols `<id>-usd`), so the rows are
told apart from the platform's own traffic. The truth is what reached the `prices` topic, and its
windows computed by brute force (tests/support/reference_price_kpis.py).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg2
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from candlelake.config import Settings
from candlelake.price import PricePoint
from candlelake.stream.price_kpis import KPI_COLUMNS, KPI_WINDOWS
from candlelake.util import to_us
from tests.e2e.ingest_support import end_offsets, producer, producer_log, read_topic
from tests.fakes.coingecko import FakeCoinGecko
from tests.support.reference_price_kpis import reference_kpis
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

AGGTRADES = Path(__file__).resolve().parents[1] / "fixtures" / "binance-spot-xrpeth-2019-10" / "aggtrades.json.gz"
UPDATES = 25  # one a second


def pg_rows(settings: Settings, sql: str, args: tuple) -> list[tuple]:
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        rows = cur.fetchall()
    conn.close()
    return rows


def test_polled_prices_land_once_with_their_sliding_window_kpis(platform: Settings) -> None:
    tag = uuid.uuid4().hex[:6]
    coins = {f"e2e{tag}a": Decimal(1), f"e2e{tag}b": Decimal("0.000000001")}
    symbols = [f"{coin}-usd" for coin in coins]
    real = [Decimal(t["info"]["p"]) for t in json.loads(gzip.decompress(AGGTRADES.read_bytes()))[:UPDATES]]
    start_s = int(time.time())

    since = {topic: end_offsets(platform, topic) for topic in (platform.prices_topic, platform.price_kpis_topic)}
    with FakeCoinGecko({coin: {"usd": real[0] * scale} for coin, scale in coins.items()}, start_s) as fake:
        done = threading.Event()

        def move_prices() -> None:
            for i, price in enumerate(real):
                for coin, scale in coins.items():
                    fake.set_price(coin, "usd", price * scale, last_updated_at=start_s + i)
                if done.wait(1.0):
                    return

        mover = threading.Thread(target=move_prices, daemon=True)
        env = {"CANDLELAKE_COINGECKO_URL": fake.url, "CANDLELAKE_COINGECKO_INTERVAL_S": "0.5"}
        with producer(platform, "coingecko", list(coins), env, "prices") as proc:
            # The prices start moving once the producer polls: a start slowed by a busy machine must not
            # miss the first updates (seen: 21 of 25 seen when the first poll came 4 s late).
            wait_until(lambda: fake.requests, timeout=120, interval=0.1, what="the producer's first poll")
            mover.start()
            mover.join(timeout=UPDATES + 10)
            time.sleep(1.5)  # deliberately: the last prices polled more than once
            assert proc.poll() is None, producer_log("prices")
        done.set()
        assert proc.returncode == 0, producer_log("prices")

    records = read_topic(platform, platform.prices_topic, since[platform.prices_topic])
    sent = [PricePoint.from_wire(json.loads(value)) for _, value in records]
    ours = [p for p in sent if p.symbol in symbols]
    distinct = {(p.exchange, p.symbol, p.source, p.time_us, p.price) for p in ours}
    assert len(ours) > len(distinct) >= 2 * (UPDATES - 3), "most points are polled twice; nearly all updates seen"

    # price_points: each distinct point once, every digit kept.
    def landed() -> list[tuple]:
        return pg_rows(
            platform,
            "SELECT exchange, symbol, source, time, price FROM price_points WHERE symbol = ANY(%s)",
            (symbols,),
        )

    wait_until(lambda: len(landed()) >= len(distinct), timeout=120, interval=1, what="the points in price_points")
    assert {(e, s, src, to_us(t), p) for e, s, src, t, p in landed()} == distinct and len(landed()) == len(distinct)

    # price_kpis: every window the points touch, with the brute-force figures.
    expected = reference_kpis([(e, s, t, p) for e, s, _src, t, p in distinct], KPI_WINDOWS)

    def kpi_table() -> dict[tuple, dict]:
        sql = f"SELECT {', '.join(KPI_COLUMNS)} FROM price_kpis WHERE symbol = ANY(%s)"
        return {
            (r[0], r[1], r[2], to_us(r[3])): dict(zip(KPI_COLUMNS, r, strict=True))
            for r in pg_rows(platform, sql, (symbols,))
        }

    def figures(table: dict[tuple, dict]) -> dict[tuple, tuple]:
        return {key: (row["min_price"], row["max_price"], row["points"]) for key, row in table.items()}

    want = {key: (low, high, count) for key, (_mean, low, high, count) in expected.items()}
    table = wait_until(
        lambda: t if figures(t := kpi_table()) == want else None, timeout=60, interval=1, what="the KPI windows"
    )

    # The KPI topic: the last message of each window is the table's row (published after it is written).
    def last_messages() -> dict[tuple, dict]:
        records = read_topic(platform, platform.price_kpis_topic, since[platform.price_kpis_topic])
        messages = [json.loads(value) for _, value in records]
        keys = ("exchange", "symbol", "window_minutes", "window_start")
        return {tuple(m[k] for k in keys): m for m in messages if m["symbol"] in symbols}

    def published() -> dict[tuple, dict] | None:
        messages = last_messages()
        counts = {key: message["points"] for key, message in messages.items()}
        return messages if counts == {key: count for key, (_low, _high, count) in want.items()} else None

    last = wait_until(published, timeout=60, interval=1, what="the KPI messages")
    for key, message in last.items():
        assert Decimal(message["avg_price"]) == table[key]["avg_price"], key

    # The lake: each distinct point once.
    lake = ds.dataset(platform.lake_dir / "prices", format="parquet", partitioning="hive")
    got = lake.to_table(filter=pc.field("symbol").isin(symbols)).to_pylist()
    assert sorted((r["symbol"], to_us(r["time"]), r["price"]) for r in got) == sorted(
        (s, t, p) for _e, s, _src, t, p in distinct
    )
