"""Coverage: the interval logic (candlelake.coverage) and what the nightly fill makes of it.

The property at the end runs the real fill (candlelake.spark.transforms.fill_empty_intervals, on Spark) over
any covered intervals and trades inside them, and checks the contract against a direct reading of the
intervals: a candle is complete exactly when its interval is covered, and a candle without trades
exists only inside coverage.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candlelake import coverage
from candlelake.coverage import Interval, LiveSessions
from candlelake.spark import transforms as T
from candlelake.util import to_us
from tests.unit.test_batch import collect, trade, trades_df

pytestmark = pytest.mark.unit

MIN = 60_000_000
BASE = datetime(2026, 11, 20, 23, 50, tzinfo=UTC)
BASE_US = to_us(BASE)
WINDOW = 12  # minutes the property looks at


def test_merge_joins_overlapping_and_touching_spans_and_drops_empty_ones() -> None:
    assert coverage.merge([(5, 9), (1, 3), (3, 4), (8, 12), (20, 20)]) == [(1, 4), (5, 12)]
    assert coverage.merge([]) == []


def test_state_of_a_bucket_needs_one_span_holding_all_of_it() -> None:
    merged = coverage.merge([(0, MIN), (MIN, 2 * MIN), (3 * MIN, 4 * MIN - 1)])
    assert coverage.state_of(merged, 0, 2 * MIN) == "complete"  # touching spans merged
    assert coverage.state_of(merged, 3 * MIN, MIN) == "partial"  # its last microsecond unseen
    assert coverage.state_of(merged, 2 * MIN, MIN) == "partial"


def test_complete_buckets_lie_whole_inside_a_stretch_and_name_its_carrier() -> None:
    # Seen from 00:16 to 03:30 and from 05:00 to 07:00 (minutes from 0).
    merged = [(16_000_000, 3 * MIN + 30_000_000), (5 * MIN, 7 * MIN)]
    got = list(coverage.complete_buckets(merged, 0, 10 * MIN, MIN))
    # Minute 0 straddles the first stretch's start: it carries; minute 5 starts the second on the grid.
    assert got == [
        (MIN, 16_000_000, 0),
        (2 * MIN, 16_000_000, 0),
        (5 * MIN, 5 * MIN, 5 * MIN),
        (6 * MIN, 5 * MIN, 5 * MIN),
    ]


def test_a_candle_both_stretches_reach_into_does_not_carry() -> None:
    # Lost at 02:20, back at 02:40: minute 2 may hold a trade after the loss, so it carries nothing.
    merged = [(0, 2 * MIN + 20_000_000), (2 * MIN + 40_000_000, 6 * MIN)]
    assert coverage.carriers(merged, MIN) == [0, 3 * MIN]


def test_dump_span_reads_the_day_or_month_a_binance_file_name_holds() -> None:
    day = coverage.dump_span("BTCUSDT-aggTrades-2025-01-31.zip")
    assert day == (to_us(datetime(2025, 1, 31, tzinfo=UTC)), to_us(datetime(2025, 2, 1, tzinfo=UTC)))
    month = coverage.dump_span("XRPETH-trades-2019-12.csv")
    assert month == (
        to_us(datetime(2019, 12, 1, tzinfo=UTC)),
        to_us(datetime(2020, 1, 1, tzinfo=UTC)),
    )
    assert coverage.dump_span("capture-2025-01-31.jsonl") is None
    assert coverage.dump_span("BTCUSDT-1m-2025-01-31.zip") is None  # klines hold no trades


def test_a_recording_covers_its_dump_day_or_its_first_to_last_trade() -> None:
    spans = {("binance", "XRPETH"): (100, 900), ("binance", "BTCUSDT"): (300, 300)}
    plain = coverage.recording_intervals(spans, "", "replay:capture.jsonl")
    assert [(i.symbol, i.started_us, i.ended_us, i.kind) for i in plain] == [
        ("BTCUSDT", 300, 301, "replay"),
        ("XRPETH", 100, 901, "replay"),
    ]
    day = coverage.dump_span("XRPETH-aggTrades-2019-10-11.csv")
    assert day is not None
    inside = {("binance", "XRPETH"): (day[0] + 5, day[1] - 5)}
    (dumped,) = coverage.recording_intervals(inside, "XRPETH-aggTrades-2019-10-11.csv", "replay:x")
    assert (dumped.started_us, dumped.ended_us) == day


def test_an_interval_refuses_an_unknown_kind_and_a_negative_length() -> None:
    with pytest.raises(ValueError, match="coverage kind 'guess'"):
        Interval("binance", "BTCUSDT", "x", "guess", 0, 1)
    with pytest.raises(ValueError, match="ends before it starts"):
        Interval("binance", "BTCUSDT", "x", "live", 2, 1)


def test_live_sessions_write_open_sessions_to_now_and_closed_ones_once() -> None:
    sessions = LiveSessions("binance@host")
    sessions.connected("binance", ["BTCUSDT"], 10)
    sessions.connected("binance", ["BTCUSDT"], 15)  # already open: the session keeps its start
    assert [(r.started_us, r.ended_us) for r in sessions.rows(20)] == [(10, 20)]
    sessions.lost("binance", ["BTCUSDT"], 25)
    closed = sessions.rows(30)
    assert [(r.started_us, r.ended_us) for r in closed] == [(10, 25)]
    assert sessions.rows(40) == []  # written once
    sessions.requeue(closed)  # the write failed: kept for the next one
    assert [(r.started_us, r.ended_us) for r in sessions.rows(50)] == [(10, 25)]


# --- the property: complete exactly when covered, quiet only inside coverage ----------------------------


def spans_strategy() -> st.SearchStrategy[list[tuple[int, int]]]:
    """Up to four covered intervals inside the window, at any microsecond (seconds here, to shrink well)."""
    bound = st.integers(min_value=0, max_value=WINDOW * 60)
    return st.lists(st.tuples(bound, bound).map(sorted), min_size=0, max_size=4).map(
        lambda pairs: [(BASE_US + a * 1_000_000, BASE_US + b * 1_000_000) for a, b in pairs if b > a]
    )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spans_strategy(), st.data())
def test_a_candle_is_complete_exactly_when_covered_and_quiet_only_inside_coverage(spark, spans, data) -> None:
    merged = coverage.merge(spans)
    # Trades only where something watched: a few per covered interval, anywhere inside it.
    trades = []
    for start, end in merged:
        times = data.draw(st.lists(st.integers(min_value=start, max_value=end - 1), max_size=4), label="times")
        trades += [trade(len(trades) + 1, str(100 + len(trades)), "1", t) for t in sorted(times)]
    trades.sort(key=lambda t: t.trade_time_us)
    trades = [trade(i + 1, str(t.price), "1", t.trade_time_us) for i, t in enumerate(trades)]  # ids rise with time
    market = ("binance", "BTCUSDT")
    built = T.candles(trades_df(spark, trades), "1 minute")
    end = BASE + timedelta(minutes=WINDOW)
    got = collect(T.fill_empty_intervals(built, "1 minute", {market: merged}, BASE, end))

    traded = {t.trade_time_us - t.trade_time_us % MIN for t in trades}
    for (_, _, open_time), candle in got.items():
        open_us = to_us(open_time)
        covered = any(a <= open_us and open_us + MIN <= b for a, b in merged)
        assert candle["coverage"] == ("complete" if covered else "partial"), (open_time, merged)
        if candle["trades"] == 0:
            assert covered, f"a quiet candle at {open_time} outside coverage {merged}"
            # It repeats the last close before it, which lies in the same covered stretch.
            before = [t for t in trades if t.trade_time_us < open_us]
            assert before and candle["close"] == before[-1].price
            stretch = coverage.covering(merged, open_us, open_us + MIN)
            assert stretch is not None and before[-1].trade_time_us >= stretch[0] - stretch[0] % MIN
    # Every minute with trades has its candle; no candle where there is neither a trade nor coverage.
    opens = {to_us(t) for (_, _, t) in got}
    assert traded <= opens
    for open_us in opens - traded:
        assert coverage.covering(merged, open_us, open_us + MIN) is not None


def test_a_quiet_market_watched_throughout_keeps_its_quiet_candles(spark) -> None:
    # One trade, then eleven minutes of nothing, all of it watched: eleven quiet candles at its price.
    trades = [trade(1, "0.0191", "5", BASE_US + 5_000_000)]
    watched = {("binance", "BTCUSDT"): [(BASE_US, BASE_US + WINDOW * MIN)]}
    built = T.candles(trades_df(spark, trades), "1 minute")
    got = collect(T.fill_empty_intervals(built, "1 minute", watched, BASE, BASE + timedelta(minutes=WINDOW)))
    quiet = [c for c in got.values() if c["trades"] == 0]
    assert len(quiet) == WINDOW - 1 and {c["close"] for c in quiet} == {D("0.0191")}
    assert {c["coverage"] for c in got.values()} == {"complete"}


def test_a_recording_whose_ids_skip_covers_nothing_between_the_trades_around_the_skip() -> None:
    holes = coverage.IdHoles()
    market = ("binance", "BTCUSDT")
    for trade_id, t in ((1, 100), (2, 200), (5, 500), (6, 600), (4, 450)):  # 3 and 4 missing; 4 late
        holes.add(market, trade_id, t)
    assert holes.holes == {market: [(200, 501)]}  # the late 4 cuts nothing more
    (before, after) = coverage.recording_intervals({market: (100, 600)}, "", "replay:x", holes.holes)
    assert (before.started_us, before.ended_us, after.started_us, after.ended_us) == (100, 200, 501, 601)


def test_a_gap_filled_whole_covers_from_the_trade_before_it_to_the_one_after() -> None:
    assert coverage.gap_fill_span(100, [150, 170], 200) == (100, 201)
    assert coverage.gap_fill_span(None, [150, 170], None) == (150, 171)  # no neighbours returned
    assert coverage.gap_fill_span(None, [], 200) is None
    assert coverage.subtract([(0, 10)], [(2, 3), (5, 12)]) == [(0, 2), (3, 5)]
