"""Exchange adapters and boundary validation on real recorded frames (tests/fixtures/replay)."""

from __future__ import annotations

import gzip
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from candlelake.sources import binance, coinbase
from candlelake.sources.fields import InvalidTrade, epoch_us, make_trade

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "replay"


def lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def test_a_binance_spot_ws_aggtrade_becomes_the_exact_trade() -> None:
    message = lines("binance-spot-aggtrade.jsonl")[0]
    trade = binance.parse_trade(message["data"], exchange="binance", source="binance-ws")
    assert (trade.exchange, trade.symbol, trade.trade_id) == ("binance", "BTCUSDT", 665076760)
    assert trade.price == Decimal("58001.03000000") and str(trade.qty) == "0.08620500"
    assert trade.trade_time_us == 1617566591314 * 1000
    assert trade.is_buyer_maker is True
    assert trade.to_wire()["price"] == "58001.03000000"


def test_every_spot_frame_in_the_capture_parses_with_its_own_id_and_side() -> None:
    messages = lines("binance-spot-aggtrade.jsonl")
    trades = [binance.parse_trade(m["data"], exchange="binance", source="t") for m in messages]
    assert [t.trade_id for t in trades] == [m["data"]["a"] for m in messages]
    assert sum(not t.is_buyer_maker for t in trades) == 113
    assert {t.symbol for t in trades} == {"BTCUSDT", "ETHUSDT", "DOTUSDT"}


def test_usdm_frames_have_no_best_match_flag_and_are_told_apart_from_spot() -> None:
    usdm = lines("binance-usdm-aggtrade.jsonl")[0]["data"]
    spot = lines("binance-spot-aggtrade.jsonl")[0]["data"]
    assert binance.market_of(usdm) == "binance-usdm"
    assert binance.market_of(spot) == "binance"
    trade = binance.parse_trade(usdm, exchange="binance-usdm", source="t")
    assert (trade.symbol, trade.trade_id, trade.price, trade.is_buyer_maker) == (
        "YFIUSDT",
        52599685,
        Decimal("49966.7"),
        False,
    )


def test_a_binance_trade_event_uses_its_trade_id_not_the_buyer_order_id() -> None:
    event = {
        "e": "trade", "E": 1672515782136, "s": "BNBBTC", "t": 12345, "p": "0.001", "q": "100",
        "b": 88, "a": 50, "T": 1672515782136, "m": True, "M": True,
    }  # fmt: skip
    trade = binance.parse_trade(event, exchange="binance", source="t")
    assert trade.trade_id == 12345 and binance.is_trade(event)


def test_a_rest_aggtrade_from_the_xrpeth_file_takes_the_symbol_given() -> None:
    items = json.loads(gzip.decompress((FIXTURES / "xrpeth-aggtrades-first200.json.gz").read_bytes()))
    trade = binance.parse_trade(items[0]["info"], exchange="binance", source="t", symbol="XRP/ETH")
    assert (trade.symbol, trade.trade_id, trade.price, trade.qty) == (
        "XRPETH",
        13519807,
        Decimal("0.00141342"),
        Decimal("23.00000000"),
    )
    assert trade.trade_time_us == 1570752011620000


def test_a_rest_trade_record_parses() -> None:
    record = {
        "id": 28457, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.000012",
        "time": 1499865549590, "isBuyerMaker": True, "isBestMatch": True,
    }  # fmt: skip
    trade = binance.parse_trade(record, exchange="binance", source="t", symbol="BNBBTC")
    assert (trade.trade_id, trade.price, trade.is_buyer_maker) == (28457, Decimal("4.00000100"), True)
    assert binance.is_trade(record) and binance.market_of(record) == "binance"


def test_klines_are_not_trades() -> None:
    assert not any(binance.is_trade(m["data"]) for m in lines("binance-spot-kline_1m.jsonl"))


@pytest.mark.parametrize(
    ("row", "kind", "time_us", "maker"),
    [
        ("665076760,58001.03,0.0862,745522877,745522877,1617566591314,True,True", "aggTrades", 1617566591314000, True),
        ("3411240963,93548.8,0.001,581147,581147,1735689600125455,false,True", "aggTrades", 1735689600125455, False),
        ("4391211048,94591.79,0.00012,11.35,1735689600125455,False,True", "trades", 1735689600125455, False),
        ("2474937398,3337.06,0.010,33.37,1704067200014,true", "trades", 1704067200014000, True),
    ],
)  # fmt: skip
def test_csv_rows_read_milli_or_microseconds_by_magnitude(row: str, kind: str, time_us: int, maker: bool) -> None:
    trade = binance.parse_csv_row(row.split(","), kind=kind, exchange="binance", symbol="BTCUSDT", source="t")
    assert trade.trade_time_us == time_us and trade.is_buyer_maker is maker
    assert trade.trade_id == int(row.split(",")[0]) and trade.price == Decimal(row.split(",")[1])


def test_a_coinbase_match_taker_buy_has_a_selling_maker() -> None:
    last_match = next(m for m in lines("coinbase-matches-and-ticker.jsonl") if m["type"] == "last_match")
    trade = coinbase.parse_match(last_match, source="coinbase-ws")
    assert (trade.exchange, trade.symbol, trade.trade_id) == ("coinbase", "BAND-GBP", 881613)
    assert (trade.price, trade.qty) == (Decimal("14.7775"), Decimal("0.04"))
    assert trade.trade_time_us == 1618677810244075  # 2021-04-17T16:43:30.244075Z, to the microsecond
    assert trade.is_buyer_maker is False  # side "sell": the maker sold, the taker bought


def test_a_coinbase_match_with_a_buying_maker_is_buyer_maker() -> None:
    match = next(m for m in lines("coinbase-matches-and-ticker.jsonl") if m.get("trade_id") == 280236)
    trade = coinbase.parse_match(match, source="t")
    assert match["side"] == "buy" and trade.is_buyer_maker is True
    assert (trade.symbol, trade.price) == ("SKL-BTC", Decimal("0.00001305"))


def test_coinbase_tickers_and_heartbeats_are_not_trades() -> None:
    heartbeat = {"type": "heartbeat", "last_trade_id": 1, "product_id": "BTC-USD", "sequence": 2, "time": "x"}
    tickers = [m for m in lines("coinbase-matches-and-ticker.jsonl") if m["type"] == "ticker"]
    assert len(tickers) == 107 and not any(coinbase.is_trade(m) for m in [*tickers, heartbeat])


def _valid(**changes: object) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "trade_id": 1,
        "price": "100.5",
        "qty": "0.25",
        "trade_time_us": 1_700_000_000_000_000,
        "is_buyer_maker": False,
        "source": "t",
    }
    return {**fields, **changes}


def test_the_limits_themselves_are_accepted() -> None:
    now_us = time.time_ns() // 1000
    trade = make_trade(**_valid(price="999999999999999999.0000000001", qty="0", trade_time_us=now_us + 60_000_000))
    assert trade.price == Decimal("999999999999999999.0000000001") and trade.qty == 0
    # Trailing zeros past the 10th fractional digit change no value, so they fit DECIMAL(28,10).
    assert make_trade(**_valid(price="1.000000000000")).price == 1


@pytest.mark.parametrize(
    ("changes", "code", "words"),
    [
        ({"price": "NaN"}, "not-finite", "price 'NaN' is not a finite number"),
        ({"qty": "Infinity"}, "not-finite", "qty 'Infinity' is not a finite number"),
        ({"price": Decimal("-Infinity")}, "not-finite", "not a finite number"),
        ({"price": "0"}, "non-positive-price", "price '0' is not above zero"),
        ({"price": "-1.5"}, "non-positive-price", "is not above zero"),
        ({"qty": "-0.01"}, "negative-qty", "qty '-0.01' is negative"),
        ({"price": "0.00000000001"}, "too-many-decimals", "11 fractional digits (at most 10)"),
        ({"qty": "1234567890123456789"}, "too-many-digits", "19 integer digits (at most 18)"),
        ({"price": 100.5}, "wrong-type", "price must be a decimal string, got float"),
        ({"qty": True}, "wrong-type", "qty must be a decimal string, got bool"),
        ({"price": "12abc"}, "wrong-type", "is not a decimal number"),
        ({"trade_id": "x1"}, "wrong-type", "trade_id must be a whole number"),
        ({"trade_id": -3}, "wrong-type", "trade_id -3 is negative"),
        ({"symbol": 7}, "wrong-type", "symbol must be text"),
        ({"symbol": "btc/usdt"}, "bad-symbol", "is not upper-case letters and digits"),
        ({"exchange": "coinbase"}, "bad-symbol", "is not a product id like BTC-USD"),
        ({"exchange": "kraken"}, "bad-exchange", "exchange 'kraken' is not one of"),
        ({"trade_time_us": 1_230_767_999_999_999}, "time-too-early", "is before 2009"),
    ],
)
def test_every_rejection_has_a_code_and_a_reason(changes: dict[str, object], code: str, words: str) -> None:
    with pytest.raises(InvalidTrade) as caught:
        make_trade(**_valid(**changes))
    assert caught.value.code == code
    assert words in str(caught.value)


def test_a_trade_more_than_five_minutes_in_the_future_is_rejected() -> None:
    # Computed here, not at collection: the suite may run minutes after collecting.
    with pytest.raises(InvalidTrade, match="more than 5 minutes in the future") as caught:
        make_trade(**_valid(trade_time_us=time.time_ns() // 1000 + 6 * 60_000_000))
    assert caught.value.code == "time-in-future"


SPOT_EVENT = lines("binance-spot-aggtrade.jsonl")[0]["data"]
USDM_EVENT = lines("binance-usdm-aggtrade.jsonl")[0]["data"]
TRADE_EVENT = {
    "e": "trade", "E": 1672515782136, "s": "BNBBTC", "t": 12345, "p": "0.001", "q": "100",
    "T": 1672515782136, "m": True, "M": True,
}  # fmt: skip
COINBASE_MATCHES = [m for m in lines("coinbase-matches-and-ticker.jsonl") if m["type"] in coinbase.TRADE_TYPES]


# What Binance always sends in each event (its API docs; every recorded frame has them all).
ALWAYS_SENT = {"aggTrade": list("EsapqflTm"), "trade": list("EstpqTm")}
EVENTS = {"spot-aggTrade": (SPOT_EVENT, "binance"), "usdm-aggTrade": (USDM_EVENT, "binance-usdm"),
          "trade": (TRADE_EVENT, "binance")}  # fmt: skip


@pytest.mark.parametrize(
    ("name", "drop"), [(name, drop) for name, (event, _) in EVENTS.items() for drop in ALWAYS_SENT[event["e"]]]
)
@pytest.mark.parametrize("how", ["absent", "null"])
def test_a_ws_event_missing_a_field_binance_always_sends_is_a_dead_letter(name: str, drop: str, how: str) -> None:
    event, exchange = EVENTS[name]
    data = {k: v for k, v in event.items() if k != drop} if how == "absent" else {**event, drop: None}
    # The symbol is not taken from the stream name (or a replay's --symbol) instead of the frame's own.
    with pytest.raises(InvalidTrade) as caught:
        binance.parse_trade(data, exchange=exchange, source="t", symbol=event["s"])
    assert caught.value.code == "missing-field"
    assert f"missing field {drop!r} ({binance.EVENT_FIELDS[event['e']][drop]}) in a Binance {event['e']} event" in str(
        caught.value
    )
    # The producer's path: the whole frame becomes a dead letter with that reason.
    from candlelake.sources.binance_ws import BinanceTradeFeed
    from candlelake.sources.fields import Rejection

    emitted: list[object] = []
    feed = BinanceTradeFeed(exchange, [str(event["s"])], "ws://unused")
    frame = json.dumps({"stream": f"{str(event['s']).lower()}@{event['e']}", "data": data})
    feed.handle(frame, emitted.append)
    assert len(emitted) == 1 and isinstance(emitted[0], Rejection)
    assert (emitted[0].code, emitted[0].raw) == ("missing-field", frame)
    assert f"missing field {drop!r}" in emitted[0].reason


def test_every_missing_field_of_a_frame_is_named() -> None:
    data = {k: v for k, v in SPOT_EVENT.items() if k not in ("s", "q")}
    with pytest.raises(InvalidTrade, match=r"missing fields 's' \(symbol\), 'q' \(quantity\) in a Binance aggTrade"):
        binance.parse_trade(data, exchange="binance", source="t", symbol="BTCUSDT")


def test_a_rest_record_still_takes_the_symbol_given_and_needs_its_own_fields() -> None:
    record = {k: v for k, v in SPOT_EVENT.items() if k not in ("e", "E", "s")}  # /api/v3/aggTrades
    assert binance.parse_trade(record, exchange="binance", source="t", symbol="BTCUSDT").symbol == "BTCUSDT"
    with pytest.raises(InvalidTrade, match="missing field 's'") as caught:
        binance.parse_trade(record, exchange="binance", source="t")
    assert caught.value.code == "missing-field"
    with pytest.raises(InvalidTrade, match="missing field 'p'"):
        binance.parse_trade({k: v for k, v in record.items() if k != "p"}, exchange="binance", source="t", symbol="X1")


def test_every_recorded_frame_is_still_accepted() -> None:
    for name, exchange in (("binance-spot-aggtrade.jsonl", "binance"), ("binance-usdm-aggtrade.jsonl", "binance-usdm")):
        assert all(binance.parse_trade(m["data"], exchange=exchange, source="t") for m in lines(name))
    assert len(COINBASE_MATCHES) == 107 and all(coinbase.parse_match(m, source="t") for m in COINBASE_MATCHES)


@pytest.mark.parametrize("kind", ["match", "last_match"])
@pytest.mark.parametrize("drop", sorted(coinbase.MATCH_FIELDS))
@pytest.mark.parametrize("how", ["absent", "null"])
def test_a_coinbase_match_missing_a_field_is_a_dead_letter(kind: str, drop: str, how: str) -> None:
    message = next(m for m in COINBASE_MATCHES if m["type"] == kind)
    data = {k: v for k, v in message.items() if k != drop} if how == "absent" else {**message, drop: None}
    with pytest.raises(InvalidTrade) as caught:
        coinbase.parse_match(data, source="t")
    assert caught.value.code == "missing-field"
    assert f"missing field {drop!r} ({coinbase.MATCH_FIELDS[drop]}) in a Coinbase {kind} message" in str(caught.value)
    from candlelake.sources.coinbase_ws import CoinbaseMatchesFeed
    from candlelake.sources.fields import Rejection

    emitted: list[object] = []
    CoinbaseMatchesFeed([str(message["product_id"])], "ws://unused").handle(json.dumps(data), emitted.append)
    rejections = [e for e in emitted if isinstance(e, Rejection)]
    assert [(r.code, r.raw) for r in rejections] == [("missing-field", json.dumps(data))]


def test_a_null_field_and_a_non_boolean_side_are_rejected() -> None:
    match = dict(lines("coinbase-matches-and-ticker.jsonl")[2])
    with pytest.raises(InvalidTrade, match="missing field 'price'"):
        coinbase.parse_match({**match, "price": None}, source="t")
    with pytest.raises(InvalidTrade, match="side must be 'buy' or 'sell'"):
        coinbase.parse_match({**match, "side": "both"}, source="t")
    with pytest.raises(InvalidTrade, match="m must be true or false"):
        binance.parse_trade(
            {**lines("binance-spot-aggtrade.jsonl")[0]["data"], "m": "yes"}, exchange="binance", source="t"
        )
    with pytest.raises(InvalidTrade, match="not an ISO 8601 time"):
        coinbase.parse_match({**match, "time": "yesterday"}, source="t")


def test_seconds_are_not_mistaken_for_milliseconds() -> None:
    # 1.7e9 read as milliseconds is January 1970: validation then rejects it as before 2009.
    with pytest.raises(InvalidTrade, match="before 2009"):
        make_trade(**_valid(trade_time_us=epoch_us(1_700_000_000, "T")))


@pytest.mark.parametrize("maker", [True, False])
def test_wire_bytes_equal_json_dumps_of_the_wire_dict(maker: bool) -> None:
    from decimal import Decimal

    from candlelake.trade import Trade

    odd_source = 'replay:"odd" \\ source'
    trade = Trade("coinbase", "BTC-USD", 7, Decimal("0.00001000"), Decimal("12E-8"), 1, maker, 2, odd_source)
    assert trade.to_json_bytes() == json.dumps(trade.to_wire(), separators=(",", ":")).encode()
    assert Trade.from_wire(json.loads(trade.to_json_bytes())) == trade
