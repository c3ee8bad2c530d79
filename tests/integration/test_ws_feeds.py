"""The WebSocket feeds against fake exchange servers on loopback replaying recorded real frames.

Each test plays a recording live (sped up), lets the fake server misbehave in one way, and checks
the feed's events against the recording and the server's own log of what it sent on which
connection: which trades arrived, which were missed and when, and what the feed said about it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from candlelake.sources.binance_ws import BinanceTradeFeed
from candlelake.sources.coinbase_ws import CoinbaseMatchesFeed
from candlelake.sources.events import Disconnect, Event, Reconnected, TradeIdMark
from candlelake.sources.fields import Rejection
from candlelake.sources.websocket_feed import FeedSettings
from candlelake.trade import Trade
from tests.fakes.binance_ws import FakeBinanceWs
from tests.fakes.coinbase_ws import FakeCoinbaseWs
from tests.fakes.recording import BINANCE_SPOT, BINANCE_USDM, COINBASE, LiveReplay, Recording, dumps
from tests.fakes.ws_server import FakeExchangeWs, ServedConnection
from tests.support.waiting import wait_until, wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SPOT_SYMBOLS = ["BTCUSDT", "ETHUSDT", "DOTUSDT"]
USDM_SYMBOLS = ["NEOUSDT", "SANDUSDT", "BATUSDT"]  # 3 of the recording's 5: the others must not arrive
COINBASE_PRODUCTS = ["SKL-USD", "DASH-BTC", "BAND-BTC", "NMR-EUR", "CRV-EUR"]
# Speeds that play each recording in about 2 s.
SPOT_SPEED, COINBASE_SPEED = 45.0, 18.0
LEAD_S = 0.5  # the replay starts this long after the test, so the first connection sees every frame
SLACK_US = 150_000  # timing tolerance between the server's and the client's view of an instant
FAST = FeedSettings(backoff_initial_s=0.2, backoff_max_s=0.5, ping_interval_s=None, watchdog_s=5.0, lifetime_s=None)


def live(path: Path, speed: float) -> LiveReplay:
    return LiveReplay(Recording.load(path), datetime.now(UTC) + timedelta(seconds=LEAD_S), speed)


def us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


class Collector:
    """The `emit` given to a feed: keeps each event with the time it was emitted."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.at_us: list[int] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.at_us.append(time.time_ns() // 1000)

    def of(self, kind: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    def times_of(self, kind: type) -> list[int]:
        return [at for event, at in zip(self.events, self.at_us, strict=True) if isinstance(event, kind)]

    @property
    def trades(self) -> list[Trade]:
        return self.of(Trade)

    def keys(self) -> list[tuple[str, int]]:
        return [(trade.symbol, trade.trade_id) for trade in self.trades]


Scenario = Callable[[Collector], Awaitable[None]]


def run_feed(feed: BinanceTradeFeed | CoinbaseMatchesFeed, scenario: Scenario) -> tuple[Collector, float]:
    """Run `feed` while `scenario` runs, then stop it; returns the events and how long stopping took."""

    async def main() -> tuple[Collector, float]:
        events, stop = Collector(), asyncio.Event()
        task = asyncio.ensure_future(feed.run(events, stop))
        try:
            await scenario(events)
        finally:
            stop.set()
            started = time.monotonic()
            await asyncio.wait_for(task, 5)
        return events, time.monotonic() - started

    return asyncio.run(main())


async def replay_over(replay: LiveReplay) -> None:
    """Until the recording has played out: it is sent at its recorded pace, so this is the wall clock's
    time (and 0.3 s for the last frames to be read), not a condition to poll."""
    await asyncio.sleep(max(0.0, (replay.end - datetime.now(UTC)).total_seconds()) + 0.3)


# What the recordings hold -----------------------------------------------------------------------------


def binance_expected(replay: LiveReplay, symbols: list[str]) -> list[tuple[str, int, Decimal, Decimal, int, bool]]:
    """Every trade of the symbols, in recorded order, with the replay's time shift, from the raw fields."""
    shift_ms = replay.shift_us // 1000
    rows = []
    for frame in replay.recording.frames:
        data = frame.payload["data"]
        if data["s"] in symbols:
            time_us = (data["T"] + shift_ms) * 1000
            rows.append((data["s"], data["a"], Decimal(data["p"]), Decimal(data["q"]), time_us, data["m"]))
    return rows


def coinbase_expected(replay: LiveReplay, products: list[str]) -> list[tuple[str, int, Decimal, Decimal, int, bool]]:
    rows = []
    for frame in replay.recording.frames:
        p = frame.payload
        if p["type"] in ("match", "last_match") and p["product_id"] in products:
            time_us = us(datetime.fromisoformat(p["time"])) + replay.shift_us
            rows.append(
                (p["product_id"], p["trade_id"], Decimal(p["price"]), Decimal(p["size"]), time_us, p["side"] == "buy")
            )
    return rows


def frame_key(replay: LiveReplay, index: int) -> tuple[str, int]:
    """(symbol, trade id) of a trade frame of either exchange."""
    payload = replay.recording.frames[index].payload
    if "data" in payload:
        return payload["data"]["s"], payload["data"]["a"]
    return payload["product_id"], payload["trade_id"]


def sent_keys(replay: LiveReplay, connection: ServedConnection) -> list[tuple[str, int]]:
    return [frame_key(replay, index) for index in connection.sent]


def as_rows(trades: list[Trade]) -> list[tuple[str, int, Decimal, Decimal, int, bool]]:
    return [(t.symbol, t.trade_id, t.price, t.qty, t.trade_time_us, t.is_buyer_maker) for t in trades]


def due_us(replay: LiveReplay) -> dict[tuple[str, int], int]:
    """When each trade frame happens in the replay (epoch µs, the client's clock)."""
    keys = {}
    for index, frame in enumerate(replay.recording.frames):
        if "data" in frame.payload or frame.payload.get("type") in ("match", "last_match"):
            keys[frame_key(replay, index)] = us(replay.due_at(index))
    return keys


def frames_on(fake: FakeExchangeWs, number: int) -> int:
    """Frames sent so far on the server's connection `number` (1 for the first), 0 before it opens."""
    sent = fake.frames_sent
    return sent[number - 1] if len(sent) >= number else 0


def settled(fake: FakeExchangeWs) -> list[ServedConnection]:
    """The server's connection log once it has seen every connection close."""
    wait_until(
        lambda: not fake.open_connections, timeout=3, interval=0.02, what="the server to see every connection close"
    )
    return fake.connections


# Nothing goes wrong ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exchange", "path", "symbols", "speed"),
    [("binance", BINANCE_SPOT, SPOT_SYMBOLS, SPOT_SPEED), ("binance-usdm", BINANCE_USDM, USDM_SYMBOLS, 60.0)],
)
def test_binance_delivers_every_trade_in_order(exchange: Any, path: Path, symbols: list[str], speed: float) -> None:
    replay = live(path, speed)
    with FakeBinanceWs(replay) as fake:
        feed = BinanceTradeFeed(exchange, symbols, fake.url, settings=FAST)
        events, _ = run_feed(feed, lambda _events: replay_over(replay))
        connections = settled(fake)

    expected = binance_expected(replay, symbols)
    assert as_rows(events.trades) == expected
    assert {t.source for t in events.trades} == {"binance-ws" if exchange == "binance" else "binance-usdm-ws"}
    assert {t.exchange for t in events.trades} == {exchange}
    assert events.of(Reconnected) == [Reconnected(exchange, feed.url, True, feed.symbols)]
    assert isinstance(events.events[0], Reconnected)
    assert events.of(Disconnect) == [] and events.of(Rejection) == []
    assert [c.frames_sent for c in connections] == [len(expected)]


def test_coinbase_delivers_every_match_in_order() -> None:
    replay = live(COINBASE, COINBASE_SPEED)
    with FakeCoinbaseWs(replay) as fake:
        feed = CoinbaseMatchesFeed(COINBASE_PRODUCTS, fake.url, settings=FAST)
        events, _ = run_feed(feed, lambda _events: replay_over(replay))

    assert as_rows(events.trades) == coinbase_expected(replay, COINBASE_PRODUCTS)
    assert {t.source for t in events.trades} == {"coinbase-ws"}
    assert events.of(Reconnected) == [Reconnected("coinbase", fake.url, True, feed.product_ids)]
    assert events.of(Disconnect) == [] and events.of(Rejection) == []


# Connections that fail ----------------------------------------------------------------------------------


def test_hard_drop_reconnects_and_misses_exactly_the_disconnect(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    replay = live(BINANCE_SPOT, SPOT_SPEED)
    with FakeBinanceWs(replay) as fake:
        fake.drop_next_connection_after(400, refuse_s=0.4)
        feed = BinanceTradeFeed("binance", SPOT_SYMBOLS, fake.url, settings=FAST)
        events, _ = run_feed(feed, lambda _events: replay_over(replay))
        connections = settled(fake)
        refused = fake.refused

    first, second = connections
    assert (first.closed_by, first.frames_sent) == ("abort", 400)
    assert refused >= 1  # the client retried through the outage
    kinds = [type(e) for e in events.events if not isinstance(e, Trade)]
    assert kinds == [Reconnected, Disconnect, Reconnected]
    (gap,) = events.of(Disconnect)
    assert gap.cause.startswith("server closed the connection (code 1006")
    assert gap.symbols == tuple(SPOT_SYMBOLS)
    assert gap.ended_us - gap.started_us >= 400_000
    # The client got exactly what the server sent, connection after connection.
    assert events.keys() == sent_keys(replay, first) + sent_keys(replay, second)
    # What it missed is what happened while it had no connection: the gap the pipeline backfills.
    expected = [(row[0], row[1]) for row in binance_expected(replay, SPOT_SYMBOLS)]
    received, due = set(events.keys()), due_us(replay)
    missed = [key for key in expected if key not in received]
    assert missed, "the outage must cost trades"
    assert all(gap.started_us - SLACK_US <= due[key] <= gap.ended_us + SLACK_US for key in missed)
    outside = [k for k in expected if not gap.started_us - SLACK_US <= due[k] <= gap.ended_us + SLACK_US]
    assert set(outside) <= received
    # Expected network errors are logged in one line each, without a traceback.
    feed_logs = [r for r in caplog.records if r.name.startswith("candlelake") and r.levelno >= logging.WARNING]
    assert feed_logs and not any(r.exc_info for r in feed_logs)
    assert any("cannot connect" in r.getMessage() and "HTTP 503" in r.getMessage() for r in feed_logs)


def test_silent_stall_trips_the_watchdog() -> None:
    replay = live(BINANCE_SPOT, 20.0)
    settings = FeedSettings(watchdog_s=0.8, backoff_initial_s=0.1, backoff_max_s=0.2, ping_interval_s=None)
    with FakeBinanceWs(replay, ping_interval_s=None) as fake:
        fake.stall_next_connection_after(200, seconds=10)
        feed = BinanceTradeFeed("binance", SPOT_SYMBOLS, fake.url, settings=settings)

        async def scenario(_events: Collector) -> None:
            await wait_until_async(lambda: frames_on(fake, 2) >= 100, 8, what="100 frames on the second connection")

        events, _ = run_feed(feed, scenario)
        first, second = fake.connections[:2]

    assert first.frames_sent == 200
    (gap,) = events.of(Disconnect)
    assert gap.cause == "no message for 0.8 s (watchdog)"
    # The gap starts at the last message received, and the new connection follows within the watchdog
    # time plus the longest backoff plus slack.
    trades_before = events.keys().index(sent_keys(replay, first)[-1])
    assert abs(gap.started_us - events.times_of(Trade)[trades_before]) < 50_000
    reconnected_us = events.times_of(Reconnected)[1]
    assert 800_000 <= reconnected_us - gap.started_us <= 800_000 + 200_000 + SLACK_US
    assert second.opened_us - gap.started_us <= 800_000 + 200_000 + SLACK_US
    assert events.keys() == sent_keys(replay, first) + sent_keys(replay, second)[: len(events.trades) - 200]


def test_client_keepalive_detects_a_stall_before_the_watchdog() -> None:
    replay = live(BINANCE_SPOT, 20.0)
    settings = FeedSettings(watchdog_s=5.0, ping_interval_s=0.3, ping_timeout_s=0.3, backoff_initial_s=0.1)
    with FakeBinanceWs(replay, ping_interval_s=None) as fake:
        fake.stall_next_connection_after(200, seconds=10)
        feed = BinanceTradeFeed("binance", SPOT_SYMBOLS, fake.url, settings=settings)
        events, _ = run_feed(
            feed, lambda _events: wait_until_async(lambda: frames_on(fake, 2) >= 50, 5, what="a second connection")
        )

    (gap,) = events.of(Disconnect)
    assert gap.cause == "no pong to our keepalive ping (code 1011 keepalive ping timeout)"
    assert events.times_of(Reconnected)[1] - events.times_of(Trade)[199] < 2_000_000


def test_server_lifetime_cut_is_reported_and_reconnected() -> None:
    replay = live(BINANCE_SPOT, 20.0)
    with FakeBinanceWs(replay, lifetime_s=1.0) as fake:
        feed = BinanceTradeFeed("binance", SPOT_SYMBOLS, fake.url, settings=FAST)

        async def scenario(_events: Collector) -> None:
            await wait_until_async(lambda: len(fake.frames_sent) >= 2, 5, what="a second connection")
            fake.lifetime_s = None

        events, _ = run_feed(feed, scenario)
        connections = settled(fake)

    assert (connections[0].closed_by, connections[0].close_code) == ("server", 1001)
    gap = events.of(Disconnect)[0]
    assert gap.cause == "server closed the connection (code 1001 going away: connection lifetime reached)"
    assert events.of(Reconnected)[1].first is False


# Planned rotations ------------------------------------------------------------------------------------------


def test_planned_rotation_overlaps_without_a_hole(capsys: pytest.CaptureFixture[str]) -> None:
    replay = live(BINANCE_SPOT, SPOT_SPEED)
    settings = FeedSettings(lifetime_s=0.7, overlap_s=0.2, ping_interval_s=None, backoff_initial_s=0.2)
    with FakeBinanceWs(replay) as fake:
        feed = BinanceTradeFeed("binance", SPOT_SYMBOLS, fake.url, settings=settings)
        events, _ = run_feed(feed, lambda _events: replay_over(replay))
        connections = settled(fake)

    assert len(connections) >= 3
    expected = [(row[0], row[1]) for row in binance_expected(replay, SPOT_SYMBOLS)]
    counts = Counter(events.keys())
    assert set(counts) == set(expected), "the union of all connections' trades has a hole"
    # A trade arrives at most once per connection that sent it; twice only if two connections did,
    # which happens only while a new connection overlaps the old one.
    senders = Counter(key for c in connections for key in sent_keys(replay, c))
    assert all(1 <= counts[key] <= senders[key] for key in counts)
    duplicates = [key for key, n in counts.items() if n > 1]
    assert duplicates, "no overlap happened"
    windows = [(new.opened_us, old.closed_us or 0) for old, new in itertools.pairwise(connections)]
    due = due_us(replay)
    assert all(any(start - SLACK_US <= due[key] <= end + SLACK_US for start, end in windows) for key in duplicates)
    for old, new in itertools.pairwise(connections):
        assert old.closed_by == "client" and new.opened_us < (old.closed_us or 0)
    rotations = events.of(Disconnect)
    assert len(rotations) == len(connections) - 1
    assert all(d.cause == "planned rotation" and d.started_us == d.ended_us for d in rotations)
    with capsys.disabled():
        print(
            f"\nrotation: {len(connections)} connections, {len(events.trades)} trades emitted for "
            f"{len(expected)} ids, {sum(counts.values()) - len(counts)} duplicates"
        )


@pytest.mark.parametrize(
    "notice", [None, dumps({"stream": "!shutdown", "data": {"e": "serverShutdown", "E": 1}})], ids=["api", "stream"]
)
def test_server_shutdown_notice_rotates_before_the_old_connection_closes(notice: str | None) -> None:
    replay = live(BINANCE_SPOT, SPOT_SPEED)
    settings = FeedSettings(overlap_s=0.3, ping_interval_s=None, lifetime_s=None, backoff_initial_s=0.2)
    with FakeBinanceWs(replay, shutdown_grace_s=3.0, shutdown_notice=notice) as fake:
        fake.send_shutdown_notice_after(300)
        feed = BinanceTradeFeed("binance", SPOT_SYMBOLS, fake.url, settings=settings)

        async def scenario(_events: Collector) -> None:
            await wait_until_async(lambda: frames_on(fake, 2) >= 300, 8, what="300 frames on the second connection")

        events, _ = run_feed(feed, scenario)
        first, second = settled(fake)[:2]

    assert first.closed_by == "client", "the client must close the old connection before the server does"
    assert second.opened_us < (first.closed_us or 0)
    (rotation,) = events.of(Disconnect)
    assert rotation.cause == "serverShutdown notice" and rotation.started_us == rotation.ended_us
    expected = [(row[0], row[1]) for row in binance_expected(replay, SPOT_SYMBOLS)]
    received = set(events.keys())
    last = max(expected.index(key) for key in received)
    assert set(expected[: last + 1]) <= received, "trades were missed across the rotation"


# Keepalive, bad messages, heartbeats, stopping ----------------------------------------------------------------


def test_server_pings_are_answered() -> None:
    replay = live(BINANCE_SPOT, 20.0)
    with FakeBinanceWs(replay, ping_interval_s=0.2, ping_timeout_s=0.5) as fake:
        feed = BinanceTradeFeed("binance", SPOT_SYMBOLS, fake.url, settings=FAST)
        # Deliberately 2.2 s of connection, whatever happens in it: the pings the server sends meanwhile.
        events, _ = run_feed(feed, lambda _events: asyncio.sleep(2.2))
        connections = settled(fake)

    assert len(connections) == 1 and connections[0].closed_by == "client"
    assert connections[0].pongs >= 8  # a ping every 0.2 s for 2.2 s, each answered within 0.5 s
    assert events.of(Disconnect) == []


def _bad_frames() -> list[tuple[str, str | None]]:
    """Raw frames and the rejection code each must produce (None: ignored)."""
    good = {"e": "aggTrade", "E": int(time.time() * 1000), "s": "BTCUSDT", "a": 1, "p": "58001.03", "q": "0.5",
            "f": 1, "l": 1, "T": int(time.time() * 1000), "m": True, "M": True}  # fmt: skip

    def wrap(data: dict[str, Any]) -> str:
        return dumps({"stream": f"{str(data['s']).lower()}@aggTrade", "data": data})

    return [
        ("this is not JSON {", "malformed"),
        ("[1, 2, 3]", "malformed"),
        (wrap({**good, "p": "NaN"}), "not-finite"),
        (wrap({**good, "q": "-0.5"}), "negative-qty"),
        (wrap({**good, "s": "XRPUSDT"}), "unknown-symbol"),
        (dumps({"result": None, "id": 1}), None),
        (dumps({"stream": "btcusdt@kline_1m", "data": {"e": "kline", "s": "BTCUSDT", "k": {}}}), None),
    ]


def test_malformed_frames_become_rejections_while_trades_flow() -> None:
    replay = live(BINANCE_SPOT, SPOT_SPEED)
    frames = _bad_frames()
    with FakeBinanceWs(replay) as fake:
        feed = BinanceTradeFeed("binance", SPOT_SYMBOLS, fake.url, settings=FAST)

        async def scenario(events: Collector) -> None:
            await wait_until_async(lambda: len(events.trades) >= 100, 5, what="100 trades")
            for text, _code in frames:
                assert fake.inject(text) == 1
            await replay_over(replay)

        events, _ = run_feed(feed, scenario)

    rejections = events.of(Rejection)
    assert [(r.raw, r.code) for r in rejections] == [(text, code) for text, code in frames if code]
    assert all(r.reason and r.source == "binance-ws" for r in rejections)
    assert as_rows(events.trades) == binance_expected(replay, SPOT_SYMBOLS)
    assert events.of(Disconnect) == []


def test_coinbase_heartbeats_mark_the_last_trade_ids() -> None:
    replay = live(COINBASE, COINBASE_SPEED)
    with FakeCoinbaseWs(replay, heartbeat_s=0.1) as fake:
        feed = CoinbaseMatchesFeed(COINBASE_PRODUCTS, fake.url, settings=FAST)
        events, _ = run_feed(feed, lambda _events: replay_over(replay))

    marks: list[TradeIdMark] = events.of(TradeIdMark)
    ids = {p: [row[1] for row in coinbase_expected(replay, [p])] for p in COINBASE_PRODUCTS}
    for product in COINBASE_PRODUCTS:
        seen = [m.last_trade_id for m in marks if m.symbol == product and m.exchange == "coinbase"]
        assert len(seen) >= 15, product  # one every 0.1 s for about 2.5 s
        assert seen == sorted(seen), f"{product} marks go back"
        assert set(seen) <= {ids[product][0] - 1, *ids[product]}
        assert seen[-1] == ids[product][-1]
    # Every trade a mark names was delivered too (by the end of the replay).
    received = set(events.keys())
    assert all((m.symbol, m.last_trade_id) in received for m in marks if m.last_trade_id in ids[m.symbol])


def test_coinbase_drop_is_reported_and_heartbeats_reveal_the_missed_matches() -> None:
    replay = live(COINBASE, COINBASE_SPEED)
    with FakeCoinbaseWs(replay, heartbeat_s=0.1) as fake:
        fake.drop_next_connection_after(20, refuse_s=0.6)
        feed = CoinbaseMatchesFeed(COINBASE_PRODUCTS, fake.url, settings=FAST)
        events, _ = run_feed(feed, lambda _events: replay_over(replay))
        first, second = settled(fake)

    (gap,) = events.of(Disconnect)
    assert gap.cause.startswith("server closed the connection (code 1006")
    expected = [(row[0], row[1]) for row in coinbase_expected(replay, COINBASE_PRODUCTS)]
    before, after_reconnect = sent_keys(replay, first), sent_keys(replay, second)
    received = events.keys()
    # Between the two streams, the exchange sends each product's last match (perhaps a missed one).
    assert received[: len(before)] == before and received[len(received) - len(after_reconnect) :] == after_reconnect
    last_matches = received[len(before) : len(received) - len(after_reconnect)]
    assert set(last_matches) <= set(expected)
    assert sorted({product for product, _ in last_matches}) == sorted(product for product, _ in last_matches)
    missed = [key for key in expected if key not in set(received)]
    assert missed, "the outage must cost matches"
    due = due_us(replay)
    assert all(gap.started_us - SLACK_US <= due[key] <= gap.ended_us + SLACK_US for key in missed)
    # The heartbeats after the reconnect name ids at or past every missed match of their product.
    reconnected_at = events.times_of(Reconnected)[1]
    after = [
        m
        for m, at in zip(events.events, events.at_us, strict=True)
        if isinstance(m, TradeIdMark) and at > reconnected_at
    ]
    for product, trade_id in missed:
        assert any(m.symbol == product and m.last_trade_id >= trade_id for m in after), (product, trade_id)


def test_coinbase_errors_and_bad_matches_become_rejections() -> None:
    replay = live(COINBASE, COINBASE_SPEED)
    bad_side = dumps({"type": "match", "trade_id": 1, "side": "up", "size": "1", "price": "1", "product_id": "SKL-USD",
                      "time": datetime.now(UTC).isoformat()})  # fmt: skip
    unknown = dumps({"type": "match", "trade_id": 1, "side": "buy", "size": "1", "price": "1", "product_id": "BTC-USD",
                     "time": datetime.now(UTC).isoformat()})  # fmt: skip
    with FakeCoinbaseWs(replay) as fake:
        feed = CoinbaseMatchesFeed([*COINBASE_PRODUCTS, "NOPE-USD"], fake.url, settings=FAST)

        async def scenario(events: Collector) -> None:
            await wait_until_async(lambda: len(events.trades) >= 5, 5, what="5 trades")
            fake.inject(bad_side)
            fake.inject(unknown)
            await replay_over(replay)

        events, _ = run_feed(feed, scenario)

    assert [r.code for r in events.of(Rejection)] == ["exchange-error", "wrong-type", "unknown-symbol"]
    assert "NOPE-USD is not a valid product" in events.of(Rejection)[0].reason
    assert as_rows(events.trades) == coinbase_expected(replay, COINBASE_PRODUCTS)


@pytest.mark.parametrize("state", ["streaming", "rotating", "reconnecting"])
def test_stop_returns_within_a_second_and_closes_connections(state: str, caplog: pytest.LogCaptureFixture) -> None:
    replay = live(BINANCE_SPOT, 20.0)
    settings = {
        "streaming": FAST,
        "rotating": FeedSettings(lifetime_s=0.5, overlap_s=30, ping_interval_s=None),
        "reconnecting": FeedSettings(backoff_initial_s=30, backoff_max_s=30, ping_interval_s=None),
    }[state]
    with FakeBinanceWs(replay) as fake:
        if state == "reconnecting":
            fake.drop_next_connection_after(50, refuse_s=60)  # the client is still retrying when stopped
        feed = BinanceTradeFeed("binance", SPOT_SYMBOLS, fake.url, settings=settings)

        async def scenario(events: Collector) -> None:
            if state == "reconnecting":
                await wait_until_async(
                    lambda: [c.closed_by for c in fake.connections[:1]] == ["abort"], 5, what="the drop"
                )
                # Stopped while it waits out its 30 s backoff: once it has said so.
                await wait_until_async(
                    lambda: "reconnecting in" in caplog.text, 5, what="the feed to wait before reconnecting"
                )
            else:
                wanted = 1 if state == "streaming" else 2
                await wait_until_async(
                    lambda: len(events.of(Reconnected)) >= wanted and len(events.trades) >= 60, 5, what=state
                )

        events, stopping_s = run_feed(feed, scenario)
        connections = settled(fake)

    assert stopping_s < 1.0
    assert fake.open_connections == 0
    assert all(c.closed_by in ("client", "abort") for c in connections)
    if state == "reconnecting":
        (gap,) = events.of(Disconnect)
        assert gap.cause.endswith("stopped before reconnecting")
