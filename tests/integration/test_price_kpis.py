"""Price points into PostgreSQL and their sliding-window KPIs (candlelake.stream.price_kpis), on real prices.

The points are the real XRP/ETH prices of tests/fixtures/binance-spot-xrpeth-2019-10 (each aggTrade's
price and time taken as a price point, about 7 hours of 2019-10-11), landed in shuffled batches with
repeats, as a stream's micro-batches would bring them; every KPI row is checked against the windows
computed here by brute force with exact fractions. The platform database is the tier's; the exchange
name is the test's own (`exchange`), its rows deleted afterwards.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from candlelake.config import Settings
from candlelake.stream.price_kpis import KPI_COLUMNS, KPI_WINDOWS, PointRow, kpi_json, land_points, land_points_dsn
from candlelake.util import from_us, to_us
from tests.support.reference_price_kpis import reference_kpis

pytestmark = pytest.mark.integration

AGGTRADES = Path(__file__).resolve().parents[1] / "fixtures" / "binance-spot-xrpeth-2019-10" / "aggtrades.json.gz"
MICROS = 1_000_000


@pytest.fixture
def conn(services: Settings, exchange: str) -> Iterator[psycopg2.extensions.connection]:
    c = psycopg2.connect(services.pg_dsn())
    c.autocommit = True
    yield c
    with c.cursor() as cur:
        cur.execute("DELETE FROM price_points WHERE exchange = %s", (exchange,))
        cur.execute("DELETE FROM price_kpis WHERE exchange = %s", (exchange,))
    c.close()


def real_points(exchange: str, limit: int) -> list[PointRow]:
    """The first `limit` aggTrades as price points, one per millisecond (a price source quotes one price
    at a time; several aggTrades can share a millisecond, and the last of them is the price after it)."""
    trades = [t["info"] for t in json.loads(gzip.decompress(AGGTRADES.read_bytes()))][:limit]
    last = {t["T"]: Decimal(t["p"]) for t in trades}
    return [(exchange, "XRPETH", "test", from_us(ms * 1000), price) for ms, price in last.items()]


def table(conn: psycopg2.extensions.connection, exchange: str) -> dict[tuple[str, str, int, int], dict]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(KPI_COLUMNS)} FROM price_kpis WHERE exchange = %s", (exchange,))
        rows = [dict(zip(KPI_COLUMNS, r, strict=True)) for r in cur.fetchall()]
    return {(exchange, "XRPETH", r["window_minutes"], to_us(r["window_start"])): r for r in rows}


def test_kpis_equal_the_windows_computed_by_hand_whatever_the_batches(conn, exchange: str) -> None:
    points = real_points(exchange, 3000)
    arriving = points + random.Random(7).sample(points, 300)  # polled twice
    random.Random(8).shuffle(arriving)  # and out of order
    published: dict[tuple[int, int], dict] = {}
    with conn.cursor() as cur:
        for i in range(0, len(arriving), 250):
            for row in land_points(cur, arriving[i : i + 250]):
                published[(row[0], row[1], row[2], to_us(row[3]))] = dict(zip(KPI_COLUMNS, row, strict=True))

    expected = reference_kpis([(e, s, to_us(t), p) for e, s, _source, t, p in points], KPI_WINDOWS)
    got = table(conn, exchange)
    assert set(got) == set(expected) and len(got) > 3000
    assert {key[2] for key in got} == {m for m, _ in KPI_WINDOWS}
    for key, (mean, low, high, count) in expected.items():
        row = got[key]
        _, _, minutes, start = key
        assert to_us(row["window_end"]) == start + minutes * 60 * MICROS
        assert (row["min_price"], row["max_price"], row["points"]) == (low, high, count), key
        assert row["spread"] == high - low
        # The mean to the digits PostgreSQL gives it (at least 16 significant), within half the last one.
        scale = -row["avg_price"].as_tuple().exponent
        assert abs(Fraction(row["avg_price"]) - mean) <= Fraction(1, 2 * 10**scale) and scale >= 16, key
    # What the batches returned, the last word per window, is the table.
    assert published == got


def test_landing_the_same_points_again_changes_nothing(conn, exchange: str) -> None:
    points = real_points(exchange, 400)
    with conn.cursor() as cur:
        first = land_points(cur, points)
        again = land_points(cur, points)
        cur.execute("SELECT count(*) FROM price_points WHERE exchange = %s", (exchange,))
        (stored,) = cur.fetchone()
    assert again == first and stored == len(set(points))
    assert land_points(conn.cursor(), []) == []


def test_a_kpi_message_carries_exact_decimals_and_epoch_microseconds(conn, exchange: str) -> None:
    with conn.cursor() as cur:
        rows = land_points(cur, real_points(exchange, 50))
    message = json.loads(kpi_json(rows[0]))
    assert list(message) == list(KPI_COLUMNS)
    assert Decimal(message["avg_price"]) == rows[0][5] and isinstance(message["avg_price"], str)
    assert message["window_start"] == to_us(rows[0][3]) and message["points"] == rows[0][9]


def test_the_streams_landing_commits_in_a_transaction_of_its_own(services: Settings, conn, exchange: str) -> None:
    """`land_points_dsn`, as the streaming job calls it: on a connection of its own, committed, so another
    connection sees the points and the KPI rows it returned."""
    points = real_points(exchange, 100)
    rows = land_points_dsn(services.pg_dsn(), points)
    assert rows and set(table(conn, exchange)) == {(r[0], r[1], r[2], to_us(r[3])) for r in rows}
