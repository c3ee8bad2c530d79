"""Kill -9 the streaming job in mid-run and start it again: nothing lost, nothing counted twice."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest

from candlelake.config import Settings
from candlelake.platform import runtime
from candlelake.producer import Counters, KafkaTradeSink
from candlelake.simulator import Simulator
from tests.e2e.conftest import run_cli
from tests.e2e.test_pipeline import differences, lake_rows, pg_candles, wait_for
from tests.support.reference_candles import reference_candles

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
    time.sleep(5)  # some batches in, more on their way
    pid = runtime.running_pid(platform, "stream")
    assert pid, "the stream must be running before the kill"
    os.killpg(pid, signal.SIGKILL)
    wait_for("the killed driver to be gone", lambda: not runtime.pid_alive(pid), timeout=30, every=0.2)
    restarted = run_cli("up", "--only", "stream")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    sender.join()
    sink.close()
    assert counters.produced == N and counters.delivery_failures == 0

    expected = reference_candles(trades)
    wait_for(
        "the candles to equal the truth after the restart",
        lambda: not differences(expected, pg_candles(platform, exchange)),
        timeout=240,
    )
    assert differences(expected, pg_candles(platform, exchange)) == []
    rows = wait_for(
        f"{N} trades in the lake", lambda: r if len(r := lake_rows(platform, exchange)) >= N else None, timeout=120
    )
    assert len(rows) == N
    assert {(r["symbol"], r["trade_id"]) for r in rows} == {(t.symbol, t.trade_id) for t in trades}
