"""Curated candles in a real PostgreSQL reconciled with Binance klines from files and from REST.

The curated candles of XRP/ETH 2019-10-11 are built from the real aggTrades by the reference code
(tests/support/reference_candles.py; quiet minutes carry the previous close, as the batch fills them)
and upserted as curated. The klines are tests/fixtures/klines (Binance's real klines of that day; see
its README), as a data.binance.vision zip and served by the fake Binance REST on loopback.

A kline source exists for the exchanges 'binance' and 'binance-usdm' only, so each test writes under
'binance' with a symbol of its own (XRPETH plus a random suffix, the files and the fake named to
match) and deletes exactly its rows afterwards.
"""

from __future__ import annotations

import gzip
import json
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
from candlelake.reconcile import ReconcileError, ReconcileFailed, check_threshold, curated_symbols, reconcile_day
from candlelake.sinks.postgres_candles import upsert_candles
from candlelake.trade import Trade
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
            "missing_candles, missing_klines, match_rate, examples FROM kline_reconciliations WHERE reconcile_id = %s",
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
        "run-files", exchange, symbol, DAY, "files", 1440, 1440, 1440, 0, 0, 0, 1.0, []
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
