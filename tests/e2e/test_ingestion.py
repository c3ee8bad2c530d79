"""Ingestion without loss, end to end: fake exchanges -> the real producer process -> Kafka -> Spark -> PostgreSQL.

Each test plays 30 s of a real capture at its recorded pace through a fake exchange (a real WebSocket
server and a real HTTP server on loopback speaking the exchange's protocol), lets it misbehave in one
way, and checks that every trade of the capture reached Kafka exactly once, that the gap ledger says
what happened, and that the live candles equal candles computed from the capture's trades. Each test
takes markets of its own, so their candles do not mix.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from candlelake.config import Settings
from tests.e2e.ingest_support import (
    end_offsets,
    expected_trades,
    forget_markets,
    health_row,
    ledger_rows,
    live,
    market_candles,
    producer,
    producer_log,
    read_topic,
    sleep_until,
    trades_in_kafka,
    window,
)
from tests.e2e.test_pipeline import differences
from tests.fakes.binance_rest import FakeBinanceRest
from tests.fakes.binance_ws import FakeBinanceWs
from tests.fakes.recording import BINANCE_SPOT, BINANCE_USDM
from tests.support.reference_candles import reference_candles
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SECONDS = 20.0


def binance_env(ws: FakeBinanceWs, rest: FakeBinanceRest) -> dict[str, str]:
    return {
        "CANDLELAKE_BINANCE_WS_URL": ws.url,
        "CANDLELAKE_BINANCE_REST_URL": rest.url,
        "CANDLELAKE_BINANCE_USDM_WS_URL": ws.url,
        "CANDLELAKE_BINANCE_USDM_REST_URL": rest.url,
    }


def check_exactly_once(platform: Settings, since: dict[int, int], exchange: str, symbol: str, expected: list) -> None:
    got = trades_in_kafka(platform, since, {f"{exchange}:{symbol}"})
    counts = Counter(t.trade_id for t in got)
    doubled = {i: n for i, n in counts.items() if n > 1}
    want = {t.trade_id for t in expected}
    assert not doubled, f"trade ids sent more than once: {sorted(doubled)[:10]}"
    assert want - counts.keys() == set(), f"{len(want - counts.keys())} trades never reached Kafka"
    assert counts.keys() - want == set(), "trades that are not in the capture reached Kafka"
    # Field for field: what reached Kafka is the exchange's trade, not a lookalike.
    by_id = {t.trade_id: t for t in got}
    for t in expected:
        k = by_id[t.trade_id]
        assert (k.price, k.qty, k.trade_time_us, k.is_buyer_maker) == (
            t.price,
            t.qty,
            t.trade_time_us,
            t.is_buyer_maker,
        )


def check_candles(platform: Settings, exchange: str, symbol: str, expected: list) -> None:
    truth = reference_candles(expected)
    wait_until(
        lambda: not differences(truth, market_candles(platform, exchange, symbol, expected)),
        timeout=120,
        interval=2.0,
        what=f"the live candles of {exchange}:{symbol} to equal the capture's",
    )


def run_capture(
    platform: Settings,
    name: str,
    exchange: str,
    path,
    symbol: str,
    arm,
    extra_env: dict[str, str] | None = None,
    seconds: float = SECONDS,
) -> tuple[list, FakeBinanceWs, FakeBinanceRest, dict[int, int], datetime]:
    """Play `seconds` of `symbol` from a capture through a fake Binance with `arm(ws, rest)` applied, under
    the real producer; returns the expected trades, the fakes and where the topic stood at the start."""
    started = datetime.now(UTC)
    # The producer is a fresh process (imports, the symbol check, the connection): give it time to be
    # connected before the first trade happens, as a live feed only sees trades from when it connects.
    replay = live(window(path, seconds, {symbol}), lead_s=8.0)
    expected = expected_trades(replay, exchange)
    assert len(expected) >= 20, "the window must hold enough trades to mean something"
    forget_markets(platform, exchange, [symbol])
    since = end_offsets(platform, platform.trades_topic)
    with FakeBinanceWs(replay, ping_interval_s=5.0) as ws, FakeBinanceRest(replay, exchange) as rest:
        arm(ws, rest)
        with producer(platform, exchange, [symbol], {**binance_env(ws, rest), **(extra_env or {})}, name) as proc:
            sleep_until(replay.end + timedelta(seconds=2))
            first = ws.connections[0].opened_us if ws.connections else None
            assert first is not None and first < replay.start.timestamp() * 1e6, (
                "the producer connected after the market started; raise the lead\n" + producer_log(name)
            )
            # The last gap (if any) is declared after the grace and backfilled: wait for the ledger.
            wait_until(
                lambda: all(r["status"] != "open" for r in ledger_rows(platform, exchange, [symbol], started)),
                timeout=60,
                interval=1,
                what="every gap to be filled",
            )
            time.sleep(2)  # deliberately: the producer must still be running a moment after its work is done
            assert proc.poll() is None, producer_log(name)
        assert proc.returncode == 0, producer_log(name)
    return expected, ws, rest, since, started


def test_hard_drop_is_reconnected_and_backfilled_exactly(platform: Settings) -> None:
    symbol = "BTCUSDT"

    def arm(ws: FakeBinanceWs, rest: FakeBinanceRest) -> None:
        # After 60 trades the connection dies without a close frame and the exchange refuses new ones
        # for 3 s: the trades of those seconds only exist in the exchange's REST history.
        ws.drop_next_connection_after(40, refuse_s=3.0)

    expected, ws, rest, since, started = run_capture(platform, "drop", "binance", BINANCE_SPOT, symbol, arm)
    sent_live = {i for c in ws.connections for i in c.sent}
    missed = len(expected) - len(sent_live)
    assert missed > 0, "the drop must make the producer miss trades"
    check_exactly_once(platform, since, "binance", symbol, expected)

    rows = ledger_rows(platform, "binance", [symbol], started)
    gaps = [r for r in rows if r["kind"] == "trade_ids"]
    disconnects = [r for r in rows if r["kind"] == "disconnect"]
    assert sum(r["last_id"] - r["first_id"] + 1 for r in gaps) == missed
    assert all(r["status"] == "filled" and r["filled"] == r["last_id"] - r["first_id"] + 1 for r in gaps)
    assert all("disconnect" in r["cause"] for r in gaps), [r["cause"] for r in gaps]
    assert disconnects and "1006" in disconnects[0]["cause"]
    assert any("aggTrades" in r.path for r in rest.requests)
    health = health_row(platform, "binance")
    assert health is not None and health["backfilled"] >= missed and health["reconnects"] >= 1
    check_candles(platform, "binance", symbol, expected)


def test_silent_stall_trips_the_watchdog_and_the_gap_is_filled(platform: Settings) -> None:
    symbol = "ETHUSDT"

    def arm(ws: FakeBinanceWs, rest: FakeBinanceRest) -> None:
        ws.stall_next_connection_after(15, seconds=60.0)  # socket open, nothing sent, nothing read

    expected, ws, _, since, started = run_capture(platform, "stall", "binance", BINANCE_SPOT, symbol, arm)
    assert ws.connections_accepted >= 2
    check_exactly_once(platform, since, "binance", symbol, expected)
    rows = ledger_rows(platform, "binance", [symbol], started)
    assert any(r["kind"] == "disconnect" and "watchdog" in r["cause"] for r in rows), rows
    gaps = [r for r in rows if r["kind"] == "trade_ids"]
    assert gaps and all(r["status"] == "filled" for r in gaps)
    check_candles(platform, "binance", symbol, expected)


def test_planned_rotation_loses_and_doubles_nothing(platform: Settings) -> None:
    symbol = "NEOUSDT"  # USD-M futures

    def arm(ws: FakeBinanceWs, rest: FakeBinanceRest) -> None:
        pass

    expected, ws, rest, since, started = run_capture(
        platform,
        "rotation",
        "binance-usdm",
        BINANCE_USDM,
        symbol,
        arm,
        # A 24-hour lifetime shrunk to 6 s, the connections overlapping for 2 s.
        {"CANDLELAKE_WS_LIFETIME_S": "5", "CANDLELAKE_WS_OVERLAP_S": "2"},
        seconds=30.0,
    )
    assert ws.connections_accepted >= 4
    sent = Counter(i for c in ws.connections for i in c.sent)
    assert any(n > 1 for n in sent.values()), "the overlaps must have delivered some trades twice"
    check_exactly_once(platform, since, "binance-usdm", symbol, expected)
    rows = ledger_rows(platform, "binance-usdm", [symbol], started)
    assert [r for r in rows if r["kind"] == "trade_ids"] == [], "an overlapped rotation leaves no gap"
    assert rest.requests == [] or all("aggTrades" not in r.path for r in rest.requests)
    check_candles(platform, "binance-usdm", symbol, expected)


def test_rate_limits_during_backfill_are_honoured(platform: Settings) -> None:
    symbol = "SANDUSDT"  # USD-M futures

    def arm(ws: FakeBinanceWs, rest: FakeBinanceRest) -> None:
        ws.drop_next_connection_after(10, refuse_s=3.0)

        def limit_once_dropped() -> None:
            # Armed once the connection is gone (the producer's symbol check at start-up is over): the
            # backfill's first request is rate limited, its retry banned; each says when to come back.
            wait_until(
                lambda: ws.connections and ws.connections[0].closed_us, timeout=120, interval=0.05, what="the drop"
            )
            rest.rate_limit_next(1, retry_after_s=2)
            rest.ban_next(1, retry_after_s=3)

        threading.Thread(target=limit_once_dropped, daemon=True).start()

    expected, _, rest, since, started = run_capture(
        platform, "ratelimit", "binance-usdm", BINANCE_USDM, symbol, arm, seconds=30.0
    )
    history = [r for r in rest.requests if "aggTrades" in r.path]
    statuses = [r.status for r in history]
    assert statuses[:3] == [429, 418, 200], statuses
    assert history[1].at - history[0].at >= 2.0 - 0.05
    assert history[2].at - history[1].at >= 3.0 - 0.05
    check_exactly_once(platform, since, "binance-usdm", symbol, expected)
    gaps = [r for r in ledger_rows(platform, "binance-usdm", [symbol], started) if r["kind"] == "trade_ids"]
    assert gaps and all(r["status"] == "filled" for r in gaps)
    check_candles(platform, "binance-usdm", symbol, expected)


MALFORMED = [
    "this is not JSON",
    '{"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1,"a":1,"s":"CTKUSDT","p":"NaN","q":"1",'
    '"f":1,"l":1,"T":1,"m":true}}',
    '{"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1,"a":2,"s":"CTKUSDT","p":"1.5","q":"-3",'
    '"f":1,"l":1,"T":1,"m":true}}',
    '{"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1,"a":3,"s":"CTKUSDT","p":"0","q":"1",'
    '"f":1,"l":1,"T":1,"m":true}}',
    '{"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1,"a":4,"s":"CTKUSDT","q":"1","f":1,"l":1,"T":1,"m":true}}',
    '{"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1,"a":5,"s":"CTKUSDT","p":"Infinity","q":"1",'
    '"f":1,"l":1,"T":1,"m":true}}',
    '{"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1,"a":6,"s":"CTKUSDT","p":"1.5","q":"1",'
    '"f":1,"l":1,"T":"soon","m":true}}',
    '{"stream":"zzzusdt@aggTrade","data":{"e":"aggTrade","E":1,"a":7,"s":"ZZZUSDT","p":"1.5","q":"1",'
    '"f":1,"l":1,"T":1700000000000,"m":true}}',
    '{"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1,"a":8,"s":"CTKUSDT","p":"1.5","q":"1",'
    '"f":1,"l":1,"T":99999999999999,"m":true}}',
    "[1, 2, 3]",
]


def test_malformed_messages_go_to_the_dead_letter_topic_and_valid_trades_all_arrive(platform: Settings) -> None:
    symbol = "CTKUSDT"  # USD-M futures
    injected: list[int] = []
    dead_since = end_offsets(platform, platform.dead_letter_topic)

    def arm(ws: FakeBinanceWs, rest: FakeBinanceRest) -> None:
        def inject() -> None:
            # 1,000 bad messages over ~10 s, in the same connection as the valid trades.
            wait_until(lambda: ws.open_connections, timeout=30, interval=0.1, what="the producer to connect")
            for n in range(1000):
                sent = functools.partial(ws.inject, MALFORMED[n % len(MALFORMED)])
                wait_until(sent, timeout=30, interval=0.05, what="a connection to inject into")
                injected.append(n)
                time.sleep(0.01)  # deliberately paced: spread over the stream, not one burst

        threading.Thread(target=inject, daemon=True).start()

    expected, _, _, since, _ = run_capture(
        platform, "malformed", "binance-usdm", BINANCE_USDM, symbol, arm, seconds=30.0
    )
    assert len(injected) == 1000
    check_exactly_once(platform, since, "binance-usdm", symbol, expected)
    dead = [json.loads(v) for _, v in read_topic(platform, platform.dead_letter_topic, dead_since)]
    ours = [d for d in dead if d["source"] == "binance-usdm-ws"]
    assert len(ours) == 1000, f"{len(ours)} dead letters for 1,000 malformed messages"
    assert Counter(d["raw"] for d in ours) == Counter(MALFORMED[n % len(MALFORMED)] for n in range(1000))
    assert all(d["reason"] for d in ours)
    reasons = {d["raw"]: d["reason"] for d in ours}
    assert "not a finite number" in reasons[MALFORMED[1]]
    assert "negative" in reasons[MALFORMED[2]]
    check_candles(platform, "binance-usdm", symbol, expected)


def test_backfill_command_fills_the_open_gaps_of_the_ledger(platform: Settings) -> None:
    """`candlelake backfill` on gaps no producer filled: exact ids sent, gaps closed, failures kept open."""
    from candlelake.ingest.gaps import GapLedger
    from tests.e2e.conftest import run_cli
    from tests.fakes.recording import LiveReplay

    symbol = "DOTUSDT"
    recording = window(BINANCE_SPOT, SECONDS, {symbol})
    replay = LiveReplay(recording, start=datetime.now(UTC) - timedelta(seconds=90))  # all has happened
    ids = [t.trade_id for t in expected_trades(replay, "binance")]
    started = datetime.now(UTC)
    ledger = GapLedger(platform.pg_dsn())
    try:
        # Clear earlier runs' rows for these exact ranges, then record two gaps as a producer would.
        inside = (ids[3], ids[12])  # ten ids the exchange has
        past_end = (ids[-2], ids[-1] + 5)  # two it has, five it has not (yet)
        with psycopg2.connect(platform.pg_dsn()) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM trade_gaps WHERE exchange = 'binance' AND symbol = %s", (symbol,))
        conn.close()
        gap_ids = [
            ledger.record_ids("binance", symbol, a, b, "test: a gap left open", "e2e") for a, b in (inside, past_end)
        ]
    finally:
        ledger.close_connection()
    since = end_offsets(platform, platform.trades_topic)
    with FakeBinanceRest(replay, "binance") as rest:
        env = {"CANDLELAKE_BINANCE_REST_URL": rest.url}
        rest.fail_next(20)  # the exchange is down: both gaps stay open, with a note
        down = run_cli("backfill", "--exchange", "binance", "--symbol", symbol, env=env, timeout=300)
        assert down.returncode == 1, down.stdout + down.stderr
        assert "2 still open" in down.stdout, down.stdout
        rest.clear_faults()
        result = run_cli("backfill", "--exchange", "binance", "--symbol", symbol, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 filled, 1 unfillable, 0 still open" in result.stdout, result.stdout
    rows = {r["gap_id"]: r for r in ledger_rows(platform, "binance", [symbol], started - timedelta(minutes=1))}
    assert rows[gap_ids[0]]["status"] == "filled" and rows[gap_ids[0]]["filled"] == 10
    assert rows[gap_ids[1]]["status"] == "unfillable" and rows[gap_ids[1]]["not_found"] == 5
    assert rows[gap_ids[0]]["attempts"] == 1 and "backfill failed" in rows[gap_ids[0]]["note"]
    sent = sorted(t.trade_id for t in trades_in_kafka(platform, since, {f"binance:{symbol}"}))
    assert sent == sorted([*ids[3:13], ids[-2], ids[-1]])
    listed = run_cli("gaps")
    assert listed.returncode == 0 and "unfillable" in listed.stdout
