"""A pump in simulated trades becomes an alert: on the `alerts` topic, in PostgreSQL and at the webhook.

The market's last 90 minutes are simulated trades too, but older than the live watermark, so they reach
PostgreSQL as the nightly batch would have left them: curated candles computed from those trades, their
minutes covered. The pump minute goes the live way: the trades through Kafka into the stream, which
closes the candle once the watermark passes it (about three minutes later); the platform's scorer must
raise it within seconds of that. The webhook is a local receiver on the port the platform was told
(tests/e2e/conftest.py).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg2
import pytest
from psycopg2.extras import execute_values

from candlelake.config import Settings
from candlelake.sources.simulator import Simulator
from candlelake.util import from_us
from tests.e2e.conftest import FAKE_WEBHOOK_PORT
from tests.e2e.ingest_support import end_offsets, read_topic
from tests.e2e.test_pipeline import produce
from tests.fakes.webhook import FakeWebhook
from tests.support.postgres import rows
from tests.support.reference_candles import reference_candles
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

MINUTE_US = 60_000_000
HISTORY_MINUTES = 90
SYMBOL = "PUMPUSDT"
# What the scorer may take from a candle's closing to its alert: the poll interval (1 s) and the write.
# A requirement of the issue ("within seconds"), held loosely so that a busy CI machine does not fail it;
# bench/alert_latency.py measures it.
MAX_DELAY_S = 30.0


def seed_history(settings: Settings, exchange: str, trades: list) -> None:
    candles = reference_candles(trades)
    values = [
        (
            exchange,
            SYMBOL,
            c.open_time,
            from_us(int(c.open_time.timestamp()) * 1_000_000 + MINUTE_US - 1000),
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
            c.quote_volume,
            c.trades,
            c.taker_buy_volume,
            c.taker_buy_quote_volume,
        )
        for c in candles.values()
    ]
    first = min(c.open_time for c in candles.values())
    last = max(c.open_time for c in candles.values())
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO candles (exchange, symbol, open_time, close_time, open, high, low, close, volume, "
            "quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, state, coverage) VALUES %s",
            values,
            template="(" + ", ".join(["%s"] * 13) + ", 'curated', 'complete')",
        )
        cur.execute(
            "INSERT INTO coverage (exchange, symbol, source, kind, started_at, ended_at) "
            "VALUES (%s, %s, 'e2e-history', 'replay', %s, %s)",
            (exchange, SYMBOL, first, datetime.fromtimestamp(last.timestamp() + 60, UTC)),
        )
    conn.close()


def test_an_injected_pump_reaches_the_topic_postgres_and_the_webhook_within_seconds(platform: Settings) -> None:
    exchange = f"pump{uuid.uuid4().hex[:8]}"
    now_us = time.time_ns() // 1000
    # The minute under way: newer than the live watermark (two minutes behind), and its candle closes
    # a minute sooner than the next one's would.
    pump_minute = now_us - now_us % MINUTE_US
    start = pump_minute - HISTORY_MINUTES * MINUTE_US
    sim = Simulator([SYMBOL], rate=2, seed=17, start_time_us=start, exchange=exchange, first_trade_id=1)
    history = [t for t in sim.take(HISTORY_MINUTES * 120 + 200) if t.trade_time_us < pump_minute]
    seed_history(platform, exchange, history)
    # The pump: 40 trades 5 % above the last price, each 20 times the usual size, in the minute's first 4 s.
    last = history[-1]
    pump = [
        dataclasses.replace(
            last,
            trade_id=last.trade_id + 1 + i,
            price=(last.price * Decimal("1.05")).quantize(last.price),
            qty=last.qty * 20,
            trade_time_us=pump_minute + 100_000 * i + 1000,
            ingest_time_us=pump_minute + 100_000 * i + 1000,
        )
        for i in range(40)
    ]
    since = end_offsets(platform, platform.alerts_topic)
    with FakeWebhook(port=FAKE_WEBHOOK_PORT) as hook:
        # Sent once their times have passed: a trade from the future would move the watermark ahead.
        wait_until(lambda: time.time_ns() // 1000 > pump_minute + 5_000_000, timeout=10, what="the pump's seconds")
        produce(platform, pump)
        found = wait_until(
            lambda: rows(
                platform,
                "SELECT id, kind, raised_at, candle_closed_at FROM alerts "
                "WHERE exchange = %s AND type = 'anomaly' AND detector = 'rules' AND at = %s",
                (exchange, from_us(pump_minute)),
            ),
            timeout=420,
            interval=1,
            what="the rules' anomaly of the pump's candle in PostgreSQL",
        )
        [(alert_id, kind, raised_at, closed_at)] = found
        assert kind == "pump"
        delay = (raised_at - closed_at).total_seconds()
        assert 0 <= delay <= MAX_DELAY_S, f"raised {delay:.1f}s after the candle closed"
        posted = wait_until(
            lambda: [b for b in hook.received if b.get("id") == alert_id], timeout=60, what="the webhook's POST"
        )
    assert posted[0]["kind"] == "pump" and posted[0]["exchange"] == exchange and "text" in posted[0]
    on_topic = [
        json.loads(v)
        for k, v in read_topic(platform, platform.alerts_topic, since)
        if k == f"{exchange}:{SYMBOL}".encode()
    ]
    assert alert_id in [r["id"] for r in on_topic]
    status = wait_until(
        lambda: rows(
            platform, "SELECT webhook_status FROM alerts WHERE id = %s AND webhook_status IS NOT NULL", (alert_id,)
        ),
        timeout=30,
        what="the alert's webhook status",
    )
    assert status[0][0] == "delivered"
