"""The gap tracker and the producer pipeline on in-memory sinks: dedupe, holes, gaps, backfill."""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from candlelake.coverage import Interval
from candlelake.ingest.counters import Counters, DeliveryReports
from candlelake.ingest.gaps import GapTracker
from candlelake.ingest.pipeline import Pipeline
from candlelake.price import PricePoint
from candlelake.sources.events import Disconnect, Reconnected, TradeIdMark
from candlelake.sources.fields import Rejection
from candlelake.trade import Trade

pytestmark = pytest.mark.unit


def trade(trade_id: int, symbol: str = "BTCUSDT", exchange: str = "binance") -> Trade:
    return Trade(
        exchange, symbol, trade_id, Decimal("100.5"), Decimal("0.1"), 1_700_000_000_000_000 + trade_id, True, 0, "test"
    )


class ListSink:
    def __init__(self) -> None:
        self.items: list[object] = []

    def send(self, item: object) -> None:
        self.items.append(item)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeHistory:
    """The exchange's REST history: every id in `have`."""

    def __init__(self, have: set[int]) -> None:
        self.have = have
        self.calls: list[tuple[str, int, int]] = []

    def trades_between(self, symbol: str, first_id: int, last_id: int) -> Iterator[Trade | Rejection]:
        self.calls.append((symbol, first_id, last_id))
        for trade_id in range(first_id, last_id + 1):
            if trade_id in self.have:
                yield trade(trade_id, symbol)


def make_pipeline(
    history: FakeHistory | None = None, grace_s: float = 5.0
) -> tuple[Pipeline, ListSink, ListSink, Clock]:
    clock = Clock()
    trades, dead = ListSink(), ListSink()
    counters = Counters()
    pipeline = Pipeline(
        counters,
        trades,
        dead,
        deliveries=DeliveryReports(counters, keep_failures=True),
        histories={"binance": history} if history else {},
        grace_s=grace_s,
        clock=clock,
    )
    return pipeline, trades, dead, clock


def test_tracker_reports_new_duplicate_and_late_ids() -> None:
    tracker = GapTracker(grace_s=5)
    assert tracker.observe("binance", "X", 10, 0.0)
    assert tracker.observe("binance", "X", 11, 0.0)
    assert not tracker.observe("binance", "X", 11, 0.0)  # duplicate
    assert tracker.observe("binance", "X", 15, 0.0)  # hole 12..14
    assert [(h.first, h.last) for h in tracker.open_holes("binance", "X")] == [(12, 14)]
    assert tracker.observe("binance", "X", 13, 1.0)  # late, fills the middle
    assert [(h.first, h.last) for h in tracker.open_holes("binance", "X")] == [(12, 12), (14, 14)]
    assert not tracker.observe("binance", "X", 13, 1.0)
    assert tracker.due(4.9) == []
    assert [(h.first, h.last) for _, _, h in tracker.due(5.0)] == [(12, 12), (14, 14)]


def test_tracker_mark_opens_a_hole_at_the_end_of_a_stream() -> None:
    tracker = GapTracker()
    tracker.observe("coinbase", "BTC-USD", 100, 0.0)
    tracker.mark("coinbase", "BTC-USD", 103, 0.0)
    assert [(h.first, h.last) for h in tracker.open_holes("coinbase", "BTC-USD")] == [(101, 103)]
    assert tracker.observe("coinbase", "BTC-USD", 101, 0.0)
    assert not tracker.observe("coinbase", "BTC-USD", 100, 0.0)


def test_seeded_tracker_sees_ids_missed_while_down() -> None:
    tracker = GapTracker()
    tracker.seed("binance", "X", 50)
    assert not tracker.observe("binance", "X", 50, 0.0)  # sent by the previous run
    assert tracker.observe("binance", "X", 60, 0.0)
    assert [(h.first, h.last) for h in tracker.open_holes("binance", "X")] == [(51, 59)]


def test_forget_drops_only_the_given_range() -> None:
    tracker = GapTracker()
    tracker.observe("b", "X", 1, 0.0)
    tracker.observe("b", "X", 20, 0.0)  # hole 2..19
    assert tracker.forget("b", "X", 5, 9) == 5
    assert [(h.first, h.last) for h in tracker.open_holes("b", "X")] == [(2, 4), (10, 19)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=200), st.randoms(use_true_random=False))
def test_any_order_and_duplication_gives_each_id_once(ids: list[int], rnd: random.Random) -> None:
    """Whatever order and repetition the ids come in, each is new exactly once; holes are what is unseen."""
    tracker = GapTracker()
    shuffled = ids + rnd.sample(ids, k=len(ids) // 2)
    rnd.shuffle(shuffled)
    new = [i for i in shuffled if tracker.observe("b", "X", i, 0.0)]
    first = shuffled[0]
    # An id below the first one seen cannot be told from one sent before we started: it is not "new".
    expected = {i for i in ids if i >= first}
    assert sorted(new) == sorted(expected)
    holes = {i for h in tracker.open_holes("b", "X") for i in range(h.first, h.last + 1)}
    assert holes == set(range(first, max(ids) + 1)) - expected


def test_pipeline_sends_new_trades_once_and_dead_letters_rejections() -> None:
    pipeline, trades, dead, _ = make_pipeline()
    for trade_id in (1, 2, 2, 3, 1):
        pipeline.emit(trade(trade_id))
    rejection = Rejection('{"p":"NaN"}', "not-finite", "price 'NaN' is not a finite number", "binance-ws")
    pipeline.emit(rejection)
    assert [t.trade_id for t in trades.items] == [1, 2, 3]  # type: ignore[attr-defined]
    assert dead.items == [rejection]
    snap = pipeline.counters.snapshot()
    assert (snap["received"], snap["duplicates"], snap["rejected"]) == (5, 2, 1)


def test_pipeline_declares_a_gap_after_the_grace_and_backfills_exactly_it() -> None:
    history = FakeHistory(set(range(1, 100)))
    pipeline, trades, _, clock = make_pipeline(history)
    pipeline.emit(Disconnect("binance", ("BTCUSDT",), 1, 2, "server closed the connection (code 1006)"))
    for trade_id in (1, 2, 3, 9, 10):
        pipeline.emit(trade(trade_id))
    clock.now = 4.0
    pipeline.maintain()
    assert pipeline.declared == []  # still inside the grace period
    pipeline.emit(trade(5))  # arrives late: fills its id
    clock.now = 6.0
    pipeline.maintain()
    assert [(g.first_id, g.last_id) for g in pipeline.declared] == [(4, 4), (6, 8)]
    assert all("1006" in g.cause for g in pipeline.declared)
    pipeline.emit(trade(7))  # the stream delivers one more after the gap was declared
    for _ in range(2):
        gap = pipeline.next_backfill(0.1)
        assert gap is not None
        pipeline.backfill(gap)
    sent = [t.trade_id for t in trades.items]  # type: ignore[attr-defined]
    assert sorted(sent) == list(range(1, 11))  # every id once: no hole, no double
    # Each gap with one id either side: their times bound the coverage the fill gives (nothing sent from them).
    assert history.calls == [("BTCUSDT", 3, 5), ("BTCUSDT", 5, 9)]
    assert pipeline.counters.backfilled == 3  # 4, 6 and 8; 7 came from the stream
    assert pipeline.tracker.open_holes("binance", "BTCUSDT") == []


def test_backfill_counts_ids_the_exchange_does_not_have() -> None:
    history = FakeHistory({1, 2, 3, 5})
    pipeline, _, _, _ = make_pipeline(history, grace_s=0)
    for trade_id in (1, 6):
        pipeline.emit(trade(trade_id))
    pipeline.maintain()
    gap = pipeline.next_backfill(0.1)
    assert gap is not None
    assert pipeline.backfill(gap) == (3, 1)  # 2, 3, 5 sent; 4 not found
    assert pipeline.tracker.open_holes("binance", "BTCUSDT") == []


def test_pipeline_counts_reconnects_and_prices_without_trades() -> None:
    prices = ListSink()
    pipeline, trades, _, _ = make_pipeline()
    pipeline.prices = prices
    pipeline.emit(Reconnected("binance", "ws://x", first=True))
    pipeline.emit(Reconnected("binance", "ws://x", first=False))
    point = PricePoint("coingecko", "bitcoin-usd", Decimal("67187.123456789012345678"), 1, "coingecko")
    pipeline.emit(point)
    pipeline.emit(TradeIdMark("coinbase", "BTC-USD", 5))
    snap = pipeline.counters.snapshot()
    assert (snap["reconnects"], snap["prices"]) == (1, 1)
    assert snap["last_price"] == {"coingecko:bitcoin-usd": "67187.123456789012345678"}
    assert prices.items == [point] and trades.items == []


def test_delivery_failure_becomes_a_gap_for_the_backfill() -> None:
    history = FakeHistory({7})
    pipeline, trades, _, _ = make_pipeline(history)
    assert pipeline.deliveries is not None
    pipeline.deliveries.failed(trade(7), "KafkaTimeoutError: expired")
    assert pipeline.counters.delivery_failures == 1

    class Ledger:
        def __init__(self) -> None:
            self.rows: list[tuple[object, ...]] = []

        def record_ids(self, *args: object) -> int:
            self.rows.append(args)
            return 42

        def close_connection(self) -> None:
            pass

    ledger = Ledger()
    pipeline.ledger = ledger  # type: ignore[assignment]
    pipeline.maintain()
    assert ledger.rows and ledger.rows[0][-1] == "delivery"
    gap = pipeline.next_backfill(0.1)
    assert gap is not None and (gap.first_id, gap.last_id, gap.gap_id) == (7, 7, 42)
    # The trade passed the tracker when it first came; the backfill must send it again anyway.
    assert pipeline.backfill(gap) == (1, 0)
    assert [t.trade_id for t in trades.items] == [7]  # type: ignore[attr-defined]


# --- coverage: the feed's sessions ----------------------------------------------------------------


class CoverageList:
    """A coverage store in memory; fails while `down` (PostgreSQL unreachable)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str, int], Interval] = {}
        self.down = False

    def write(self, intervals: list[Interval]) -> None:
        if self.down:
            raise OSError("connection refused\nmore detail")
        for i in intervals:  # the table's upsert: one row per session start, its end the latest word
            self.rows[(i.exchange, i.symbol, i.source, i.started_us)] = i

    def spans(self, symbol: str) -> list[tuple[int, int]]:
        return sorted((i.started_us, i.ended_us) for i in self.rows.values() if i.symbol == symbol)


def covered_pipeline(history: FakeHistory | None = None) -> tuple[Pipeline, CoverageList, list[int], Clock]:
    wall = [1_000_000]
    clock = Clock()
    store = CoverageList()
    pipeline = Pipeline(
        Counters(),
        ListSink(),
        ListSink(),
        histories={"binance": history} if history else {},
        grace_s=0,
        clock=clock,
        source="binance@test",
        coverage=store,
        coverage_every_s=5.0,
        now_us=lambda: wall[0],
    )
    return pipeline, store, wall, clock


def test_a_connected_feed_covers_its_markets_until_the_connection_is_lost() -> None:
    pipeline, store, wall, clock = covered_pipeline()
    pipeline.emit(Reconnected("binance", "ws://x", True, ("BTCUSDT", "ETHUSDT")))
    wall[0] = 4_000_000
    pipeline.maintain()  # the first beat writes the open sessions up to now
    assert store.spans("BTCUSDT") == store.spans("ETHUSDT") == [(1_000_000, 4_000_000)]
    # Lost at 6 s, connected again at 186 s: the three minutes between are not covered.
    wall[0] = 186_000_000
    pipeline.emit(Disconnect("binance", ("BTCUSDT", "ETHUSDT"), 6_000_000, 186_000_000, "code 1006"))
    pipeline.emit(Reconnected("binance", "ws://x", False, ("BTCUSDT", "ETHUSDT")))
    clock.now = 3.0  # not yet due
    pipeline.maintain()
    assert store.spans("BTCUSDT") == [(1_000_000, 4_000_000)]
    clock.now = 5.0
    wall[0] = 200_000_000
    pipeline.maintain()
    assert store.spans("BTCUSDT") == [(1_000_000, 6_000_000), (186_000_000, 200_000_000)]
    wall[0] = 210_000_000
    pipeline.close_coverage()  # the producer stops: the open session ends now
    assert store.spans("ETHUSDT") == [(1_000_000, 6_000_000), (186_000_000, 210_000_000)]
    assert {i.kind for i in store.rows.values()} == {"live"} and {i.source for i in store.rows.values()} == {
        "binance@test"
    }


def test_an_overlapping_rotation_loses_no_coverage() -> None:
    pipeline, store, wall, _ = covered_pipeline()
    pipeline.emit(Reconnected("binance", "ws://x", True, ("BTCUSDT",)))
    wall[0] = 50_000_000
    pipeline.emit(Disconnect("binance", ("BTCUSDT",), 50_000_000, 50_000_000, "planned rotation"))
    pipeline.emit(Reconnected("binance", "ws://x", False, ("BTCUSDT",)))
    wall[0] = 90_000_000
    pipeline.close_coverage()
    assert store.spans("BTCUSDT") == [(1_000_000, 90_000_000)]


def test_coverage_that_cannot_be_written_is_kept_and_written_later() -> None:
    pipeline, store, wall, clock = covered_pipeline()
    pipeline.emit(Reconnected("binance", "ws://x", True, ("BTCUSDT",)))
    pipeline.emit(Disconnect("binance", ("BTCUSDT",), 2_000_000, 9_000_000, "code 1006"))
    store.down = True
    pipeline.maintain()
    assert store.rows == {}
    store.down, clock.now, wall[0] = False, 5.0, 12_000_000
    pipeline.emit(Reconnected("binance", "ws://x", False, ("BTCUSDT",)))
    pipeline.maintain()
    # The lost session, and the new one, open for no time yet (extended by the next writes).
    assert store.spans("BTCUSDT") == [(1_000_000, 2_000_000), (12_000_000, 12_000_000)]


def test_a_gap_backfilled_whole_covers_the_time_from_the_trade_before_it_to_the_one_after() -> None:
    pipeline, store, _, _ = covered_pipeline(FakeHistory({1, 2, 3, 4, 5, 6}))
    for trade_id in (1, 6):
        pipeline.emit(trade(trade_id))
    pipeline.maintain()
    gap = pipeline.next_backfill(0.1)
    assert gap is not None and pipeline.backfill(gap) == (4, 0)
    pipeline.write_coverage()
    (filled,) = store.rows.values()
    t0 = 1_700_000_000_000_000
    assert (filled.kind, filled.source, filled.started_us, filled.ended_us) == (
        "backfill",
        "binance@test:backfill",
        t0 + 1,
        t0 + 6 + 1,
    )


def test_a_gap_the_exchange_cannot_fill_covers_nothing() -> None:
    pipeline, store, _, _ = covered_pipeline(FakeHistory({2, 3, 5}))
    for trade_id in (1, 6):
        pipeline.emit(trade(trade_id))
    pipeline.maintain()
    gap = pipeline.next_backfill(0.1)
    assert gap is not None and pipeline.backfill(gap) == (3, 1)
    pipeline.write_coverage()
    assert store.rows == {}


def market_trade(trade_id: int, at_us: int) -> Trade:
    return Trade("binance", "BTCUSDT", trade_id, Decimal("100.5"), Decimal("0.1"), at_us, True, at_us, "test")


def across_a_disconnect(next_id: int) -> CoverageList:
    """Trade 41 at 3 s; lost at 6 s, back at 186 s; then trade `next_id` at 190 s; stopped at 200 s."""
    pipeline, store, wall, _ = covered_pipeline()
    pipeline.emit(Reconnected("binance", "ws://x", True, ("BTCUSDT",)))
    pipeline.emit(market_trade(41, 3_000_000))
    wall[0] = 186_000_000
    pipeline.emit(Disconnect("binance", ("BTCUSDT",), 6_000_000, 186_000_000, "code 1006"))
    pipeline.emit(Reconnected("binance", "ws://x", False, ("BTCUSDT",)))
    pipeline.emit(market_trade(next_id, 190_000_000))
    wall[0] = 200_000_000
    pipeline.close_coverage()
    return store


def test_contiguous_ids_across_a_disconnect_prove_it_quiet_and_cover_it() -> None:
    store = across_a_disconnect(42)  # the successor of 41: nothing traded in between
    assert coverage_spans(store) == [(1_000_000, 6_000_000), (3_000_000, 190_000_001), (186_000_000, 200_000_000)]
    assert {i.source for i in store.rows.values()} == {"binance@test", "binance@test:ids"}


def test_an_id_skipped_across_a_disconnect_proves_nothing() -> None:
    store = across_a_disconnect(44)  # 42 and 43 traded while nobody watched: a gap to fill
    assert coverage_spans(store) == [(1_000_000, 6_000_000), (186_000_000, 200_000_000)]


def coverage_spans(store: CoverageList) -> list[tuple[int, int]]:
    return sorted((i.started_us, i.ended_us) for i in store.rows.values())
