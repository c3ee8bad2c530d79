"""Trades later than the watermark: counted, absent from the live candles, corrected by the nightly chain.

The correction runs as in production: a `data_quality` run triggered through the scheduler from its form
(recompute from the lake, validate), whose asset starts `load_curated_candles`.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg2
import pytest

from candlelake import coverage
from candlelake.config import Settings
from candlelake.sources.simulator import Simulator
from tests.e2e.airflow_support import failed_task_logs, next_run, trigger
from tests.e2e.test_pipeline import differences, lake_rows, pg_candles, produce
from tests.support.postgres import rows
from tests.support.reference_candles import reference_candles
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


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


def test_late_trades_are_counted_kept_out_of_live_candles_and_corrected_by_the_curated_load(
    platform: Settings,
) -> None:
    exchange = f"late{uuid.uuid4().hex[:8]}"
    now_us = time.time_ns() // 1000
    # 12 s of trades from 110 s ago: inside the 2-minute watermark on arrival, and behind it a minute later.
    on_time = Simulator(
        ["LATEUSDT"], rate=5, seed=11, start_time_us=now_us - 110_000_000, exchange=exchange, first_trade_id=1_000
    ).take(60)
    # Ten minutes old: far beyond the 2-minute watermark, minutes the live candles never get.
    late = Simulator(
        ["LATEUSDT"], rate=2, seed=12, start_time_us=now_us - 600_000_000, exchange=exchange, first_trade_id=1
    ).take(20)
    # The test sends into Kafka as a feed would; what that feed watched is its coverage, recorded as the
    # producer does: from the first late minute to the end of the last on-time one.
    watched = (
        late[0].trade_time_us // 60_000_000 * 60_000_000,
        (on_time[-1].trade_time_us // 60_000_000 + 1) * 60_000_000,
    )
    coverage.record_dsn(platform.pg_dsn(), [coverage.Interval(exchange, "LATEUSDT", "test", "live", *watched)])
    produce(platform, on_time)
    wait_until(
        lambda: not differences(reference_candles(on_time), pg_candles(platform, exchange)),
        timeout=180,
        interval=2.0,
        what="the on-time candles",
    )
    since = datetime.now(UTC)
    produce(platform, late)

    # A straggler inside the first on-time minute, sent once the watermark has closed the live candles
    # (they are then also behind the cut a recompute of today makes): the curated load must correct a
    # closed candle and record it.
    first = on_time[0]
    first_minute = datetime.fromtimestamp(first.trade_time_us // 60_000_000 * 60, UTC)
    wait_until(
        lambda: {c["state"] for c in pg_candles(platform, exchange).values()} == {"closed"},
        timeout=300,
        interval=2.0,
        what="the on-time minutes closed by the watermark",
    )
    straggler = dataclasses.replace(first, trade_id=5_000, price=first.price * 2, trade_time_us=first.trade_time_us + 1)
    produce(platform, [straggler])
    wait_until(
        lambda: dropped_by_watermark_since(platform, since) >= len(late) + 1,
        timeout=120,
        interval=2.0,
        what="the late trades and the straggler counted as dropped by the watermark",
    )
    everything = [*on_time, *late, straggler]
    wait_until(
        lambda: len(lake_rows(platform, exchange)) == len(everything),
        timeout=180,
        interval=2.0,
        what="every trade in the lake",
    )
    live = pg_candles(platform, exchange)
    assert differences(reference_candles(on_time), live) == []  # neither the late trades nor the straggler

    # By hand from the form, as an operator re-checks a day: the recompute reads the day's bronze files
    # (the compaction in front of it is test_nightly_chain.py's), and the asset starts the load. Two
    # days only when the test runs across midnight UTC.
    for day in sorted({datetime.fromtimestamp(t.trade_time_us / 1e6, UTC).date() for t in everything}):
        started = datetime.now(UTC)
        audit = trigger(platform, "data_quality", {"exchange": exchange, "trade_date": day.isoformat()})
        assert audit.state == "success", failed_task_logs(platform, audit)
        load = next_run(platform, "load_curated_candles", started, exchange)
        assert load.state == "success", f"load_curated_candles {load.state}:\n{failed_task_logs(platform, load)}"

    curated = pg_candles(platform, exchange)
    truth = reference_candles(everything)
    trading = {k: v for k, v in curated.items() if v["trades"] > 0}
    assert differences(truth, trading) == []
    assert {c["state"] for c in curated.values()} == {"curated"}
    # From the first late minute on, every minute is there: the empty ones carry the last close.
    minutes = sorted(curated)
    assert minutes[0][2] == datetime.fromtimestamp(late[0].trade_time_us // 60_000_000 * 60, UTC)
    for before, after in itertools.pairwise(minutes):
        assert (after[2] - before[2]).total_seconds() == 60
        if curated[after]["trades"] == 0:
            assert curated[after]["open"] == curated[after]["close"] == curated[before]["close"]
    # The straggler's minute is the one late-data correction, with its values before and after.
    corrected = rows(
        platform,
        "SELECT c.open_time, c.was_state, c.before, c.after, l.changed FROM candle_corrections c "
        "JOIN curated_loads l USING (load_id) WHERE c.exchange = %s",
        (exchange,),
    )
    assert [(r[0], r[1], r[4]) for r in corrected] == [(first_minute, "closed", 1)]
    fixed = curated[(exchange, "LATEUSDT", first_minute)]
    assert Decimal(corrected[0][3]["high"]) == fixed["high"] == straggler.price
    assert Decimal(corrected[0][2]["high"]) == live[(exchange, "LATEUSDT", first_minute)]["high"]
