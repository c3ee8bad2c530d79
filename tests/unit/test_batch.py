"""The batch recompute: dedupe, empty-interval filling and candles from a lake, against plain-Python truth.

Real data: Binance's own 1m and 5m klines for XRP/ETH (2019-10-11..13) must come out of `candles()` +
`fill_empty_intervals()` on the same market's trades, every interval, the empty ones included, when the
market was covered throughout (the 1,091 quiet minutes stay quiet candles). Coverage itself (complete
vs partial, quiet only inside covered time) has its properties in test_coverage.py.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from candlelake.nightly import recompute as batch
from candlelake.spark import transforms as T
from candlelake.stream import parquet_lake
from candlelake.trade import Trade
from tests.support.reference_candles import RefCandle, reference_candles

pytestmark = pytest.mark.unit

BASE = datetime(2026, 11, 20, 23, 50, tzinfo=UTC)  # ten minutes before a UTC date boundary
BASE_US = int(BASE.timestamp()) * 1_000_000
MINUTE = timedelta(minutes=1)
REPO = Path(__file__).resolve().parents[2]
XRPETH = "binance-spot-xrpeth-2019-10"


def trade(tid, price, qty, us, maker=False, symbol="BTCUSDT", exchange="binance", ingest_us=None) -> Trade:
    return Trade(exchange, symbol, tid, D(price), D(qty), us, maker, ingest_us if ingest_us else us, "test")


def trades_df(spark, trades):
    rows = [
        (
            t.exchange,
            t.symbol,
            t.trade_id,
            t.price,
            t.qty,
            datetime.fromtimestamp(0, UTC) + timedelta(microseconds=t.trade_time_us),
            t.is_buyer_maker,
            datetime.fromtimestamp(0, UTC) + timedelta(microseconds=t.ingest_time_us),
            t.source,
        )
        for t in trades
    ]
    return spark.createDataFrame(rows, T.TRADE_SCHEMA)


def whole(markets, start: datetime, end: datetime) -> dict:
    """Coverage of every market in `markets` ((exchange, symbol) pairs) over all of [start, end)."""
    span = (int(start.timestamp() * 1e6), int(end.timestamp() * 1e6))
    return {market: [span] for market in markets}


def collect(df) -> dict[tuple[str, str, datetime], dict]:
    """Candles by (exchange, symbol, open_time), times as aware UTC (PySpark hands back naive local)."""
    out = {}
    for row in (
        df.withColumn("open_us", F.unix_micros("open_time"))
        .withColumn("close_us", F.unix_micros("close_time"))
        .collect()
    ):
        values = row.asDict()
        open_time = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=values.pop("open_us"))
        values["close_time"] = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=values.pop("close_us"))
        values["open_time"] = open_time
        key = (values["exchange"], values["symbol"], open_time)
        assert key not in out, f"two candles for {key}"
        out[key] = values
    return out


def reference_filled(trades, interval_us: int = 60_000_000, end_us: int | None = None) -> dict:
    """Plain-Python candles with empty buckets filled (from each market's first candle), as dicts."""
    ref = reference_candles(trades, interval_us)
    out: dict = {}
    markets = sorted({(e, s) for e, s, _ in ref})
    for exchange, symbol in markets:
        times = sorted(t for e, s, t in ref if (e, s) == (exchange, symbol))
        step = timedelta(microseconds=interval_us)
        last = times[-1]
        if end_us is not None:
            last_us = (end_us - 1) - (end_us - 1) % interval_us
            last = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=last_us)
        moment, close = times[0], None
        while moment <= last:
            c: RefCandle | None = ref.get((exchange, symbol, moment))
            if c is not None:
                close = c.close
                row = {
                    "open": c.open,
                    "high": c.high,
                    "low": c.low,
                    "close": c.close,
                    "volume": c.volume,
                    "quote_volume": c.quote_volume,
                    "trades": c.trades,
                    "taker_buy_volume": c.taker_buy_volume,
                    "taker_buy_quote_volume": c.taker_buy_quote_volume,
                }
            else:
                row = dict.fromkeys(("open", "high", "low", "close"), close)
                row.update(volume=D(0), quote_volume=D(0), trades=0, taker_buy_volume=D(0), taker_buy_quote_volume=D(0))
            out[(exchange, symbol, moment)] = row
            moment += step
    return out


def assert_matches_reference(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for key, want in expected.items():
        got = {name: actual[key][name] for name in want}
        assert got == want, key
        if want["trades"] == 0:
            assert actual[key]["vwap"] is None and actual[key]["first_trade_id"] is None, key
            assert actual[key]["last_trade_id"] is None, key


def write_lake(spark, lake: Path, batches: list[list[Trade]]) -> None:
    """Each batch as the stream writes it: one micro-batch, files per exchange/trade_date partition."""
    for batch_id, part in enumerate(batches):
        df = T.with_trade_date(trades_df(spark, part)).withColumn("kafka_offset", F.lit(batch_id).cast("long"))
        parquet_lake.write_batch(df.coalesce(1), batch_id, lake / "trades", ["exchange", "trade_date"])


# ---------------------------------------------------------------------------------------------------
# fill_empty_intervals


def candle_row(symbol, minute, close, open_=None, exchange="binance"):
    t = BASE + minute * MINUTE
    p = D(close)
    o = D(open_) if open_ else p
    return (exchange, symbol, t, t + MINUTE - timedelta(milliseconds=1), o, max(o, p), min(o, p), p,
            D("1"), p, 1, D("1"), p, p, 10 + minute, 10 + minute)  # fmt: skip


def test_fill_empty_intervals_fills_a_three_minute_gap_field_by_field(spark):
    candles = spark.createDataFrame(
        [candle_row("BTCUSDT", 0, "100.5", "99"), candle_row("BTCUSDT", 4, "101", "102")], T.CANDLE_SCHEMA
    )
    covered = whole([("binance", "BTCUSDT")], BASE, BASE + 5 * MINUTE)
    got = collect(T.fill_empty_intervals(candles, "1 minute", covered, BASE, BASE + 5 * MINUTE))
    assert sorted(k[2] for k in got) == [BASE + n * MINUTE for n in range(5)]
    for n in (1, 2, 3):
        t = BASE + n * MINUTE
        assert got[("binance", "BTCUSDT", t)] == {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "open_time": t,
            "close_time": t + MINUTE - timedelta(milliseconds=1),
            "open": D("100.5"),
            "high": D("100.5"),
            "low": D("100.5"),
            "close": D("100.5"),
            "volume": D(0),
            "quote_volume": D(0),
            "trades": 0,
            "taker_buy_volume": D(0),
            "taker_buy_quote_volume": D(0),
            "vwap": None,
            "first_trade_id": None,
            "last_trade_id": None,
            "coverage": "complete",
        }
    # The real candles pass through untouched.
    assert got[("binance", "BTCUSDT", BASE)]["open"] == D("99")
    assert got[("binance", "BTCUSDT", BASE + 4 * MINUTE)]["first_trade_id"] == 14


def test_fill_empty_intervals_leaves_the_start_empty_and_markets_independent(spark):
    candles = spark.createDataFrame(
        [
            candle_row("BTCUSDT", 2, "100"),
            candle_row("BTCUSDT", 4, "105"),
            candle_row("ETHUSDT", 0, "3000"),
            candle_row("ETHUSDT", 2, "3001"),
            candle_row("ETHUSDT", 3, "3002"),
            candle_row("BTCUSDT", 1, "7", exchange="other"),
        ],
        T.CANDLE_SCHEMA,
    )
    covered = {
        **whole([("binance", "BTCUSDT")], BASE, BASE + 5 * MINUTE),
        **whole([("binance", "ETHUSDT")], BASE, BASE + 4 * MINUTE),  # not watched in minute 4
        **whole([("other", "BTCUSDT")], BASE + MINUTE, BASE + 2 * MINUTE),
    }
    got = collect(T.fill_empty_intervals(candles, "1 minute", covered, BASE, BASE + 5 * MINUTE))
    closes = {(e, s, int((t - BASE) / MINUTE)): (v["close"], v["trades"]) for (e, s, t), v in got.items()}
    assert closes == {
        ("binance", "BTCUSDT", 2): (D("100"), 1),  # minutes 0 and 1: before the first trade, no candle
        ("binance", "BTCUSDT", 3): (D("100"), 0),
        ("binance", "BTCUSDT", 4): (D("105"), 1),
        ("binance", "ETHUSDT", 0): (D("3000"), 1),
        ("binance", "ETHUSDT", 1): (D("3000"), 0),
        ("binance", "ETHUSDT", 2): (D("3001"), 1),
        ("binance", "ETHUSDT", 3): (D("3002"), 1),  # ends with its own coverage, not BTCUSDT's
        ("other", "BTCUSDT", 1): (D("7"), 1),
    }


def test_fill_empty_intervals_uses_the_previous_close_and_end(spark):
    candles = spark.createDataFrame([candle_row("BTCUSDT", 2, "100")], T.CANDLE_SCHEMA)
    before_us = BASE_US - 1_000
    previous = spark.createDataFrame(
        [("binance", "BTCUSDT", D("98"), before_us), ("binance", "ETHUSDT", D("3000"), before_us)],
        "exchange string, symbol string, close decimal(28,10), trade_us long",
    )
    covered = whole([("binance", "BTCUSDT"), ("binance", "ETHUSDT")], BASE - MINUTE, BASE + 4 * MINUTE)
    got = collect(T.fill_empty_intervals(candles, "1 minute", covered, BASE, BASE + 4 * MINUTE, previous))
    closes = {(s, int((t - BASE) / MINUTE)): (v["open"], v["close"], v["trades"]) for (_, s, t), v in got.items()}
    assert closes == {
        ("BTCUSDT", 0): (D("98"), D("98"), 0),
        ("BTCUSDT", 1): (D("98"), D("98"), 0),
        ("BTCUSDT", 2): (D("100"), D("100"), 1),
        ("BTCUSDT", 3): (D("100"), D("100"), 0),
        **{("ETHUSDT", n): (D("3000"), D("3000"), 0) for n in range(4)},  # no trade in range, still known
    }


def test_a_close_from_before_an_uncovered_stretch_is_not_carried(spark):
    """The trade before `start` lies before the covered stretch: unseen trades may have moved the price."""
    candles = spark.createDataFrame([candle_row("BTCUSDT", 2, "100")], T.CANDLE_SCHEMA)
    previous = spark.createDataFrame(
        [("binance", "BTCUSDT", D("98"), BASE_US - 120_000_000)],
        "exchange string, symbol string, close decimal(28,10), trade_us long",
    )
    covered = whole([("binance", "BTCUSDT")], BASE - MINUTE, BASE + 4 * MINUTE)  # from a minute before start
    got = collect(T.fill_empty_intervals(candles, "1 minute", covered, BASE, BASE + 4 * MINUTE, previous))
    assert {int((t - BASE) / MINUTE): v["trades"] for (_, _, t), v in got.items()} == {2: 1, 3: 0}


def test_edges_of_a_mid_minute_capture_are_partial_and_nothing_follows_it(spark):
    start_us, end_us = BASE_US + 16_000_000, BASE_US + 3 * 60_000_000 + 30_000_001  # 00:16 .. 03:30
    trades = [trade(1, "10", "1", start_us), trade(2, "11", "1", BASE_US + 90_000_000), trade(3, "12", "1", end_us - 1)]
    covered = {("binance", "BTCUSDT"): [(start_us, end_us)]}
    built = T.candles(trades_df(spark, trades), "1 minute")
    got = collect(T.fill_empty_intervals(built, "1 minute", covered, BASE, BASE + 10 * MINUTE))
    minutes = {int((t - BASE) / MINUTE): (v["trades"], v["coverage"], v["close"]) for (_, _, t), v in got.items()}
    assert minutes == {
        0: (1, "partial", D(10)),
        1: (1, "complete", D(11)),
        2: (0, "complete", D(11)),  # quiet, inside the capture
        3: (1, "partial", D(12)),  # minutes 4..9: after the capture, no candle at all
    }


def test_dedupe_trades_keeps_the_earliest_ingested_copy(spark):
    first = trade(1, "10", "1", BASE_US, ingest_us=BASE_US + 5)
    late = trade(1, "10", "1", BASE_US, ingest_us=BASE_US + 9_000_000)
    other_market = trade(1, "10", "1", BASE_US, symbol="ETHUSDT")
    rows = T.dedupe_trades(trades_df(spark, [late, first, other_market, late])).collect()
    got = sorted((r.symbol, r.trade_id, r.ingest_time.timestamp()) for r in rows)
    assert [(s, i) for s, i, _ in got] == [("BTCUSDT", 1), ("ETHUSDT", 1)]
    assert got[0][2] == pytest.approx((BASE_US + 5) / 1e6)


# ---------------------------------------------------------------------------------------------------
# recompute() on a lake


def market_trades(n: int, seed: int) -> list[Trade]:
    """Two markets with gaps of several minutes, crossing a UTC date boundary."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        symbol = "BTCUSDT" if i % 3 else "ETHUSDT"
        minute = rng.choice([0, 1, 1, 4, 7, 9, 10, 10, 11, 14])
        us = BASE_US + minute * 60_000_000 + rng.randrange(60_000_000)
        price = D(rng.randrange(1, 10**6)) / D(10**4)
        qty = D(rng.randrange(1, 10**8)) / D(10**8)
        out.append(trade(1000 + i, price, qty, us, maker=rng.random() < 0.5, symbol=symbol))
    return out


def test_recompute_from_the_lake_equals_the_reference_despite_duplicates(spark, tmp_path):
    trades = market_trades(60, seed=7)
    late_copies = [replace(t, ingest_time_us=t.ingest_time_us + 900_000_000, source="late") for t in trades[::4]]
    write_lake(spark, tmp_path, [trades[:30], trades[30:] + late_copies[:5], late_copies[5:]])
    # Another exchange's partition and a trade outside the range must not leak in.
    write_lake(spark, tmp_path, [[trade(1, "1", "1", BASE_US, exchange="coinbase")]])
    start, end = BASE, BASE + 15 * MINUTE
    markets = [("binance", "BTCUSDT"), ("binance", "ETHUSDT")]
    result = batch.recompute(
        spark, tmp_path, "binance", None, start, end, "1 minute", covered=whole(markets, start, end)
    )
    assert_matches_reference(collect(result), reference_filled(trades, end_us=BASE_US + 15 * 60_000_000))
    read = batch.read_lake_trades(spark, tmp_path, "binance", None, start, end).count()
    summary = batch.summarize(result, read, 0.0)
    assert (summary.trades_read, summary.duplicates_dropped) == (60 + len(late_copies), len(late_copies))


def test_recompute_takes_the_close_before_start_and_filters_symbols(spark, tmp_path):
    before = trade(1, "50", "1", BASE_US - 3_600_000_000)  # an hour earlier, the previous day's partition
    inside = trade(2, "51", "1", BASE_US + 2 * 60_000_000)
    eth = trade(3, "9", "1", BASE_US, symbol="ETHUSDT")
    write_lake(spark, tmp_path, [[before, eth], [inside]])
    covered = whole([("binance", "BTCUSDT"), ("binance", "ETHUSDT")], BASE - 2 * 60 * MINUTE, BASE + 4 * MINUTE)
    result = batch.recompute(
        spark, tmp_path, "binance", ["BTCUSDT"], BASE, BASE + 4 * MINUTE, "1 minute", covered=covered
    )
    got = {int((t - BASE) / MINUTE): (s, v["close"], v["trades"]) for (_, s, t), v in collect(result).items()}
    assert got == {
        0: ("BTCUSDT", D(50), 0),
        1: ("BTCUSDT", D(50), 0),
        2: ("BTCUSDT", D(51), 1),
        3: ("BTCUSDT", D(51), 0),
    }


# ---------------------------------------------------------------------------------------------------
# Properties: any order, any split into batches, any duplication gives the same candles.

POOL = market_trades(40, seed=11)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.sampled_from(POOL), min_size=1, max_size=40),
    st.randoms(use_true_random=False),
    st.integers(min_value=1, max_value=4),
)
def test_order_batches_and_duplicates_do_not_change_the_candles(spark, chosen, rng, batches):
    """`chosen` repeats trades (duplicates); it is shuffled and split into unioned DataFrames."""
    shuffled = list(chosen)
    rng.shuffle(shuffled)
    cuts = sorted(rng.randrange(len(shuffled) + 1) for _ in range(batches - 1))
    parts = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
    frames = [trades_df(spark, part) for part in parts]
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    # Each market watched from BASE to the end of its last candle: quiet between trades, nothing after.
    step = 60_000_000
    ends = {}
    for t in chosen:
        ends[(t.exchange, t.symbol)] = max(
            ends.get((t.exchange, t.symbol), 0), t.trade_time_us - t.trade_time_us % step + step
        )
    covered = {market: [(BASE_US, end)] for market, end in ends.items()}
    end = BASE + timedelta(microseconds=max(ends.values()) - BASE_US)
    result = T.fill_empty_intervals(T.candles(T.dedupe_trades(union), "1 minute"), "1 minute", covered, BASE, end)
    assert_matches_reference(collect(result), reference_filled(chosen))


# ---------------------------------------------------------------------------------------------------
# Real Binance data


def xrpeth_folder() -> Path:
    fixtures = REPO / "tests" / "fixtures" / XRPETH
    return fixtures if fixtures.is_dir() else Path("/work/shared/data") / XRPETH


@pytest.fixture(scope="module")
def xrpeth_trades(spark):
    with gzip.open(xrpeth_folder() / "aggtrades.json.gz", "rt") as f:
        raw = json.load(f)
    trades = [
        trade(r["info"]["a"], r["info"]["p"], r["info"]["q"], r["info"]["T"] * 1000, r["info"]["m"], "XRPETH")
        for r in raw
    ]
    return trades_df(spark, trades).persist()


@pytest.mark.parametrize(("interval", "klines_file"), [("1 minute", "klines-1m.json"), ("5 minutes", "klines-5m.json")])
def test_candles_equal_binance_klines_including_empty_intervals(xrpeth_trades, interval, klines_file):
    klines = json.loads((xrpeth_folder() / klines_file).read_text())
    # Binance's klines, first to last, as the span covered: a day file covers its whole day.
    step = T.interval_micros(interval)
    start = datetime.fromtimestamp(klines[0][0] / 1000, UTC)
    end = datetime.fromtimestamp(klines[-1][0] / 1000, UTC) + timedelta(microseconds=step)
    covered = whole([("binance", "XRPETH")], start, end)
    got = collect(T.fill_empty_intervals(T.candles(xrpeth_trades, interval), interval, covered, start, end))
    assert {v["coverage"] for v in got.values()} == {"complete"}
    by_ms = {int(k[2].timestamp() * 1000): v for k, v in got.items()}
    assert sorted(by_ms) == [k[0] for k in klines]
    empty = 0
    for open_ms, *values in klines:
        candle = by_ms[open_ms]
        for name, binance in zip(("open", "high", "low", "close", "volume"), values, strict=True):
            # Binance's float printed shortest is the exact decimal: compare values, not floats.
            assert D(repr(binance)) == candle[name], (open_ms, name, binance, candle[name])
        empty += candle["trades"] == 0
    assert empty > 0  # the comparison covered intervals without trades


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # A finished day ends at midnight, however long ago.
        (datetime(2026, 11, 22, 3, 0, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC)),
        # A day still running stops at the last whole minute behind now - 2 minutes.
        (datetime(2026, 11, 20, 10, 3, 59, 999_999, tzinfo=UTC), datetime(2026, 11, 20, 10, 1, tzinfo=UTC)),
        (datetime(2026, 11, 20, 10, 3, tzinfo=UTC), datetime(2026, 11, 20, 10, 1, tzinfo=UTC)),
        # Minutes after midnight: the previous day is whole once its last minute is behind the watermark.
        (datetime(2026, 11, 21, 0, 1, 30, tzinfo=UTC), datetime(2026, 11, 20, 23, 59, tzinfo=UTC)),
        (datetime(2026, 11, 21, 0, 2, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC)),
    ],
)
def test_settled_end_stops_a_running_day_at_the_watermark(now: datetime, expected: datetime) -> None:
    assert batch.settled_end(datetime(2026, 11, 21, tzinfo=UTC), now, "2 minutes", "1 minute") == expected


def test_settled_end_keeps_whole_buckets_of_the_interval() -> None:
    now = datetime(2026, 11, 20, 10, 47, tzinfo=UTC)
    assert batch.settled_end(datetime(2026, 11, 21, tzinfo=UTC), now, "2 minutes", "15 minutes") == datetime(
        2026, 11, 20, 10, 45, tzinfo=UTC
    )
