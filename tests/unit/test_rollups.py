"""Bucket parsing, alignment and range planning for the SQL rollups (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from candlelake.serve.candles_export import ExportError, make_request
from candlelake.serve.rollups import (
    BUCKET_LADDER,
    COLUMNS,
    EPOCH,
    MONDAY_EPOCH,
    RollupError,
    bucket_count,
    fit_bucket,
    parse_bucket,
    parse_bucket_or_none,
    plan,
    read_levels,
    rollup_query,
    source_level,
)
from candlelake.trade import Trade
from tests.support.reference_rollup import covered_spans, reference_rollup

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m", 60), ("5m", 300), ("15m", 900), ("45m", 2700), ("1h", 3600), ("4h", 14_400), ("1d", 86_400)],
)
def test_buckets_parse_to_seconds_on_the_epoch(text, seconds):
    bucket = parse_bucket(text)
    assert (bucket.seconds, bucket.origin) == (seconds, EPOCH)


def test_weeks_start_on_monday():
    week = parse_bucket("1w")
    assert week.seconds == 7 * 86_400 and week.origin == MONDAY_EPOCH
    assert MONDAY_EPOCH.weekday() == 0
    sunday_night = datetime(2024, 1, 7, 23, 59, tzinfo=UTC)
    assert week.start_of(sunday_night) == datetime(2024, 1, 1, tzinfo=UTC)
    assert week.start_of(datetime(2024, 1, 8, tzinfo=UTC)) == datetime(2024, 1, 8, tzinfo=UTC)
    # Before the origin too: floor, not truncation toward zero.
    assert week.start_of(datetime(1970, 1, 1, tzinfo=UTC)) == datetime(1969, 12, 29, tzinfo=UTC)


def test_non_divisor_buckets_align_on_the_epoch_not_the_hour():
    b45 = parse_bucket("45m")
    t = datetime(2024, 1, 1, 1, 10, tzinfo=UTC)
    start = b45.start_of(t)
    assert (start - EPOCH).total_seconds() % 2700 == 0 and start <= t < start + timedelta(minutes=45)
    assert start == datetime(2024, 1, 1, 0, 45, tzinfo=UTC)  # 00:00, 00:45, 01:30: not on the hour
    assert b45.first_at_or_after(t) == datetime(2024, 1, 1, 1, 30, tzinfo=UTC)
    assert b45.first_at_or_after(start) == start


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0m", "is empty"),
        ("7q", "interval '7q' is not a bucket"),
        ("1.5h", "interval '1.5h' is not a bucket"),
        ("-5m", "is not a bucket"),
        ("m", "is not a bucket"),
        ("", "is not a bucket"),
        ("90s", "not a whole number of base candles"),
    ],
)
def test_bad_buckets_are_explained(text, message):
    with pytest.raises(RollupError, match=message):
        parse_bucket(text)


def test_seconds_buckets_need_a_seconds_base():
    assert parse_bucket("90s", base_seconds=1).seconds == 90


def test_the_largest_dividing_rollup_level_is_read():
    assert source_level(parse_bucket("1m")) == 0
    assert source_level(parse_bucket("7m")) == 0
    assert source_level(parse_bucket("5m")) == 300
    assert source_level(parse_bucket("45m")) == 900
    assert source_level(parse_bucket("50m")) == 300
    assert source_level(parse_bucket("4h")) == 3600
    assert source_level(parse_bucket("1d")) == 86_400
    assert source_level(parse_bucket("1w")) == 86_400
    assert source_level(parse_bucket("5m"), base_seconds=1) == 300


@pytest.mark.parametrize(
    ("text", "levels"),
    [
        ("1m", (0,)),
        ("2m", (0,)),
        ("7m", (0, 300)),  # 5-minute rows inside a bucket, base candles where a 5-minute block straddles two
        ("13m", (0, 300)),
        ("15m", (900,)),
        ("20m", (300, 900)),
        ("45m", (900,)),
        ("90m", (900, 3600)),
        ("2h", (3600,)),
        ("25h", (3600, 86_400)),
        ("1w", (86_400,)),
    ],
)
def test_a_bucket_reads_its_dividing_level_and_the_larger_ones_that_fit(text, levels):
    assert read_levels(parse_bucket(text)) == levels


def test_a_seconds_base_reads_its_own_candles_where_no_level_fits():
    assert read_levels(parse_bucket("90s", base_seconds=1), base_seconds=1) == (0,)
    assert read_levels(parse_bucket("7m", base_seconds=1), base_seconds=1) == (0, 300)


@pytest.mark.parametrize("text", ["1m", "5m", "15m", "1h", "1d"])
def test_a_bucket_that_is_a_stored_level_is_read_without_aggregating(text):
    bucket = parse_bucket(text)
    sql = rollup_query(read_levels(bucket), bucket.seconds)
    assert "GROUP BY" not in sql and "{parts}" not in sql
    assert ("FROM candle_rollups" in sql) == (text != "1m")


def test_a_straddled_bucket_reads_both_levels_and_aggregates():
    bucket = parse_bucket("13m")
    sql = rollup_query(read_levels(bucket), bucket.seconds)
    assert "GROUP BY t" in sql and "FROM candles\n" in sql and "FROM candle_rollups" in sql
    assert "%(level1)s" in sql and "%(span1)s" in sql and "UNION ALL" in sql
    with pytest.raises(ValueError, match="no rollup levels"):
        rollup_query((0, 120), 780)


def test_plan_counts_buckets_opening_in_range():
    start = datetime(2024, 1, 1, 0, 10, tzinfo=UTC)
    p = plan(parse_bucket("1h"), start, start + timedelta(hours=3))
    assert (p.first, p.last, p.count) == (
        datetime(2024, 1, 1, 1, tzinfo=UTC),
        datetime(2024, 1, 1, 3, tzinfo=UTC),
        3,
    )
    exact = plan(parse_bucket("1h"), p.first, p.first + timedelta(hours=3))
    assert exact.count == 3 and exact.last == datetime(2024, 1, 1, 3, tzinfo=UTC)


def test_too_many_rows_are_refused_with_a_larger_bucket_suggested():
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(RollupError, match=r"525,600 candles of 1m .* more than 100,000; choose a larger bucket"):
        plan(parse_bucket("1m"), start, start + timedelta(days=365))
    assert plan(parse_bucket("1h"), start, start + timedelta(days=365)).count == 8760


def test_a_range_without_a_bucket_start_is_explained():
    start = datetime(2024, 1, 1, 0, 10, tzinfo=UTC)
    with pytest.raises(RollupError, match="no 1h bucket starts"):
        plan(parse_bucket("1h"), start, start + timedelta(minutes=30))


def test_the_export_serves_any_bucket_and_explains_bad_ones():
    req = make_request("Binance", "xrpeth", "45m", "2024-01-01", "2024-01-02")
    assert (req.exchange, req.symbol, req.bucket.seconds) == ("binance", "XRPETH", 2700)
    with pytest.raises(ExportError, match=r"interval '1\.5h'"):
        make_request("x", "Y", "1.5h", "2024-01-01", "2024-01-02")
    with pytest.raises(ExportError, match="choose a larger bucket"):
        make_request("x", "Y", "1m", "2020-01-01", "2024-01-02")


def test_a_bucket_that_fits_is_kept() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert fit_bucket(parse_bucket("1m"), start, start + timedelta(hours=24), 5_000).text == "1m"
    assert bucket_count(parse_bucket("45m"), start, start + timedelta(hours=24)) == 32


@pytest.mark.parametrize(
    ("span", "asked", "fitted"),
    [
        (timedelta(days=7), "1m", "3m"),  # 10,080 -> 3,360
        (timedelta(days=30), "1m", "15m"),  # 43,200 -> 2,880
        (timedelta(days=365), "1m", "2h"),  # 525,600 -> 4,380
        (timedelta(days=365), "45m", "2h"),  # 11,680 -> 4,380: the next ladder step above the bucket asked
        (timedelta(days=3650), "1m", "1d"),  # 3,650 days
    ],
)
def test_a_bucket_too_small_for_the_range_is_raised_to_fit(span, asked, fitted) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    bucket = fit_bucket(parse_bucket(asked), start, start + span, 5_000)
    assert bucket.text == fitted
    assert bucket_count(bucket, start, start + span) <= 5_000
    # It is the smallest such step: the one before it would not fit.
    ladder = [b for b in BUCKET_LADDER if parse_bucket_or_none(b)]
    before = ladder[ladder.index(fitted) - 1]
    if parse_bucket(before).seconds > parse_bucket(asked).seconds:
        assert bucket_count(parse_bucket(before), start, start + span) > 5_000


def test_seconds_buckets_are_offered_only_over_a_seconds_base() -> None:
    assert parse_bucket_or_none("1s") is None
    assert parse_bucket_or_none("1s", base_seconds=1) is not None
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert fit_bucket(parse_bucket("1s", 1), start, start + timedelta(hours=6), 5_000, 1).text == "5s"


@pytest.mark.parametrize("text", ["1m", "13m", "15m", "90m", "1d", "1w"])
def test_every_rollup_reads_the_coverage_once_and_returns_it_last(text) -> None:
    bucket = parse_bucket(text)
    sql = rollup_query(read_levels(bucket), bucket.seconds)
    assert COLUMNS[-1] == "coverage"
    assert sql.count("market_coverage(") == 1 and "covered AS MATERIALIZED" in sql
    # Judged against the multirange alone, never against a stored candle's own coverage column.
    assert "'partial' END" in sql and "c.coverage" not in sql


def _trade(trade_id: int, at: datetime, price: str) -> Trade:
    us = int(at.timestamp()) * 1_000_000
    return Trade("x", "Y", trade_id, Decimal(price), Decimal(1), us, False, us, "test")


def test_the_reference_rollup_keeps_quiet_buckets_only_where_they_were_watched() -> None:
    """The truth the SQL is compared with (tests/support/reference_rollup.py), on a hand-made case."""
    h = datetime(2024, 5, 6, 10, tzinfo=UTC)
    trades = [_trade(1, h + timedelta(seconds=5), "10"), _trade(2, h + timedelta(hours=3, seconds=5), "13")]
    everything = covered_spans([(h, h + timedelta(hours=4))])
    assert [
        (c.open_time.hour, c.trades, c.close, c.coverage) for c in reference_rollup(trades, 3600, covered=everything)
    ] == [
        (10, 1, Decimal(10), "complete"),
        (11, 0, Decimal(10), "complete"),
        (12, 0, Decimal(10), "complete"),
        (13, 1, Decimal(13), "complete"),
    ]
    # A lost second at 11:30: 11:00 is unknown, and so is 12:00 (the close to repeat lies before the loss).
    lost = covered_spans(
        [
            (h, h + timedelta(hours=1, minutes=30)),
            (h + timedelta(hours=1, minutes=30, seconds=1), h + timedelta(hours=4)),
        ]
    )
    assert [c.open_time.hour for c in reference_rollup(trades, 3600, covered=lost)] == [10, 13]
    # A trade gap of known times inside the coverage: the bucket holding it is partial.
    gap = covered_spans(
        [(h, h + timedelta(hours=4))], [(h + timedelta(hours=3, minutes=1), h + timedelta(hours=3, minutes=1))]
    )
    assert [c.coverage for c in reference_rollup(trades, 3600, covered=gap)] == ["complete"] * 3 + ["partial"]
    # A gap's end instant is itself unseen: [start, end] leaves out one microsecond more than [start, end).
    assert gap[0][1] + 1 == gap[1][0]
