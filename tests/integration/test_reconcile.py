"""Curated candles in a real PostgreSQL reconciled with Binance klines from files and from REST.

The curated candles of XRP/ETH 2019-10-11 are built from the real aggTrades by the reference code
(tests/support/reference_candles.py; quiet minutes carry the previous close, as the batch fills them)
and upserted as curated. The klines are tests/fixtures/klines (Binance's real klines of that day; see
its README), as a data.binance.vision zip and served by the fake Binance REST on loopback.

Each market's coverage is the whole day, as a replay of the day's data.binance.vision trade file
records it; tests that need less cut it. Offline (no kline file, the REST API unreachable: a loopback
port nothing listens on, as the live API is without internet) a market is skipped, not failed.

A kline source exists for the exchanges 'binance' and 'binance-usdm' only, so each test writes under
'binance' with a symbol of its own (XRPETH plus a random suffix, the files and the fake named to
match) and deletes exactly its rows afterwards.
"""

from __future__ import annotations

import gzip
import json
import socket
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from candlelake.config import Settings
from candlelake.coverage import Interval
from candlelake.coverage import record as record_coverage
from candlelake.nightly.reconcile import (
    ReconcileError,
    ReconcileFailed,
    ReconcileSkipped,
    check_results,
    check_threshold,
    curated_symbols,
    reconcile_day,
)
from candlelake.stream.postgres_candles import upsert_candles
from candlelake.trade import Trade
from candlelake.util import to_us
from tests.fakes.binance_rest import FakeBinanceRest, klines_from_csv
from tests.support.reference_candles import reference_candles

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CSV = FIXTURES / "klines" / "XRPETH-1m-2019-10-11.csv"
DAY = date(2019, 10, 11)
DAY_START = datetime(2019, 10, 11, tzinfo=UTC)
PREFIX = {"binance": "/api/v3", "binance-usdm": "/fapi/v1"}


@pytest.fixture(scope="module")
def settings(services: Settings) -> Settings:
    return services  # PostgreSQL up, schema applied (tests/integration/conftest.py)


@pytest.fixture(scope="module")
def day_candles() -> list[tuple[Any, ...]]:
    """The day's 1,440 curated candles from the real trades, for exchange/symbol placeholders."""
    with gzip.open(FIXTURES / "binance-spot-xrpeth-2019-10" / "aggtrades.json.gz", "rt") as f:
        raw = [row["info"] for row in json.load(f)]
    trades = [
        Trade("-", "-", r["a"], Decimal(r["p"]), Decimal(r["q"]), r["T"] * 1000, r["m"], r["T"] * 1000, "fixture")
        for r in raw
    ]
    built = {c.open_time: c for c in reference_candles(trades).values()}
    rows, previous = [], None
    zero = Decimal(0)
    for i in range(1440):
        at = DAY_START + timedelta(minutes=i)
        c = built.get(at)
        if c is None:  # a quiet minute: the previous close, no volume (the day's first minute has trades)
            assert previous is not None
            values = (previous, previous, previous, previous, zero, zero, 0, zero, zero, None)
        else:
            previous = c.close
            vwap = (c.quote_volume / c.volume).quantize(Decimal("1e-20"))
            values = (c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades, c.taker_buy_volume,
                      c.taker_buy_quote_volume, vwap)  # fmt: skip
        rows.append((at, at + timedelta(seconds=60) - timedelta(milliseconds=1), *values, None, None))
    return rows


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg2.extensions.connection]:
    c = psycopg2.connect(settings.pg_dsn())
    c.autocommit = True
    yield c
    c.close()


def load_market(conn: psycopg2.extensions.connection, day_candles: list[tuple[Any, ...]], exchange: str) -> str:
    symbol = f"XRPETH{uuid.uuid4().hex[:8].upper()}"
    upsert_candles(conn, [(exchange, symbol, *row) for row in day_candles], "curated")
    with conn.cursor() as cur:
        cur.execute("UPDATE candles SET coverage = 'complete' WHERE exchange = %s AND symbol = %s", (exchange, symbol))
        start = to_us(DAY_START)
        span = Interval(exchange, symbol, "replay:test", "replay", start, start + 86_400_000_000)
        record_coverage(cur, [span])
    return symbol


@pytest.fixture
def market(conn, day_candles) -> Iterator[Callable[..., tuple[str, str]]]:
    """(exchange, symbol) with the day's curated candles; removed afterwards with its reconciliations."""
    created: list[tuple[str, str]] = []

    def make(exchange: str = "binance") -> tuple[str, str]:
        created.append((exchange, load_market(conn, day_candles, exchange)))
        return created[-1]

    yield make
    with conn.cursor() as cur:
        for exchange, symbol in created:
            cur.execute("DELETE FROM candles WHERE exchange = %s AND symbol = %s", (exchange, symbol))
            cur.execute("DELETE FROM kline_reconciliations WHERE exchange = %s AND symbol = %s", (exchange, symbol))
            cur.execute("DELETE FROM coverage WHERE exchange = %s AND symbol = %s", (exchange, symbol))


def kline_zip(folder: Path, symbol: str) -> Path:
    """The fixture as data.binance.vision publishes it: data/spot/daily/klines/S/1m/S-1m-2019-10-11.zip."""
    name = f"{symbol}-1m-{DAY.isoformat()}"
    path = folder / "data" / "spot" / "daily" / "klines" / symbol / "1m" / f"{name}.zip"
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.csv", CSV.read_text())
    return path


def recorded(conn: psycopg2.extensions.connection, reconcile_id: int | None) -> tuple[Any, ...]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT run_id, exchange, symbol, trade_date, source, klines, candles, matched, mismatched, "
            "missing_candles, missing_klines, match_rate, examples, partial, not_covered FROM kline_reconciliations "
            "WHERE reconcile_id = %s",
            (reconcile_id,),
        )
        row = cur.fetchone()
    assert row is not None
    return row


def test_curated_candles_equal_the_kline_file(settings, conn, market, tmp_path) -> None:
    exchange, symbol = market()
    kline_zip(tmp_path, symbol)
    (result,) = reconcile_day(settings, exchange, DAY, [symbol], "files", tmp_path, run_id="run-files")
    assert (result.klines, result.candles, result.matched) == (1440, 1440, 1440)
    assert (result.mismatched, result.missing_candles, result.missing_klines) == (0, 0, 0)
    assert result.match_rate == 1.0 and result.examples == ()
    assert recorded(conn, result.reconcile_id) == (
        "run-files", exchange, symbol, DAY, "files", 1440, 1440, 1440, 0, 0, 0, 1.0, [], 0, 0
    )  # fmt: skip
    check_threshold([result], 0.0)
    assert symbol in curated_symbols(conn, exchange, DAY)


@pytest.mark.parametrize("exchange", ["binance", "binance-usdm"])
def test_curated_candles_equal_the_rest_klines(settings, market, exchange) -> None:
    exchange, symbol = market(exchange)
    with FakeBinanceRest(None, exchange, klines={symbol: klines_from_csv(CSV)}) as fake:
        fake.rate_limit_next(1, retry_after_s=0)  # the exchange pushes back once: waited out, not a failure
        url_setting = "binance_rest_url" if exchange == "binance" else "binance_usdm_rest_url"
        (result,) = reconcile_day(replace(settings, **{url_setting: fake.url}), exchange, DAY, [symbol], "rest")
        requests = fake.requests
    assert (result.klines, result.candles, result.matched, result.match_rate) == (1440, 1440, 1440, 1.0)
    assert result.source == "rest"
    day_ms = int(DAY_START.timestamp() * 1000)
    assert [(r.path, r.status, r.params["startTime"]) for r in requests] == [
        (f"{PREFIX[exchange]}/klines", 429, str(day_ms)),
        (f"{PREFIX[exchange]}/klines", 200, str(day_ms)),
        (f"{PREFIX[exchange]}/klines", 200, str(day_ms + 999 * 60_000 + 1)),  # after the first page's last
    ]
    assert {(r.params["interval"], r.params["endTime"], r.params["limit"]) for r in requests} == {
        ("1m", str(day_ms + 86_400_000 - 1), "1000")
    }


def test_a_tampered_candle_is_a_mismatch_and_fails_the_threshold(settings, conn, market, tmp_path) -> None:
    exchange, symbol = market()
    kline_zip(tmp_path, symbol)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE candles SET close = close + 0.00000001 WHERE exchange = %s AND symbol = %s AND open_time = %s",
            (exchange, symbol, DAY_START + timedelta(minutes=100)),
        )
        # A minute the curated load has not reached (still live): not a curated candle.
        cur.execute(
            "UPDATE candles SET state = 'live' WHERE exchange = %s AND symbol = %s AND open_time = %s",
            (exchange, symbol, DAY_START + timedelta(minutes=200)),
        )
    (result,) = reconcile_day(settings, exchange, DAY, [symbol], "files", tmp_path, run_id="run-tampered")
    assert (result.klines, result.candles, result.matched) == (1440, 1439, 1438)
    assert (result.mismatched, result.missing_candles, result.missing_klines) == (1, 1, 0)
    kline = CSV.read_text().splitlines()[100].split(",")
    assert result.examples == (
        {
            "open_time": "2019-10-11T01:40:00Z",
            "field": "close",
            "ours": str(Decimal(kline[4]) + Decimal("0.00000001")),
            "theirs": kline[4],
        },
        {"open_time": "2019-10-11T03:20:00Z", "field": "candle", "ours": None, "theirs": "kline present"},
    )
    row = recorded(conn, result.reconcile_id)
    assert row[5:12] == (1440, 1439, 1438, 1, 1, 0, pytest.approx(1438 / 1440))
    assert row[12] == list(result.examples)
    with pytest.raises(ReconcileFailed, match=rf"1 market\(s\) .* binance {symbol} 2019-10-11: 0\.14% "):
        check_threshold([result], 0.0)
    check_threshold([result], 0.002)


def test_exchanges_without_klines_get_a_note_not_a_crash(settings) -> None:
    for exchange in ("simulator", "coinbase"):
        (result,) = reconcile_day(settings, exchange, DAY, ["BTC-USD"], "rest")
        assert not result.compared and result.note is not None
        assert result.note.startswith(f"no kline source for exchange {exchange}")
        assert result.reconcile_id is None
        check_threshold([result], 0.0)
    (everything,) = reconcile_day(settings, "simulator", DAY, None, "files")
    assert everything.symbol == "*" and not everything.compared


def test_klines_that_cannot_be_had_are_a_clear_error(settings, market, tmp_path) -> None:
    exchange, symbol = market()
    with pytest.raises(ReconcileError, match=rf"klines of binance {symbol} on 2019-10-11 \(files\): no 1m kline file"):
        reconcile_day(settings, exchange, DAY, [symbol], "files", tmp_path)
    unknown = rf"{symbol} .*\(rest\): .*Invalid symbol\. \(code -1121\)"
    with FakeBinanceRest(None, exchange, klines={}) as fake, pytest.raises(ReconcileError, match=unknown):
        reconcile_day(replace(settings, binance_rest_url=fake.url), exchange, DAY, [symbol], "rest")
    with pytest.raises(ReconcileError, match="needs the folder"):
        reconcile_day(settings, exchange, DAY, [symbol], "files")


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connections are refused, as to any host without internet."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def reconciliations(conn: psycopg2.extensions.connection, symbol: str) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM kline_reconciliations WHERE symbol = %s", (symbol,))
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def test_offline_without_kline_files_the_reconciliation_is_skipped(settings, conn, market, tmp_path) -> None:
    exchange, symbol = market()
    _, other = market()
    offline = replace(settings, binance_rest_url=closed_port_url(), kline_files="")
    results = reconcile_day(offline, exchange, DAY, [symbol, other], "auto", run_id="run-offline")
    assert [(r.symbol, r.skipped, r.compared) for r in results] == [(symbol, True, False), (other, True, False)]
    assert results[0].note is not None and results[0].note.startswith("skipped: no kline source (binance REST API at ")
    assert "cannot be reached" in results[0].note and "ConnectError" in results[0].note
    assert reconciliations(conn, symbol) == reconciliations(conn, other) == 0  # no verdict recorded
    skipped = rf"^skipped: no kline source: 2 market\(s\) not compared \(binance {symbol} "
    with pytest.raises(ReconcileSkipped, match=skipped):
        check_results(results, 0.0)
    # Explicitly REST: the same. A kline folder without the market's day, with auto: REST, so the same too.
    (rest,) = reconcile_day(offline, exchange, DAY, [symbol], "rest")
    (auto,) = reconcile_day(offline, exchange, DAY, [symbol], "auto", tmp_path)
    assert rest.skipped and auto.skipped


def test_kline_files_from_the_setting_are_compared_and_partial_candles_are_partial(
    settings, conn, market, tmp_path
) -> None:
    exchange, symbol = market()
    kline_zip(tmp_path, symbol)
    start = DAY_START + timedelta(hours=20)
    with conn.cursor() as cur:
        # Coverage broke at 10:00:30 (the minute holds only the trades seen, less than Binance's), and nothing
        # was seen from 20:00 on: the batch curated no candles there.
        cur.execute(
            "UPDATE candles SET coverage = 'partial', volume = volume / 2 WHERE exchange = %s AND symbol = %s "
            "AND open_time = %s",
            (exchange, symbol, DAY_START + timedelta(hours=10)),
        )
        cur.execute(
            "DELETE FROM candles WHERE exchange = %s AND symbol = %s AND open_time >= %s", (exchange, symbol, start)
        )
        cur.execute("UPDATE coverage SET ended_at = %s WHERE exchange = %s AND symbol = %s", (start, exchange, symbol))
    # The files by the setting (a glob), the REST API unreachable: the files are used, REST never asked.
    offline = replace(settings, binance_rest_url=closed_port_url(), kline_files=f"{tmp_path}/**/*-1m-*.zip")
    (result,) = reconcile_day(offline, exchange, DAY, [symbol], "auto", run_id="run-partial")
    assert (result.source, result.klines, result.candles) == ("files", 1440, 1200)
    assert (result.matched, result.mismatched, result.partial, result.not_covered) == (1199, 0, 1, 240)
    assert (result.missing_candles, result.missing_klines) == (0, 0)
    assert result.match_rate == 1.0 and result.examples == ()
    assert ", 1 partial (interval not fully observed, not judged), 240 not covered" in result.text()
    assert check_results([result], 0.0)["partial"] == 1  # passes: partial and uncovered minutes are no mismatch
    row = recorded(conn, result.reconcile_id)
    assert row[4:12] == ("files", 1440, 1200, 1199, 0, 0, 0, 1.0)
    assert row[13:] == (1, 240)  # the minutes not judged, on record too

    # A real change in a complete candle is still a mismatch, and fails.
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE candles SET high = high + 0.00000001 WHERE exchange = %s AND symbol = %s AND open_time = %s",
            (exchange, symbol, DAY_START + timedelta(hours=11)),
        )
    (changed,) = reconcile_day(offline, exchange, DAY, [symbol], "files", run_id="run-partial-changed")
    assert (changed.matched, changed.mismatched, changed.partial) == (1198, 1, 1)
    assert changed.examples[0]["open_time"] == "2019-10-11T11:00:00Z" and changed.examples[0]["field"] == "high"
    with pytest.raises(ReconcileFailed, match=rf"binance {symbol} 2019-10-11: 0\.08% \(1 mismatched.*1 partial"):
        check_results([changed], 0.0)


def test_a_one_second_base_rolls_partial_seconds_into_a_partial_minute(settings, conn, market, tmp_path) -> None:
    """At a 1 s base a minute is partial when a second is, or when seconds are absent outside coverage."""
    exchange, symbol = market()
    kline_zip(tmp_path, symbol)
    first, second = DAY_START, DAY_START + timedelta(minutes=1)
    with conn.cursor() as cur:
        cur.execute(  # the day's first two minutes as seconds: all the trades in its first second
            "SELECT open_time, open, high, low, close, volume, quote_volume, trades, taker_buy_volume, "
            "taker_buy_quote_volume FROM candles WHERE exchange = %s AND symbol = %s AND open_time IN (%s, %s)",
            (exchange, symbol, first, second),
        )
        minutes = cur.fetchall()
        cur.execute(
            "DELETE FROM candles WHERE exchange = %s AND symbol = %s AND open_time IN (%s, %s)",
            (exchange, symbol, first, second),
        )
        for at, o, h, low, c, v, qv, n, tb, tbq in minutes:
            rows = [(exchange, symbol, at, at + timedelta(milliseconds=999), o, h, low, c, v, qv, n, tb, tbq,
                     None, None, None)]  # fmt: skip
            # The minute's other seconds exist only in the first minute (quiet and covered); the second
            # minute loses its coverage after its first second, so its absent seconds were not seen.
            if at == first:
                zero = Decimal(0)
                rows += [(exchange, symbol, at + timedelta(seconds=i), at + timedelta(seconds=i, milliseconds=999),
                          c, c, c, c, zero, zero, 0, zero, zero, None, None, None) for i in range(1, 60)]  # fmt: skip
            upsert_candles(conn, rows, "curated")
        cur.execute(
            "UPDATE candles SET coverage = 'complete' WHERE exchange = %s AND symbol = %s AND open_time < %s",
            (exchange, symbol, second + timedelta(minutes=1)),
        )
        cur.execute("DELETE FROM coverage WHERE exchange = %s AND symbol = %s", (exchange, symbol))
        day = to_us(DAY_START)
        record_coverage(cur, [
            Interval(exchange, symbol, "replay:test", "replay", day, to_us(second) + 1_000_000),
            Interval(exchange, symbol, "replay:test2", "replay", to_us(second) + 60_000_000, day + 86_400_000_000),
        ])  # fmt: skip
    (result,) = reconcile_day(settings, exchange, DAY, [symbol], "files", tmp_path)
    # The first minute sums back to its kline and is complete; the second is partial (seen for 1 s only).
    assert (result.matched, result.mismatched, result.partial, result.candles) == (1439, 0, 1, 1440)
