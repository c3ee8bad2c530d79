"""The pure parts of the WebSocket feeds: backoff, close causes, settings and each exchange's messages."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from candlelake.sources.binance_ws import SHUTDOWN_NOTICE, SPOT_URL, USDM_URL, BinanceTradeFeed, stream_url
from candlelake.sources.coinbase_ws import CoinbaseMatchesFeed, subscribe_message
from candlelake.sources.events import Event, TradeIdMark
from candlelake.sources.fields import Rejection
from candlelake.sources.websocket_feed import Backoff, FeedSettings, describe_close
from candlelake.trade import Trade
from tests.fakes.recording import BINANCE_SPOT, COINBASE, Recording, dumps

pytestmark = pytest.mark.unit


def test_backoff_doubles_up_to_the_maximum_with_full_jitter() -> None:
    highest = Backoff(0.5, 4.0, rng=lambda: 1.0)
    assert [highest.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    highest.reset()
    assert highest.next_delay() == 0.5
    assert Backoff(0.5, 4.0, rng=lambda: 0.0).next_delay() == 0.0
    assert all(0 <= Backoff(1.0, 8.0).next_delay() <= 1.0 for _ in range(100))


def test_backoff_survives_very_many_failures() -> None:
    backoff = Backoff(1.0, 60.0, rng=lambda: 1.0)
    backoff.failures = 10_000
    assert backoff.next_delay() == 60.0


@pytest.mark.parametrize(
    ("rcvd", "sent", "cause"),
    [
        (None, None, "server closed the connection (code 1006 abnormal closure: no close frame)"),
        (Close(1001, "bye"), None, "server closed the connection (code 1001 going away: bye)"),
        (Close(1000, ""), Close(1000, ""), "server closed the connection (code 1000 OK)"),
        (
            None,
            Close(1011, "keepalive ping timeout"),
            "no pong to our keepalive ping (code 1011 keepalive ping timeout)",
        ),
        (None, Close(1009, "over size limit"), "we closed the connection (code 1009 over size limit)"),
    ],
)
def test_close_causes_read_well(rcvd: Close | None, sent: Close | None, cause: str) -> None:
    both = rcvd is not None and sent is not None
    assert describe_close(ConnectionClosed(rcvd, sent, True if both else None)) == cause


@pytest.mark.parametrize("bad", [{"watchdog_s": 0}, {"lifetime_s": -1.0}, {"overlap_s": -1.0}, {"backoff_max_s": 0}])
def test_settings_refuse_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FeedSettings(**bad)


def test_binance_urls() -> None:
    assert (
        stream_url("ws://h:1/", ["BTC/USDT", "ethusdt"], "trade")
        == "ws://h:1/stream?streams=btcusdt@trade/ethusdt@trade"
    )
    assert BinanceTradeFeed("binance", ["btcusdt"]).url == f"{SPOT_URL}/stream?streams=btcusdt@aggTrade"
    assert BinanceTradeFeed("binance-usdm", ["BTCUSDT"]).url == f"{USDM_URL}/stream?streams=btcusdt@aggTrade"
    with pytest.raises(ValueError):
        BinanceTradeFeed("kraken", ["BTCUSDT"])


def _handle_binance(*messages: str) -> tuple[list[Event], list[str | None]]:
    feed = BinanceTradeFeed("binance", ["BTCUSDT", "ETHUSDT"], "ws://unused")
    events: list[Event] = []
    return events, [feed.handle(message, events.append) for message in messages]


SPOT_FRAME: dict[str, Any] = Recording.load(BINANCE_SPOT).frames[0].payload


def test_binance_trade_messages_combined_or_bare() -> None:
    raw_trade = {"e": "trade", "E": 1, "s": "ETHUSDT", "t": 77, "p": "2000.5", "q": "1", "T": 1617566591314, "m": False}
    events, results = _handle_binance(dumps(SPOT_FRAME), dumps(SPOT_FRAME["data"]), dumps(raw_trade))
    assert results == [None, None, None]
    first, bare, trade = events
    assert isinstance(first, Trade) and isinstance(bare, Trade) and isinstance(trade, Trade)
    assert (first.symbol, first.trade_id, first.price, first.qty) == (
        "BTCUSDT",
        665076760,
        Decimal("58001.03"),
        Decimal("0.086205"),
    )
    assert (first.trade_time_us, first.is_buyer_maker, first.source) == (1617566591314000, True, "binance-ws")
    assert (bare.symbol, bare.trade_id) == (first.symbol, first.trade_id)
    assert (trade.symbol, trade.trade_id, trade.is_buyer_maker) == ("ETHUSDT", 77, False)


def test_binance_other_messages_are_ignored_and_shutdown_notices_rotate() -> None:
    events, results = _handle_binance(
        dumps({"result": None, "id": 1}),
        dumps({"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": 1, "s": "BTCUSDT", "k": {}}}),
        dumps({"event": {"e": "serverShutdown", "E": 1770123456789}}),
        dumps({"e": "serverShutdown", "E": 1770123456789}),
        dumps({"stream": "x", "data": {"e": "serverShutdown", "E": 1}}),
    )
    assert events == []
    assert results == [None, None, SHUTDOWN_NOTICE, SHUTDOWN_NOTICE, SHUTDOWN_NOTICE]


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "malformed"),
        ('"just a string"', "malformed"),
        (dumps({**SPOT_FRAME, "data": {**SPOT_FRAME["data"], "p": "NaN"}}), "not-finite"),
        (dumps({**SPOT_FRAME, "data": {**SPOT_FRAME["data"], "q": "-1"}}), "negative-qty"),
        (dumps({**SPOT_FRAME, "data": {**SPOT_FRAME["data"], "s": "DOGEUSDT"}}), "unknown-symbol"),
        (dumps({**SPOT_FRAME, "data": {**SPOT_FRAME["data"], "p": "1e400"}}), "too-many-digits"),
        (dumps({**SPOT_FRAME, "data": {**SPOT_FRAME["data"], "p": "X"}}).replace('"X"', "NaN"), "wrong-type"),
        (dumps({**SPOT_FRAME, "data": {k: v for k, v in SPOT_FRAME["data"].items() if k != "T"}}), "missing-field"),
    ],
)
def test_binance_bad_messages_become_rejections_with_the_raw_text(message: str, code: str) -> None:
    events, results = _handle_binance(message)
    assert results == [None]
    (rejection,) = events
    assert isinstance(rejection, Rejection)
    assert (rejection.raw, rejection.code, rejection.source) == (message, code, "binance-ws")
    assert rejection.reason


def _handle_coinbase(*messages: str) -> list[Event]:
    feed = CoinbaseMatchesFeed(["skl-usd", "DASH-BTC"], "ws://unused")
    events: list[Event] = []
    for message in messages:
        feed.handle(message, events.append)
    return events


COINBASE_MATCH = next(f.payload for f in Recording.load(COINBASE).frames if f.payload.get("type") == "match")


def test_coinbase_subscribes_to_matches_and_heartbeats() -> None:
    assert json.loads(subscribe_message(["SKL-USD"])) == {
        "type": "subscribe",
        "product_ids": ["SKL-USD"],
        "channels": ["matches", "heartbeat"],
    }


def test_coinbase_matches_heartbeats_and_errors() -> None:
    heartbeat = {"type": "heartbeat", "sequence": 9, "last_trade_id": 1568270, "product_id": "SKL-USD", "time": "x"}
    events = _handle_coinbase(
        dumps({**COINBASE_MATCH, "product_id": "SKL-USD"}),
        dumps({**COINBASE_MATCH, "type": "last_match", "product_id": "DASH-BTC"}),
        dumps(heartbeat),
        dumps({"type": "subscriptions", "channels": []}),
        dumps({"type": "ticker", "product_id": "SKL-USD", "price": "1"}),
        dumps({"type": "error", "message": "Failed to subscribe", "reason": "FOO-USD is not a valid product"}),
        dumps({**COINBASE_MATCH, "product_id": "BTC-USD"}),
        dumps({**heartbeat, "last_trade_id": "many"}),
        "nope",
    )
    match, last_match, mark, error, unknown, bad_mark, not_json = events
    assert isinstance(match, Trade) and isinstance(last_match, Trade)
    assert (match.exchange, match.symbol, match.trade_id, match.source) == (
        "coinbase",
        "SKL-USD",
        COINBASE_MATCH["trade_id"],
        "coinbase-ws",
    )
    assert match.is_buyer_maker is (COINBASE_MATCH["side"] == "buy")
    assert last_match.symbol == "DASH-BTC"
    assert mark == TradeIdMark("coinbase", "SKL-USD", 1568270)
    assert isinstance(error, Rejection) and error.code == "exchange-error" and "FOO-USD" in error.reason
    assert isinstance(unknown, Rejection) and unknown.code == "unknown-symbol"
    assert isinstance(bad_mark, Rejection) and bad_mark.code == "wrong-type"
    assert isinstance(not_json, Rejection) and not_json.code == "malformed"
