"""Kill -9 the streaming job in mid-run and start it again: nothing lost, nothing counted twice."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from datetime import timedelta

import pytest

from candlelake.config import Settings
from candlelake.ingest.counters import Counters
from candlelake.ingest.kafka_sinks import KafkaTradeSink
from candlelake.platform import runtime
from candlelake.sources.simulator import Simulator
from tests.e2e.conftest import run_cli
from tests.e2e.test_pipeline import differences, lake_rows, pg_candles
from tests.support.reference_candles import reference_candles
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

N = 3000


def test_streaming_driver_killed_mid_run_recovers_exactly(platform: Settings) -> None:
    exchange = f"kill{uuid.uuid4().hex[:8]}"
    now_us = time.time_ns() // 1000
    # Trade times span the last ~50 s; they are sent over ~20 s while the job is killed and restarted.
    trades = Simulator(
        ["AAAUSDT", "BBBUSDT", "CCCUSDT"], rate=N / 50, seed=9, start_time_us=now_us - 50_000_000, exchange=exchange
    ).take(N)
    counters = Counters()
    sink = KafkaTradeSink(platform, counters, client_id="e2e-kill")

    def send_all() -> None:
        for i, trade in enumerate(trades):
            sink.send(trade)
            if i % 150 == 0:
                time.sleep(1)
        sink.flush()

    sender = threading.Thread(target=send_all)
    sender.start()
    # Killed once some batches are in (their candles written), with more on their way.
    wait_until(lambda: pg_candles(platform, exchange), timeout=60, interval=0.2, what="the run's first candles")
    pid = runtime.running_pid(platform, "stream")
    assert pid, "the stream must be running before the kill"
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not runtime.pid_alive(pid), timeout=30, interval=0.2, what="the killed driver to be gone")
    restarted = run_cli("up", "--only", "stream")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    sender.join()
    sink.close()
    assert counters.produced == N and counters.delivery_failures == 0

    expected = reference_candles(trades)
    wait_until(
        lambda: not differences(expected, pg_candles(platform, exchange)),
        timeout=240,
        interval=2.0,
        what="the candles to equal the truth after the restart",
    )
    assert differences(expected, pg_candles(platform, exchange)) == []
    rows = wait_until(
        lambda: r if len(r := lake_rows(platform, exchange)) >= N else None,
        timeout=120,
        interval=2.0,
        what=f"{N} trades in the lake",
    )
    assert len(rows) == N
    assert {(r["symbol"], r["trade_id"]) for r in rows} == {(t.symbol, t.trade_id) for t in trades}


def test_kafka_broker_killed_during_production_loses_and_doubles_nothing(platform: Settings) -> None:
    """Kill -9 the broker while the producer streams Coinbase matches, start it again: every trade the
    producer had (or later got) acknowledged is in the topic, and the candles count each trade once."""
    from tests.e2e.ingest_support import (
        end_offsets,
        expected_trades,
        forget_markets,
        health_row,
        live,
        market_candles,
        producer,
        producer_log,
        sleep_until,
        trades_in_kafka,
        window,
    )
    from tests.fakes.coinbase_rest import FakeCoinbaseRest
    from tests.fakes.coinbase_ws import FakeCoinbaseWs
    from tests.fakes.recording import COINBASE

    replay = live(window(COINBASE, 40.0), lead_s=12.0)
    expected = expected_trades(replay, "coinbase")
    products = sorted({t.symbol for t in expected})
    forget_markets(platform, "coinbase", products)
    since = end_offsets(platform, platform.trades_topic)
    with FakeCoinbaseWs(replay) as ws, FakeCoinbaseRest(replay) as rest:
        env = {"CANDLELAKE_COINBASE_WS_URL": ws.url, "CANDLELAKE_COINBASE_REST_URL": rest.url}
        with producer(platform, "coinbase", products, env, "kafka-restart") as proc:
            sleep_until(replay.start + timedelta(seconds=12))
            pid = runtime.running_pid(platform, "kafka")
            assert pid, "Kafka must be running before the kill"
            os.killpg(pid, signal.SIGKILL)
            wait_until(
                lambda: not runtime.pid_alive(pid), timeout=30, interval=0.2, what="the killed broker to be gone"
            )
            # Deliberately 5 s of matches received with nowhere to send them: the producer must keep them.
            time.sleep(5)
            restarted = run_cli("up", "--only", "kafka,stream")
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
            sleep_until(replay.end + timedelta(seconds=3))
            assert proc.poll() is None, producer_log("kafka-restart")
        assert proc.returncode == 0, producer_log("kafka-restart")
    health = health_row(platform, "coinbase")
    assert health is not None
    assert health["delivery_failures"] == 0, producer_log("kafka-restart")
    got = trades_in_kafka(platform, since, {f"coinbase:{p}" for p in products})
    consumed = {(t.symbol, t.trade_id) for t in got}
    # Every acknowledged trade is in the topic: the producer's count of acknowledged trades equals the
    # distinct trades read back (the matches, plus the `last_match` of each product at each subscribe).
    assert health["produced"] == len(consumed), producer_log("kafka-restart")
    assert {(t.symbol, t.trade_id) for t in expected} <= consumed
    for product in products:
        mine = [t for t in expected if t.symbol == product]
        truth = reference_candles([t for t in got if t.symbol == product])  # counts each trade id once
        # Compared over the minutes of the replay's matches (market_candles reads the same minutes).
        first = min(t.trade_time_us for t in mine) // 60_000_000 * 60
        last = max(t.trade_time_us for t in mine) // 60_000_000 * 60
        wanted = {k: v for k, v in truth.items() if first <= k[2].timestamp() <= last}
        wait_until(
            lambda mine=mine, wanted=wanted, product=product: (
                not differences(wanted, market_candles(platform, "coinbase", product, mine))
            ),
            timeout=180,
            interval=2.0,
            what=f"the candles of coinbase:{product} to count each trade once",
        )
    # Leave the platform as the other tests expect it.
    assert run_cli("up").returncode == 0
