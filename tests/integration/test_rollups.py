"""SQL rollups (candles at any bucket) against a real PostgreSQL, checked against candles computed
directly from the trades (tests/support/reference_rollup.py) and against Binance's own klines.

Uses the platform database of the current settings (started for the tier by tests/integration/conftest.py).
Base candles are written through the stream's own upsert under exchange names of the test's own (the
tier's `exchange`), deleted afterwards (which also checks that the rollup triggers follow a DELETE),
with the coverage that says where they were observed (`candlelake.coverage.record`): quiet buckets
exist only inside it.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from candlelake import candle
from candlelake.config import Settings
from candlelake.coverage import Interval, record
from candlelake.serve.rollups import COLUMNS, fetch_rollup, parse_bucket
from candlelake.stream.postgres_candles import upsert_candles
from candlelake.trade import Trade
from candlelake.util import to_us
from tests.support.reference_candles import RefCandle, reference_candles
from tests.support.reference_rollup import MONDAY_ORIGIN_S, RefBucket, covered_spans, reference_rollup

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "binance-spot-xrpeth-2019-10"
FIELDS = candle.KLINE_VALUES
SYMBOL = "ROLLUSDT"
BUCKETS = ("1m", "2m", "5m", "7m", "13m", "15m", "20m", "45m", "1h", "90m", "4h", "1d", "25h", "1w")
WEEK_S = 7 * 86_400
# Wider than synthetic_trades on both sides (whole weeks): every bucket of theirs was observed throughout.
WATCHED = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 5, tzinfo=UTC))


@pytest.fixture(scope="module")
def settings(services: Settings) -> Settings:
    return services  # PostgreSQL up, schema applied (tests/integration/conftest.py)


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg2.extensions.connection]:
    c = psycopg2.connect(settings.pg_dsn())
    c.autocommit = True
    yield c
    c.close()


def cover(
    conn: psycopg2.extensions.connection, exchange: str, *spans: tuple[datetime, datetime], symbol: str = SYMBOL
) -> None:
    """Record that the market was observed in each [start, end) of `spans` (as a replay would)."""
    with conn.cursor() as cur:
        record(
            cur,
            [Interval(exchange, symbol, f"test-{i}", "replay", to_us(a), to_us(b)) for i, (a, b) in enumerate(spans)],
        )


def base_rows(candles: dict[Any, RefCandle]) -> list[tuple[Any, ...]]:
    """Reference candles as rows for `upsert_candles` (postgres_candles.COLUMNS order)."""
    rows = []
    for c in candles.values():
        derived = {
            "close_time": c.open_time + timedelta(minutes=1) - timedelta(milliseconds=1),
            "vwap": c.quote_volume / c.volume if c.volume else None,
            **dict.fromkeys(candle.TRADE_IDS),
        }
        rows.append(tuple(derived[name] if name in derived else getattr(c, name) for name in candle.COLUMNS))
    return rows


def synthetic_trades(exchange: str) -> list[Trade]:
    """Bursts of trades from Wednesday 2024-01-03 over the Monday 2024-01-08 week boundary, with quiet
    minutes, hours and a whole quiet day; then 16 days without any trade; then one more busy day."""
    rng = random.Random(20240103)
    trades: list[Trade] = []
    price = Decimal("42000.00")
    t_us = int(datetime(2024, 1, 3, 22, 0, 5, tzinfo=UTC).timestamp()) * 1_000_000

    def burst(until_us: int) -> None:
        nonlocal price, t_us
        while t_us < until_us:
            roll = rng.random()
            if roll < 0.02:
                t_us += rng.randint(3_600, 6 * 3_600) * 1_000_000  # a quiet stretch of hours
            elif roll < 0.10:
                t_us += rng.randint(60, 900) * 1_000_000  # quiet minutes
            elif roll > 0.95:
                pass  # same microsecond as the previous trade: trade id decides the order
            else:
                t_us += rng.randint(1, 40_000_000)
            price = max(Decimal("1.00"), price + Decimal(rng.randint(-500, 500)) / 100)
            qty = Decimal(rng.randint(1, 500_000)) / Decimal(100_000)
            trades.append(Trade(exchange, SYMBOL, len(trades) + 1, price, qty, t_us, rng.random() < 0.5, t_us, "test"))

    def at(*args: int) -> int:
        return int(datetime(*args, tzinfo=UTC).timestamp()) * 1_000_000

    burst(at(2024, 1, 5, 12))
    t_us = at(2024, 1, 6, 23, 58)  # Friday 12:00 to Saturday 23:58: a whole day without trades
    burst(at(2024, 1, 8, 9))  # over Sunday night into Monday
    t_us = at(2024, 1, 24, 10, 0, 1)  # 16 quiet days: empty days and a whole empty week
    burst(at(2024, 1, 25, 2))
    return trades


def assert_rows_equal_reference(
    rows: list[tuple[object, ...]], want: list[RefBucket], label: str, stored: set[datetime] | None = None
) -> None:
    """Rows equal to the reference, coverage included; `filled` says no stored base candle lies in the
    bucket (by default: only candles with trades are stored, so a bucket is filled exactly when it has no
    trades)."""
    got_times = [r[0] for r in rows]
    want_times = [c.open_time.strftime("%Y-%m-%dT%H:%M:%SZ") for c in want]
    assert got_times == want_times, f"{label}: bucket open times differ"
    for row, ref in zip(rows, want, strict=True):
        values = dict(zip(COLUMNS, row, strict=True))
        for name in FIELDS:
            got = values[name] if name == "trades" else Decimal(str(values[name]))
            assert got == getattr(ref, name), f"{label} {values['open_time']} {name}: {got} != {getattr(ref, name)}"
        vwap = None if ref.volume == 0 else ref.quote_volume / ref.volume
        assert (values["vwap"] is None) == (vwap is None), label
        if vwap is not None:
            assert abs(Decimal(str(values["vwap"])) - vwap) < Decimal("1e-12"), label
        if stored is None:
            filled = ref.trades == 0
        else:
            size = want[1].open_time - want[0].open_time
            filled = not any(ref.open_time <= t < ref.open_time + size for t in stored)
        assert values["filled"] == ("true" if filled else "false"), f"{label} {values['open_time']}"
        assert values["coverage"] == ref.coverage, f"{label} {values['open_time']} coverage"


def load(conn: psycopg2.extensions.connection, rows: list[tuple[Any, ...]], state: str, batches: int = 1) -> None:
    """Upsert through the stream's path in shuffled batches, as micro-batches would arrive."""
    rows = list(rows)
    random.Random(7).shuffle(rows)
    for i in range(batches):
        upsert_candles(conn, rows[i::batches], state)


def test_rollups_equal_candles_computed_from_the_trades(conn, exchange) -> None:
    trades = synthetic_trades(exchange)
    load(conn, base_rows(reference_candles(trades)), "closed", batches=5)
    cover(conn, exchange, WATCHED)
    covered = covered_spans([WATCHED])
    last_time = trades[-1].trade_time_us // 1_000_000
    for text in BUCKETS:
        bucket = parse_bucket(text)
        want = reference_rollup(trades, bucket.seconds, MONDAY_ORIGIN_S if text == "1w" else 0, covered=covered)
        assert any(c.trades == 0 for c in want), f"{text}: the data must hold empty intervals"
        assert {c.coverage for c in want} == {"complete"}, text
        # Wider than the data on both sides (a week more for 1w): nothing is invented outside it.
        margin = timedelta(days=8 if text == "1w" else 1)
        end = datetime.fromtimestamp(last_time, UTC) + margin
        rows = fetch_rollup(conn, exchange, SYMBOL, bucket, want[0].open_time - margin, end)
        assert_rows_equal_reference(rows, want, text)
        assert {r[COLUMNS.index("state")] for r in rows} == {"closed"}
        # A range starting in the quiet weeks: its first candles carry a close from before the range.
        mid = datetime(2024, 1, 15, tzinfo=UTC)  # a Monday in the quiet weeks
        rows = fetch_rollup(conn, exchange, SYMBOL, bucket, mid, end)
        sub = [c for c in want if c.open_time >= mid]
        assert_rows_equal_reference(rows, sub, f"{text} from {mid:%Y-%m-%d %H:%M}")
        assert sub[0].trades == 0


def test_stored_empty_candles_count_as_stored_but_carry_no_prices(conn, exchange) -> None:
    """The curated batch stores a quiet minute as a candle without trades whose prices repeat the
    previous close: it makes a bucket stored (not filled), never its open, high, low or close."""
    trades = synthetic_trades(exchange)
    candles = {c.open_time: c for c in reference_candles(trades).values()}
    empties, previous = [], None
    t, until = min(candles), datetime(2024, 1, 6, 23, 58, tzinfo=UTC)  # over the whole quiet day too
    while t < until:
        if t in candles:
            previous = candles[t].close
        else:
            p, close_time = previous, t + timedelta(seconds=59.999)
            empties.append((exchange, SYMBOL, t, close_time, p, p, p, p, 0, 0, 0, 0, 0, None, None, None))
        t += timedelta(minutes=1)
    assert len(empties) > 1000
    load(conn, [*base_rows(reference_candles(trades)), *empties], "curated", batches=3)
    cover(conn, exchange, WATCHED)
    stored = set(candles) | {row[2] for row in empties}
    start, end = datetime(2024, 1, 3, tzinfo=UTC), datetime(2024, 1, 9, tzinfo=UTC)
    for text in ("1m", "2m", "5m", "7m", "13m", "15m", "20m", "45m", "1h", "90m", "4h", "1d", "25h"):
        bucket = parse_bucket(text)
        want = [
            c
            for c in reference_rollup(trades, bucket.seconds, covered=covered_spans([WATCHED]))
            if start <= c.open_time < end
        ]
        rows = fetch_rollup(conn, exchange, SYMBOL, bucket, start, end)
        assert_rows_equal_reference(rows, want, f"{text} with stored empty candles", stored)


def test_weeks_start_on_monday_and_an_empty_week_is_a_candle(conn, exchange) -> None:
    trades = synthetic_trades(exchange)
    load(conn, base_rows(reference_candles(trades)), "closed")
    cover(conn, exchange, WATCHED)
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)
    rows = fetch_rollup(conn, exchange, SYMBOL, parse_bucket("1w"), start, end)
    weeks = {r[0]: dict(zip(COLUMNS, r, strict=True)) for r in rows}
    assert list(weeks) == [
        "2024-01-01T00:00:00Z",
        "2024-01-08T00:00:00Z",
        "2024-01-15T00:00:00Z",
        "2024-01-22T00:00:00Z",
    ]
    monday = int(datetime(2024, 1, 8, tzinfo=UTC).timestamp()) * 1_000_000
    before = [t for t in trades if t.trade_time_us < monday]
    after = [t for t in trades if monday <= t.trade_time_us < monday + WEEK_S * 1_000_000]
    assert int(weeks["2024-01-01T00:00:00Z"]["trades"]) == len(before)
    assert int(weeks["2024-01-08T00:00:00Z"]["trades"]) == len(after)
    assert Decimal(str(weeks["2024-01-08T00:00:00Z"]["open"])) == after[0].price
    empty = weeks["2024-01-15T00:00:00Z"]
    assert (empty["trades"], empty["volume"], empty["filled"], empty["coverage"]) == (0, "0", "true", "complete")
    assert empty["open"] == empty["high"] == empty["low"] == empty["close"] == str(after[-1].price.normalize())


def test_a_range_without_data_has_no_rows(conn, exchange) -> None:
    trades = synthetic_trades(exchange)
    load(conn, base_rows(reference_candles(trades)), "closed")
    # Observed long before the first trade and long after the last: still no candles there.
    cover(conn, exchange, (datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 12, 31, tzinfo=UTC)))
    for text in ("1m", "1h", "1d"):
        bucket = parse_bucket(text)
        before = fetch_rollup(
            conn, exchange, SYMBOL, bucket, datetime(2023, 6, 1, tzinfo=UTC), datetime(2023, 6, 20, tzinfo=UTC)
        )
        after = fetch_rollup(
            conn, exchange, SYMBOL, bucket, datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 20, tzinfo=UTC)
        )
        unknown = fetch_rollup(
            conn, exchange, "NOPE", bucket, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 20, tzinfo=UTC)
        )
        assert (before, after, unknown) == ([], [], []), text


# Where synthetic_trades was not watched: a late start after its first trades, a 90 s loss in a burst, two
# hours of its quiet day, two and a half of its quiet weeks, and an end before its last trades.
HOLES_COVERAGE = (
    (datetime(2024, 1, 3, 22, 10, 30, tzinfo=UTC), datetime(2024, 1, 4, 6, 0, 10, tzinfo=UTC)),
    (datetime(2024, 1, 4, 6, 1, 40, tzinfo=UTC), datetime(2024, 1, 6, 5, tzinfo=UTC)),
    (datetime(2024, 1, 6, 7, tzinfo=UTC), datetime(2024, 1, 16, tzinfo=UTC)),
    (datetime(2024, 1, 18, 12, tzinfo=UTC), datetime(2024, 1, 25, 1, tzinfo=UTC)),
)
# An open trade-id gap with known times, inside the coverage: that instant was not seen either.
HOLES_GAP = (datetime(2024, 1, 4, 12, 0, 1, tzinfo=UTC), datetime(2024, 1, 4, 12, 0, 2, 500_000, tzinfo=UTC))


def insert_gap(
    conn: psycopg2.extensions.connection,
    exchange: str,
    span: tuple[datetime, datetime],
    kind: str = "trade_ids",
    status: str = "open",
) -> int:
    """A gap-ledger entry over `span`; its trade ids (any, distinct per entry) play no part in coverage."""
    first_id = int(span[0].timestamp())
    ids = (None, None) if kind == "disconnect" else (first_id, first_id + 2)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO trade_gaps (exchange, symbol, kind, first_id, last_id, started_at, ended_at, cause, source,"
            " status) VALUES (%s, %s, %s, %s, %s, %s, %s, 'test', 'test', %s) RETURNING gap_id",
            (exchange, SYMBOL, kind, *ids, *span, status),
        )
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def test_rollups_with_holes_in_coverage_equal_the_reference(conn, exchange) -> None:
    """Unwatched time makes buckets with trades partial and removes the quiet ones, also those after it
    whose previous close lies before it; a closed gap or a disconnect entry changes nothing."""
    trades = synthetic_trades(exchange)
    load(conn, base_rows(reference_candles(trades)), "closed", batches=3)
    cover(conn, exchange, *HOLES_COVERAGE)
    insert_gap(conn, exchange, HOLES_GAP)
    # Ignored by market_coverage: a gap the backfill filled, and a disconnect (coverage already ends there).
    insert_gap(
        conn, exchange, (datetime(2024, 1, 5, 1, tzinfo=UTC), datetime(2024, 1, 5, 2, tzinfo=UTC)), status="filled"
    )
    insert_gap(
        conn,
        exchange,
        (datetime(2024, 1, 5, 3, tzinfo=UTC), datetime(2024, 1, 5, 4, tzinfo=UTC)),
        "disconnect",
        "recorded",
    )
    covered = covered_spans(HOLES_COVERAGE, [HOLES_GAP])
    end = datetime(2024, 2, 5, tzinfo=UTC)
    for text in BUCKETS:
        bucket = parse_bucket(text)
        want = reference_rollup(trades, bucket.seconds, MONDAY_ORIGIN_S if text == "1w" else 0, covered=covered)
        full = reference_rollup(
            trades, bucket.seconds, MONDAY_ORIGIN_S if text == "1w" else 0, covered=covered_spans([WATCHED])
        )
        assert {c.coverage for c in want} == {"complete", "partial"}, text
        assert len(want) < len(full), f"{text}: some quiet buckets must be unknown"
        rows = fetch_rollup(conn, exchange, SYMBOL, bucket, datetime(2023, 12, 1, tzinfo=UTC), end)
        assert_rows_equal_reference(rows, want, f"{text} with holes")
        # Ranges starting in the quiet weeks, before the hole (the close before the range carries) and
        # after it (it does not: nothing until the next trade).
        for mid in (datetime(2024, 1, 10, tzinfo=UTC), datetime(2024, 1, 19, tzinfo=UTC)):
            rows = fetch_rollup(conn, exchange, SYMBOL, bucket, mid, end)
            sub = [c for c in want if c.open_time >= mid]
            assert_rows_equal_reference(rows, sub, f"{text} with holes from {mid:%Y-%m-%d}")
    minutes = {
        r[0]: r
        for r in fetch_rollup(conn, exchange, SYMBOL, parse_bucket("1m"), datetime(2024, 1, 18, tzinfo=UTC), end)
    }
    assert min(minutes) == "2024-01-24T10:00:00Z"  # the quiet days after the hole are unknown, not quiet


def hours_and_minutes(
    conn: psycopg2.extensions.connection, exchange: str, day: datetime
) -> tuple[dict[str, dict[str, object]], dict[str, dict[str, object]]]:
    """The day's 1h and 1m rows by HH:MM, as dicts of COLUMNS."""

    def rows(text: str) -> dict[str, dict[str, object]]:
        got = fetch_rollup(conn, exchange, SYMBOL, parse_bucket(text), day, day + timedelta(days=1))
        return {str(r[0])[11:16]: dict(zip(COLUMNS, r, strict=True)) for r in got}

    return rows("1h"), rows("1m")


def test_an_hour_holding_one_partial_minute_is_partial(conn, exchange) -> None:
    day = datetime(2024, 5, 6, tzinfo=UTC)
    upsert_candles(
        conn, [minute_row(exchange, day + timedelta(hours=10, minutes=m), "10") for m in range(120)], "curated"
    )
    cover(
        conn,
        exchange,
        (day + timedelta(hours=9), day + timedelta(hours=10, minutes=30, seconds=30)),
        (day + timedelta(hours=10, minutes=31), day + timedelta(hours=13)),
    )
    hours, minutes = hours_and_minutes(conn, exchange, day)
    assert {h: (r["coverage"], r["trades"]) for h, r in hours.items()} == {
        "10:00": ("partial", 60),
        "11:00": ("complete", 60),
    }
    assert (minutes["10:29"]["coverage"], minutes["10:30"]["coverage"], minutes["10:31"]["coverage"]) == (
        "complete",
        "partial",
        "complete",
    )
    assert sum(r["coverage"] == "partial" for r in minutes.values()) == 1
    five = fetch_rollup(
        conn,
        exchange,
        SYMBOL,
        parse_bucket("5m"),
        day + timedelta(hours=10, minutes=30),
        day + timedelta(hours=10, minutes=40),
    )
    assert [(r[0][11:16], r[COLUMNS.index("coverage")]) for r in five] == [("10:30", "partial"), ("10:35", "complete")]


def test_a_quiet_covered_bucket_is_a_filled_complete_candle(conn, exchange) -> None:
    day = datetime(2024, 5, 6, tzinfo=UTC)
    upsert_candles(
        conn,
        [
            minute_row(exchange, day + timedelta(hours=10), "10"),
            minute_row(exchange, day + timedelta(hours=12, minutes=30), "12"),
        ],
        "closed",
    )
    cover(conn, exchange, (day + timedelta(hours=9), day + timedelta(hours=13)))
    hours, minutes = hours_and_minutes(conn, exchange, day)
    quiet = hours["11:00"]
    assert (quiet["trades"], quiet["volume"], quiet["filled"], quiet["coverage"]) == (0, "0", "true", "complete")
    assert quiet["open"] == quiet["high"] == quiet["low"] == quiet["close"] == "10"
    assert (hours["10:00"]["coverage"], hours["12:00"]["coverage"]) == ("complete", "complete")
    assert len(minutes) == 151 and {r["coverage"] for r in minutes.values()} == {"complete"}  # 10:00 to 12:30


def two_trades_around_a_lost_watch(conn: psycopg2.extensions.connection, exchange: str) -> datetime:
    """Closed one-trade minutes at 10:00 and 12:30 of 2024-05-06, the market watched from 09:00 to 13:00
    but for 11:10-11:20 (the watch lost and found); returns that day."""
    day = datetime(2024, 5, 6, tzinfo=UTC)
    upsert_candles(
        conn,
        [
            minute_row(exchange, day + timedelta(hours=10), "10"),
            minute_row(exchange, day + timedelta(hours=12, minutes=30), "12"),
        ],
        "closed",
    )
    cover(
        conn,
        exchange,
        (day + timedelta(hours=9), day + timedelta(hours=11, minutes=10)),
        (day + timedelta(hours=11, minutes=20), day + timedelta(hours=13)),
    )
    return day


def test_an_unwatched_quiet_bucket_is_absent(conn, exchange) -> None:
    """No row where nobody watched, nor after it until the next trade: the close to repeat is unknown."""
    day = two_trades_around_a_lost_watch(conn, exchange)
    hours, minutes = hours_and_minutes(conn, exchange, day)
    assert list(hours) == ["10:00", "12:00"]
    assert hours["12:00"]["coverage"] == "complete"
    assert "11:09" in minutes and minutes["11:09"]["trades"] == 0
    assert [m for m in minutes if "11:10" <= m < "12:30"] == []
    assert len(minutes) == 71  # 10:00 to 11:09, and 12:30


def test_a_watch_that_began_inside_a_candle_carries_its_close_as_the_batch_does(conn, exchange) -> None:
    """A capture starting 16 s into 10:00 saw that minute's last trade: the quiet minutes after it repeat
    its close, as the nightly batch curates them. A watch lost and found again inside 11:00 may have
    missed that minute's last trade: nothing after it is quiet until the next trade."""
    day = datetime(2024, 5, 6, tzinfo=UTC)
    upsert_candles(
        conn,
        [
            minute_row(exchange, day + timedelta(hours=10), "10"),
            minute_row(exchange, day + timedelta(hours=11), "11"),
            minute_row(exchange, day + timedelta(hours=11, minutes=30), "12"),
        ],
        "closed",
    )
    cover(
        conn,
        exchange,
        (day + timedelta(hours=10, seconds=16), day + timedelta(hours=11, seconds=20)),
        (day + timedelta(hours=11, seconds=40), day + timedelta(hours=12)),
    )
    _, minutes = hours_and_minutes(conn, exchange, day)
    assert minutes["10:00"]["coverage"] == "partial" and minutes["10:01"]["trades"] == 0
    assert {minutes[f"10:{m:02d}"]["close"] for m in range(1, 60)} == {"10"}
    assert minutes["11:00"]["coverage"] == "partial"
    assert [m for m in minutes if "11:01" <= m < "11:30"] == []  # lost inside 11:00: unknown, not quiet
    assert minutes["11:30"]["close"] == "12" and max(minutes) == "11:30"  # the newest candle ends the rows


def test_a_trade_gap_inside_coverage_makes_its_bucket_partial_until_filled(conn, exchange) -> None:
    day = datetime(2024, 5, 6, tzinfo=UTC)
    upsert_candles(
        conn, [minute_row(exchange, day + timedelta(hours=10, minutes=m), "10") for m in range(60)], "closed"
    )
    cover(conn, exchange, (day + timedelta(hours=9), day + timedelta(hours=13)))
    gap = (day + timedelta(hours=10, minutes=20, seconds=5), day + timedelta(hours=10, minutes=20, seconds=6))
    gap_id = insert_gap(conn, exchange, gap)
    hours, minutes = hours_and_minutes(conn, exchange, day)
    assert hours["10:00"]["coverage"] == "partial"
    assert [m for m, r in minutes.items() if r["coverage"] == "partial"] == ["10:20"]
    with conn.cursor() as cur:
        cur.execute("UPDATE trade_gaps SET status = 'filled' WHERE gap_id = %s", (gap_id,))
    hours, minutes = hours_and_minutes(conn, exchange, day)
    assert hours["10:00"]["coverage"] == "complete"
    assert {r["coverage"] for r in minutes.values()} == {"complete"}


def test_the_candles_command_prints_each_buckets_coverage(conn, exchange, capsys) -> None:
    """`candlelake candles` on the read-only role: the coverage column, and no row for unknown buckets."""
    from candlelake.cli import main

    two_trades_around_a_lost_watch(conn, exchange)
    args = ["candles", "--exchange", exchange, "--symbol", SYMBOL, "--interval", "30m"]
    args += ["--start", "2024-05-06T00:00:00Z", "--end", "2024-05-07T00:00:00Z"]
    assert main([*args, "--format", "csv"]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(printed)))
    assert printed.splitlines()[0] == ",".join(COLUMNS)
    assert [(r["open_time"][11:16], r["trades"], r["close"], r["coverage"]) for r in rows] == [
        ("10:00", "1", "10", "complete"),
        ("10:30", "0", "10", "complete"),  # quiet, and watched since the 10:00 trade
        ("12:30", "1", "12", "complete"),  # 11:00-12:30 unknown: the 11:10-11:20 loss broke the watch
    ]
    assert main([*args, "--format", "json"]) == 0
    assert [r["coverage"] for r in json.loads(capsys.readouterr().out)] == ["complete"] * 3


def minute_row(exchange: str, t: datetime, price: str, qty: str = "1") -> tuple[Any, ...]:
    p, q = Decimal(price), Decimal(qty)
    return (exchange, SYMBOL, t, t + timedelta(seconds=59.999), p, p, p, p, q, p * q, 1, q, p * q, p, None, None)


def test_a_rolled_up_candle_has_the_weakest_state_of_its_parts(conn, exchange) -> None:
    def at(h: int, m: int) -> datetime:
        return datetime(2024, 5, 6, h, m, tzinfo=UTC)

    hour_11 = [minute_row(exchange, at(11, m), "11") for m in range(60)]
    upsert_candles(conn, [minute_row(exchange, at(10, 0), "10"), *hour_11], "curated")
    upsert_candles(conn, [minute_row(exchange, at(12, 0), "12"), minute_row(exchange, at(12, 30), "13")], "curated")
    upsert_candles(conn, [minute_row(exchange, at(10, 1), "10.5")], "closed")
    upsert_candles(conn, [minute_row(exchange, at(10, 5), "9")], "live")
    cover(conn, exchange, (at(0, 0), at(23, 0)))

    def states(text: str) -> dict[str, tuple[object, ...]]:
        rows = fetch_rollup(conn, exchange, SYMBOL, parse_bucket(text), at(0, 0), at(23, 0))
        return {str(r[0])[11:16]: (r[COLUMNS.index("state")], r[COLUMNS.index("filled")], r[7]) for r in rows}

    hours = states("1h")
    assert hours == {"10:00": ("live", "false", 3), "11:00": ("curated", "false", 60), "12:00": ("closed", "false", 2)}
    fives = states("5m")
    assert fives["10:00"] == ("closed", "false", 2)  # curated + closed + three generated minutes
    assert fives["10:05"] == ("live", "false", 1)
    assert fives["10:10"] == ("closed", "true", 0)  # generated: no stored candle, no trades
    assert fives["11:00"] == ("curated", "false", 5)
    assert fives["12:05"] == ("closed", "true", 0)
    assert max(fives) == "12:30"  # nothing after the market's latest candle: no data is no row
    # The stream's idempotent upsert moves the rollups with it, and never downgrades curated rows.
    upsert_candles(conn, [minute_row(exchange, at(10, 5), "9")], "curated")
    upsert_candles(conn, [minute_row(exchange, at(11, 0), "99")], "live")
    assert states("1h")["10:00"] == ("closed", "false", 3)
    assert states("1h")["11:00"] == ("curated", "false", 60)


def rollup_table(conn: psycopg2.extensions.connection, exchange: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM candle_rollups WHERE exchange = %s ORDER BY bucket_seconds, open_time", (exchange,))
        return cur.fetchall()


def test_rollup_tables_follow_replays_and_deletes(conn, exchange) -> None:
    rows = base_rows(reference_candles(synthetic_trades(exchange)))
    load(conn, rows, "closed", batches=3)
    first = rollup_table(conn, exchange)
    assert {r[2] for r in first} == {300, 900, 3600, 86_400}
    load(conn, rows, "closed", batches=7)  # a replayed micro-batch, split differently
    assert rollup_table(conn, exchange) == first
    with conn.cursor() as cur:
        cur.execute("DELETE FROM candles WHERE exchange = %s", (exchange,))
    assert rollup_table(conn, exchange) == []


def binance_trades(exchange: str) -> list[Trade]:
    with gzip.open(FIXTURES / "aggtrades.json.gz", "rt") as f:
        raw = [row["info"] for row in json.load(f)]
    return [
        Trade(
            exchange,
            "XRPETH",
            r["a"],
            Decimal(r["p"]),
            Decimal(r["q"]),
            r["T"] * 1000,
            r["m"],
            r["T"] * 1000,
            "fixture",
        )
        for r in raw
    ]


def assert_rows_equal_klines(rows: list[tuple[object, ...]], klines: list[list[float]], label: str) -> None:
    assert len(rows) == len(klines), label
    eight = Decimal("1e-8")
    convert: list[Callable[[object], object]] = [lambda v: v, *[lambda v: Decimal(str(v)).quantize(eight)] * 5]
    for row, kline in zip(rows, klines, strict=True):
        opened = datetime.fromtimestamp(kline[0] / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert row[0] == opened, label
        for i, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
            got = Decimal(str(row[COLUMNS.index(name)])).quantize(eight)
            assert got == convert[i](kline[i]), f"{label} {opened} {name}: {got} != {kline[i]}"
        assert row[COLUMNS.index("filled")] == ("true" if kline[5] == 0 else "false"), f"{label} {opened}"


def test_rollups_equal_binance_klines_including_empty_intervals(conn, exchange) -> None:
    trades = binance_trades(exchange)
    load(conn, base_rows(reference_candles(trades)), "curated", batches=4)
    day = datetime.fromtimestamp(trades[0].trade_time_us // 1_000_000, UTC).replace(hour=0, minute=0, second=0)
    cover(conn, exchange, (day, day + timedelta(days=3)), symbol="XRPETH")  # as three day dump files would
    for text, name in (("1m", "klines-1m.json"), ("5m", "klines-5m.json")):
        klines = json.loads((FIXTURES / name).read_text())
        assert any(k[5] == 0 for k in klines)
        start = datetime.fromtimestamp(klines[0][0] / 1000, UTC)
        end = datetime.fromtimestamp(klines[-1][0] / 1000, UTC) + timedelta(minutes=5)
        rows = fetch_rollup(conn, exchange, "XRPETH", parse_bucket(text), start, end)
        assert_rows_equal_klines(rows, klines, text)
