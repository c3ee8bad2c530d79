"""Trades later than the watermark: counted, absent from the live candles, corrected by the nightly chain."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest

from candlelake.config import Settings
from candlelake.simulator import Simulator
from tests.e2e.airflow_support import dags_test, rows
from tests.e2e.test_pipeline import differences, lake_rows, pg_candles, produce, wait_for
from tests.support.reference_candles import reference_candles

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]


def dropped_by_watermark_since(settings: Settings, since: datetime) -> int:
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(sum(rows_dropped_by_watermark), 0) FROM stream_progress "
            "WHERE query_name = 'live_candles' AND batch_id >= 0 AND batch_time >= %s",
            (since,),
        )
        value = int(cur.fetchone()[0])
    conn.close()
    return value


def test_late_trades_are_counted_kept_out_of_live_candles_and_corrected_by_the_batch(platform: Settings) -> None:
    exchange = f"late{uuid.uuid4().hex[:8]}"
    now_us = time.time_ns() // 1000
    on_time = Simulator(
        ["LATEUSDT"], rate=5, seed=11, start_time_us=now_us - 20_000_000, exchange=exchange, first_trade_id=1_000
    ).take(60)
    # Ten minutes old: far beyond the 2-minute watermark the on-time trades have pushed forward.
    late = Simulator(
        ["LATEUSDT"], rate=2, seed=12, start_time_us=now_us - 600_000_000, exchange=exchange, first_trade_id=1
    ).take(20)
    produce(platform, on_time)
    wait_for("the on-time candles", lambda: not differences(reference_candles(on_time), pg_candles(platform, exchange)))
    since = datetime.now(UTC)
    produce(platform, late)

    wait_for(
        "the late trades counted as dropped by the watermark",
        lambda: dropped_by_watermark_since(platform, since) >= len(late),
        timeout=120,
    )
    wait_for("every trade in the lake", lambda: len(lake_rows(platform, exchange)) == len(on_time) + len(late))
    live = pg_candles(platform, exchange)
    assert differences(reference_candles(on_time), live) == []  # the late minutes are not in the live candles

    start = datetime.fromtimestamp(late[0].trade_time_us // 60_000_000 * 60, UTC)
    end = datetime.fromtimestamp(on_time[-1].trade_time_us // 60_000_000 * 60 + 60, UTC)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "jobs" / "batch_candles.py"),
            "--exchange",
            exchange,
            "--start",
            start.isoformat(),
            "--end",
            end.isoformat(),
            "--write-postgres",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["trades_read"] == len(on_time) + len(late)

    curated = pg_candles(platform, exchange)
    truth = reference_candles(on_time + late)
    trading = {k: v for k, v in curated.items() if v["trades"] > 0}
    assert differences(truth, trading) == []
    assert {c["state"] for c in curated.values()} == {"curated"}
    # Between the late minutes and the on-time ones, every minute is there: empty ones carry the close.
    minutes = sorted(curated)
    assert len(minutes) == int((end - start).total_seconds() // 60)
    for before, after in itertools.pairwise(minutes):
        if curated[after]["trades"] == 0:
            assert curated[after]["open"] == curated[after]["close"] == curated[before]["close"]


@pytest.mark.skip(reason="written with issue 5, not yet run against the platform: the session ended first")
def test_late_trades_are_counted_kept_out_of_live_candles_and_corrected_by_the_nightly_chain(
    platform: Settings,
) -> None:
    exchange = f"late{uuid.uuid4().hex[:8]}"
    now_us = time.time_ns() // 1000
    # Two and a half minutes of trades ending 30 s ago: the first minute's live candle is behind the
    # 2-minute watermark by the end.
    on_time = Simulator(
        ["LATEUSDT"], rate=0.4, seed=11, start_time_us=now_us - 180_000_000, exchange=exchange, first_trade_id=1_000
    ).take(60)
    # Ten minutes old: minutes the live candles never had.
    late = Simulator(
        ["LATEUSDT"], rate=2, seed=12, start_time_us=now_us - 600_000_000, exchange=exchange, first_trade_id=1
    ).take(20)
    # A straggler inside the first on-time minute, sent after its live candle was built: the curated
    # load must correct that candle.
    first = on_time[0]
    straggler = dataclasses.replace(first, trade_id=5_000, price=first.price * 2, trade_time_us=first.trade_time_us + 1)
    produce(platform, on_time)
    wait_for("the on-time candles", lambda: not differences(reference_candles(on_time), pg_candles(platform, exchange)))
    since = datetime.now(UTC)
    produce(platform, [*late, straggler])

    wait_for(
        "the late trades counted as dropped by the watermark",
        lambda: dropped_by_watermark_since(platform, since) >= len(late) + 1,
        timeout=120,
    )
    everything = on_time + late + [straggler]
    wait_for("every trade in the lake", lambda: len(lake_rows(platform, exchange)) == len(everything))
    live = pg_candles(platform, exchange)
    assert differences(reference_candles(on_time), live) == []  # the late trades are not in the live candles

    days = sorted({datetime.fromtimestamp(t.trade_time_us / 1e6, UTC).date() for t in everything})
    for day in days:  # one day, unless the test runs across midnight UTC
        conf = {"exchange": exchange, "trade_date": day.isoformat()}
        compaction = {"trade_date": day.isoformat(), "exchanges": [exchange], "wait_for_lake": False}
        chain = (("lake_compaction", compaction), ("data_quality", conf), ("load_curated_candles", conf))
        for dag_id, dag_conf in chain:
            result = dags_test(platform, dag_id, dag_conf)
            assert result.returncode == 0, f"{dag_id}:\n{(result.stdout + result.stderr)[-4000:]}"

    curated = pg_candles(platform, exchange)
    truth = reference_candles(everything)
    trading = {k: v for k, v in curated.items() if v["trades"] > 0}
    assert differences(truth, trading) == []
    assert {c["state"] for c in curated.values()} == {"curated"}
    # Between the late minutes and the on-time ones, every minute is there: empty ones carry the close.
    minutes = sorted(curated)
    for before, after in itertools.pairwise(minutes):
        assert (after[2] - before[2]).total_seconds() == 60
        if curated[after]["trades"] == 0:
            assert curated[after]["open"] == curated[after]["close"] == curated[before]["close"]
    # The straggler's minute is a late-data correction, recorded with its values before and after.
    corrected = rows(
        platform,
        "SELECT c.open_time, c.was_state, c.before, c.after, l.changed FROM candle_corrections c "
        "JOIN curated_loads l USING (load_id) WHERE c.exchange = %s",
        (exchange,),
    )
    straggler_minute = datetime.fromtimestamp(first.trade_time_us // 60_000_000 * 60, UTC)
    assert [r[0] for r in corrected] == [straggler_minute]
    assert corrected[0][1] in ("live", "closed") and corrected[0][4] == 1
