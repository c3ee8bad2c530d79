"""REST clients against fake exchanges on loopback that replay recorded real trades.

Expected answers are computed from the recordings (the same frames the fake WebSocket servers send),
so a backfilled trade must equal, field for field, the trade the live feed would have delivered.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from candlelake.price import PricePoint
from candlelake.sources.binance import parse_trade
from candlelake.sources.binance_rest import BACKFILL_SOURCE as BINANCE_BACKFILL
from candlelake.sources.binance_rest import BinanceRest
from candlelake.sources.coinbase import parse_match
from candlelake.sources.coinbase_rest import BACKFILL_SOURCE as COINBASE_BACKFILL
from candlelake.sources.coinbase_rest import CoinbaseRest
from candlelake.sources.events import Event
from candlelake.sources.http import ExchangeRequestError, ExchangeUnavailable, RestClient
from candlelake.sources.pollers import CoinGeckoPrices, PricePoller
from candlelake.trade import Trade
from tests.fakes.binance_rest import FakeBinanceRest
from tests.fakes.coinbase_rest import FakeCoinbaseRest
from tests.fakes.coingecko import FakeCoinGecko
from tests.fakes.recording import (
    BINANCE_SPOT,
    BINANCE_USDM,
    COINBASE,
    LiveReplay,
    Recording,
    binance_shifted,
    coinbase_shifted,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SLOW_MOTION = 0.001  # a recorded second takes 1000 s: what has happened stays put during a test


@pytest.fixture(scope="module")
def recordings() -> dict[str, Recording]:
    return {
        "binance": Recording.load(BINANCE_SPOT),
        "binance-usdm": Recording.load(BINANCE_USDM),
        "coinbase": Recording.load(COINBASE),
    }


def all_happened(recording: Recording) -> LiveReplay:
    """The whole recording is in the past: it started a day ago."""
    return LiveReplay(recording, start=datetime.now(UTC) - timedelta(days=1))


def half_happened(recording: Recording) -> tuple[LiveReplay, float]:
    """A replay stopped (in slow motion) inside the widest pause of the recording's middle half."""
    frames = recording.frames
    end = frames[-1].at_s
    pauses = [(b.at_s - a.at_s, a.at_s, b.at_s) for a, b in itertools.pairwise(frames)]
    _, before, after = max(p for p in pauses if end / 4 <= p[1] <= 3 * end / 4)
    cut = (before + after) / 2
    start = datetime.now(UTC) - timedelta(seconds=cut / SLOW_MOTION)
    return LiveReplay(recording, start=start, speed=SLOW_MOTION), cut


def fast_client(url: str, **options: float) -> RestClient:
    settings = {"backoff_s": 0.05, "backoff_max_s": 0.2, "max_attempts": 4, "timeout_s": 5.0, **options}
    return RestClient(url, **settings)


def comparable(event: object) -> Trade:
    assert isinstance(event, Trade), event
    return replace(event, ingest_time_us=0)


def recorded_binance(replay: LiveReplay, exchange: str, symbol: str, *, until_s: float | None = None) -> list[Trade]:
    """The trades the live feed delivered for `symbol` (up to `until_s` into the recording), by id."""
    trades = {}
    for frame in replay.recording.frames:
        data = frame.payload["data"]
        if data["s"] == symbol and (until_s is None or frame.at_s <= until_s):
            trade = parse_trade(binance_shifted(data, replay.shift_us), exchange=exchange, source=BINANCE_BACKFILL)
            trades[trade.trade_id] = comparable(trade)
    return [trades[i] for i in sorted(trades)]


def recorded_coinbase(replay: LiveReplay, product: str, *, until_s: float | None = None) -> list[Trade]:
    trades = {}
    for frame in replay.recording.frames:
        message = frame.payload
        if message.get("type") not in ("match", "last_match") or message["product_id"] != product:
            continue
        if until_s is None or frame.at_s <= until_s:
            trade = parse_match(coinbase_shifted(message, replay.shift_us), source=COINBASE_BACKFILL)
            trades[trade.trade_id] = comparable(trade)
    return [trades[i] for i in sorted(trades)]


@pytest.fixture
def spot(recordings: dict[str, Recording]) -> Iterator[FakeBinanceRest]:
    with FakeBinanceRest(all_happened(recordings["binance"]), "binance") as fake:
        yield fake


def aggtrade_requests(fake: FakeBinanceRest) -> list[dict[str, str]]:
    return [r.params for r in fake.requests if r.path.endswith("/aggTrades")]


# Backfill: exactly the range, as the live feed had it


@pytest.mark.parametrize(("exchange", "symbol", "page"), [("binance", "BTCUSDT", 150), ("binance-usdm", "NEOUSDT", 40)])
def test_binance_backfill_returns_exactly_the_range_field_for_field(
    recordings: dict[str, Recording], exchange: str, symbol: str, page: int
) -> None:
    replay = all_happened(recordings[exchange])
    recorded = recorded_binance(replay, exchange, symbol)
    first, last = recorded[10].trade_id, recorded[-10].trade_id
    with FakeBinanceRest(replay, exchange) as fake:
        rest = BinanceRest(exchange, client=fast_client(fake.url), page_limit=page)
        got = [comparable(e) for e in rest.trades_between(symbol, first, last)]
    assert got == [t for t in recorded if first <= t.trade_id <= last]
    assert [t.trade_id for t in got] == list(range(first, last + 1))
    assert {t.source for t in got} == {BINANCE_BACKFILL}
    asked = aggtrade_requests(fake)
    assert len(asked) == -(-(last - first + 1) // page)  # whole pages, no request past the range
    assert all(int(p["fromId"]) + int(p["limit"]) - 1 <= last for p in asked)
    prefix = "/api/v3/" if exchange == "binance" else "/fapi/v1/"
    assert all(r.path.startswith(prefix) for r in fake.requests)


def test_binance_backfill_of_a_range_partly_in_the_future_returns_what_happened(
    recordings: dict[str, Recording],
) -> None:
    replay, cut = half_happened(recordings["binance"])
    everything = recorded_binance(replay, "binance", "BTCUSDT")
    happened = recorded_binance(replay, "binance", "BTCUSDT", until_s=cut)
    assert 0 < len(happened) < len(everything)
    with FakeBinanceRest(replay) as fake:
        rest = BinanceRest(client=fast_client(fake.url), page_limit=200)
        got = [comparable(e) for e in rest.trades_between("BTCUSDT", everything[0].trade_id, everything[-1].trade_id)]
    assert got == happened


def test_coinbase_backfill_pages_back_with_the_cursor_and_returns_the_range_ascending(
    recordings: dict[str, Recording],
) -> None:
    replay = all_happened(recordings["coinbase"])
    recorded = recorded_coinbase(replay, "SKL-USD")
    first, last = recorded[3].trade_id, recorded[-3].trade_id
    with FakeCoinbaseRest(replay) as fake:
        rest = CoinbaseRest(client=fast_client(fake.url), page_limit=10)
        got = [comparable(e) for e in rest.trades_between("SKL-USD", first, last)]
    assert got == [t for t in recorded if first <= t.trade_id <= last]
    assert [t.trade_id for t in got] == list(range(first, last + 1))
    cursors = [int(r.params["after"]) for r in fake.requests]
    assert cursors[0] == last + 1 and len(cursors) == -(-(last - first + 1) // 10)
    assert cursors == sorted(cursors, reverse=True)


def test_coinbase_backfill_of_a_range_partly_in_the_future_returns_what_happened(
    recordings: dict[str, Recording],
) -> None:
    replay, cut = half_happened(recordings["coinbase"])
    everything = recorded_coinbase(replay, "SKL-USD")
    happened = recorded_coinbase(replay, "SKL-USD", until_s=cut)
    assert 0 < len(happened) < len(everything)
    with FakeCoinbaseRest(replay) as fake:
        rest = CoinbaseRest(client=fast_client(fake.url), page_limit=7)
        got = [comparable(e) for e in rest.trades_between("SKL-USD", everything[0].trade_id, everything[-1].trade_id)]
    assert got == happened


def test_coinbase_rest_side_gives_the_same_buyer_maker_flag_as_the_websocket_match(
    recordings: dict[str, Recording],
) -> None:
    replay = all_happened(recordings["coinbase"])
    with FakeCoinbaseRest(replay) as fake:
        rest = CoinbaseRest(client=fast_client(fake.url))
        compared = 0
        flags = set()
        for product in fake.products:
            live = {t.trade_id: t.is_buyer_maker for t in recorded_coinbase(replay, product)}
            backfilled = {
                t.trade_id: t.is_buyer_maker
                for t in map(comparable, rest.trades_between(product, min(live), max(live)))
            }
            assert backfilled == live, product
            compared += len(live)
            flags |= set(live.values())
    assert compared == 107 and flags == {True, False}  # 97 matches + 10 last_match, both sides present


# Pushback and outages: honoured, and nothing lost


@pytest.mark.parametrize(("fault", "counter"), [("rate_limit_next", "rate_limited"), ("ban_next", "banned")])
def test_binance_pushback_mid_backfill_waits_retry_after_and_loses_nothing(
    spot: FakeBinanceRest, fault: str, counter: str
) -> None:
    expected = recorded_binance(spot.replay, "binance", "BTCUSDT")[:600]
    rest = BinanceRest(client=fast_client(spot.url), page_limit=200)
    trades = rest.trades_between("BTCUSDT", expected[0].trade_id, expected[-1].trade_id)
    got = [comparable(next(trades))]  # the first page has been read
    getattr(spot, fault)(1, retry_after_s=1)
    got += [comparable(e) for e in trades]
    assert got == expected
    log = spot.requests
    pushed = next(i for i, r in enumerate(log) if r.status in (418, 429))
    assert log[pushed + 1].at - log[pushed].at >= 1.0
    assert log[pushed + 1].params == log[pushed].params and log[pushed + 1].status == 200
    assert getattr(rest.client, counter) == 1


def test_binance_server_errors_are_retried_until_recovery(spot: FakeBinanceRest) -> None:
    expected = recorded_binance(spot.replay, "binance", "BTCUSDT")[:500]
    rest = BinanceRest(client=fast_client(spot.url), page_limit=200)
    spot.fail_next(2)
    got = [comparable(e) for e in rest.trades_between("BTCUSDT", expected[0].trade_id, expected[-1].trade_id)]
    assert got == expected
    assert [r.status for r in spot.requests] == [503, 503, 200, 200, 200]


def test_binance_outage_raises_a_one_line_exchange_unavailable(spot: FakeBinanceRest) -> None:
    rest = BinanceRest(client=fast_client(spot.url, max_attempts=3))
    spot.fail_next(10)
    with pytest.raises(ExchangeUnavailable) as raised:
        list(rest.trades_between("BTCUSDT", 665076760, 665076800))
    assert "\n" not in str(raised.value) and "503" in str(raised.value) and "3 attempts" in str(raised.value)
    assert len(spot.requests) == 3


def test_binance_invalid_symbol_raises_with_binance_message(spot: FakeBinanceRest) -> None:
    rest = BinanceRest(client=fast_client(spot.url))
    with pytest.raises(ExchangeRequestError) as raised:
        list(rest.trades_between("NOPEUSDT", 1, 10))
    assert raised.value.exchange_message == "Invalid symbol." and raised.value.code == -1121
    assert "Invalid symbol." in str(raised.value) and len(spot.requests) == 1  # not retried


def test_coinbase_rate_limit_without_retry_after_backs_off_and_loses_nothing(
    recordings: dict[str, Recording],
) -> None:
    replay = all_happened(recordings["coinbase"])
    expected = recorded_coinbase(replay, "DASH-BTC")
    with FakeCoinbaseRest(replay) as fake:
        rest = CoinbaseRest(client=fast_client(fake.url), page_limit=5)
        fake.rate_limit_next(2, retry_after_s=None)
        got = [comparable(e) for e in rest.trades_between("DASH-BTC", expected[0].trade_id, expected[-1].trade_id)]
    assert got == expected
    assert rest.client.rate_limited == 2
    log = fake.requests
    assert log[1].at - log[0].at >= 0.05 and log[2].at - log[1].at >= 0.1  # exponential backoff


# Symbols and prices


def test_binance_unknown_symbols(recordings: dict[str, Recording], spot: FakeBinanceRest) -> None:
    rest = BinanceRest(client=fast_client(spot.url))
    assert rest.unknown_symbols(["btcusdt", "ETH/USDT"]) == []
    assert rest.unknown_symbols(["BTCUSDT", "NOPEUSDT", "DOTUSDT", "XRPDOGE"]) == ["NOPEUSDT", "XRPDOGE"]
    with FakeBinanceRest(all_happened(recordings["binance-usdm"]), "binance-usdm") as usdm:
        futures = BinanceRest("binance-usdm", client=fast_client(usdm.url))
        assert futures.unknown_symbols(["NEOUSDT", "BTCUSDT", "chrusdt"]) == ["BTCUSDT"]


def test_coinbase_unknown_products(recordings: dict[str, Recording]) -> None:
    with FakeCoinbaseRest(all_happened(recordings["coinbase"])) as fake:
        rest = CoinbaseRest(client=fast_client(fake.url))
        assert rest.unknown_symbols(["SKL-USD", "BTC-XYZ", "BAND-GBP"]) == ["BTC-XYZ"]


def test_binance_spot_prices_are_the_last_trade_prices_timed_by_the_answer(spot: FakeBinanceRest) -> None:
    rest = BinanceRest(client=fast_client(spot.url))
    before_us = int(datetime.now(UTC).timestamp() * 1e6)
    points = rest.prices(["BTCUSDT", "ETHUSDT"])
    after_us = int(datetime.now(UTC).timestamp() * 1e6)
    expected = {s: recorded_binance(spot.replay, "binance", s)[-1].price for s in ("BTCUSDT", "ETHUSDT")}
    assert {p.symbol: p.price for p in points} == expected
    assert all(before_us <= p.time_us <= after_us and p.exchange == "binance" for p in points)


def test_binance_usdm_prices_carry_the_exchange_time(recordings: dict[str, Recording]) -> None:
    replay = all_happened(recordings["binance-usdm"])
    with FakeBinanceRest(replay, "binance-usdm") as fake:
        points = BinanceRest("binance-usdm", client=fast_client(fake.url)).prices(["NEOUSDT", "BATUSDT"])
    last = {s: recorded_binance(replay, "binance-usdm", s)[-1] for s in ("NEOUSDT", "BATUSDT")}
    assert {p.symbol: (p.price, p.time_us) for p in points} == {s: (t.price, t.trade_time_us) for s, t in last.items()}


LONG_PRICE = "67187.335893656639182501"  # 23 significant digits: a float keeps about 17


def test_coingecko_prices_keep_every_digit_and_the_update_time() -> None:
    with FakeCoinGecko(
        {"bitcoin": {"usd": LONG_PRICE}, "ethereum": {"usd": "3456.78"}}, last_updated_at=1711356300
    ) as fake:
        gecko = CoinGeckoPrices(fake.url, symbols={"ethereum": "ETH-USD"})
        points = gecko.prices(["bitcoin", "Ethereum", "no-such-coin"])
    assert points == [
        PricePoint("coingecko", "bitcoin-usd", Decimal(LONG_PRICE), 1711356300_000000, "coingecko-simple-price"),
        PricePoint("coingecko", "ETH-USD", Decimal("3456.78"), 1711356300_000000, "coingecko-simple-price"),
    ]
    assert float(LONG_PRICE) != Decimal(LONG_PRICE)  # the check above could fail through a float


# Pollers


def run_poller(poller: PricePoller, until: int) -> list[Event]:
    """Run a poller until it has emitted `until` events (or 10 s), then stop it; the events."""
    events: list[Event] = []

    async def main() -> None:
        stop = asyncio.Event()

        def emit(event: Event) -> None:
            events.append(event)
            if len(events) >= until:
                stop.set()

        await asyncio.wait_for(poller.run(emit, stop), timeout=10)

    asyncio.run(main())
    return events


def test_coingecko_poller_emits_exact_price_points_and_survives_a_failed_poll(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with FakeCoinGecko({"bitcoin": {"usd": LONG_PRICE}}) as fake:
        fake.fail_next(1)
        gecko = CoinGeckoPrices(fake.url)
        poller = PricePoller(lambda: gecko.prices(["bitcoin"]), 0.1, name="coingecko")
        with caplog.at_level(logging.WARNING, logger="candlelake.sources.pollers"):
            events = run_poller(poller, until=3)
    assert all(isinstance(e, PricePoint) for e in events)
    assert [e.price for e in events if isinstance(e, PricePoint)] == [Decimal(LONG_PRICE)] * 3
    assert poller.failures == 1 and poller.polls == 4
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()
    assert caplog.records[0].getMessage().startswith("coingecko poll failed") and "503" in caplog.text


def test_coingecko_poller_holds_back_until_retry_after_when_rate_limited() -> None:
    with FakeCoinGecko({"bitcoin": {"usd": LONG_PRICE}}) as fake:
        fake.rate_limit_next(1, retry_after_s=1)
        gecko = CoinGeckoPrices(fake.url)
        poller = PricePoller(lambda: gecko.prices(["bitcoin"]), 0.1, name="coingecko")
        events = run_poller(poller, until=2)
        log = fake.requests
    assert [r.status for r in log] == [429, 200, 200]
    assert log[1].at - log[0].at >= 1.0  # polls in between waited instead of asking
    assert poller.failures == 1 and len(events) == 2


def test_coingecko_poller_backs_off_after_refusals_without_retry_after() -> None:
    """Two 429s without Retry-After: the poller waits two, then four intervals, then polls at its rate."""
    with FakeCoinGecko({"bitcoin": {"usd": LONG_PRICE}}) as fake:
        fake.rate_limit_next(2, retry_after_s=None)
        gecko = CoinGeckoPrices(fake.url)
        poller = PricePoller(lambda: gecko.prices(["bitcoin"]), 0.2, name="coingecko")
        events = run_poller(poller, until=2)
        log = fake.requests
    assert [r.status for r in log] == [429, 429, 200, 200]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(log)]
    # 2 and 4 intervals, then 1 again (polls are paced from their starts; the first request also connects)
    assert gaps[0] >= 0.35 and gaps[1] >= 0.75 and gaps[2] < 0.6, gaps
    assert poller.failures == 2 and poller.failures_in_a_row == 0 and len(events) == 2


def test_binance_poller_emits_price_points_only(spot: FakeBinanceRest) -> None:
    rest = BinanceRest(client=fast_client(spot.url))
    events = run_poller(PricePoller(lambda: rest.prices(["BTCUSDT", "ETHUSDT", "DOTUSDT"]), 0.05), until=6)
    assert all(isinstance(e, PricePoint) and e.source == "binance-rest-ticker" for e in events)
    last = {s: recorded_binance(spot.replay, "binance", s)[-1].price for s in ("BTCUSDT", "ETHUSDT", "DOTUSDT")}
    assert {e.symbol: e.price for e in events if isinstance(e, PricePoint)} == last


def test_poller_passes_on_price_points_only() -> None:
    point = PricePoint("binance", "BTCUSDT", Decimal("58001.03"), 1617566591314000, "binance-rest-ticker")
    trade = Trade("binance", "BTCUSDT", 1, Decimal("58001.03"), Decimal("1"), 1617566591314000, True, 0, "x")
    events = run_poller(PricePoller(lambda: [trade, point], 0.01), until=2)
    assert events == [point, point]
