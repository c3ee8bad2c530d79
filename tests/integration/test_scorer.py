"""The scorer against real PostgreSQL and Kafka, with a webhook served on loopback.

Binance's XRP/ETH 1m klines of 2019-10-11 are one exchange's closed candles, with a 4 % pump injected at a
known minute. The scorer must raise it (the rules and the champion detector, here a forest fitted on the
clean day) as rows in `alerts`, records on an alerts topic of the test's own and POSTs to the webhook,
each exactly once across polls and across a restart; and a price rule must fire on its crossing.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaTimeoutError
from psycopg2.extras import execute_values

from candlelake.alerts import store
from candlelake.alerts.delivery import AlertPublisher, Webhook
from candlelake.alerts.record import AlertRecord
from candlelake.alerts.service import ScorerService
from candlelake.analytics import detector
from candlelake.analytics.features import MINUTE_US, Bar, features
from candlelake.analytics.injection import Event, inject
from candlelake.config import Settings
from candlelake.sources.klines import read_kline_file
from candlelake.util import from_us, to_us
from tests.fakes.webhook import FakeWebhook
from tests.support.postgres import rows

pytestmark = pytest.mark.integration

KLINES = Path(__file__).resolve().parents[1] / "fixtures" / "klines"
SYMBOL = "XRPETH"


@pytest.fixture(scope="module")
def bars() -> list[Bar]:
    """The real day, moved in time so that its last minute is the one before now: the scorer scores only
    the last minutes' candles (the rest fill its books)."""
    klines = read_kline_file(KLINES / "XRPETH-1m-2019-10-11.csv")
    now_us = time.time_ns() // 1000
    shift = now_us - now_us % MINUTE_US - MINUTE_US - to_us(klines[-1].open_time)
    return [Bar(to_us(k.open_time) + shift, k.close, k.volume, k.trades) for k in klines]


@pytest.fixture(scope="module")
def pump(bars) -> Event:
    return Event(bars[-7].open_time_us, "pump", 0.04, volume_multiple=20.0)  # up for 3 minutes, then back


@pytest.fixture(scope="module")
def closed(services: Settings, module_exchange: str, bars, pump) -> str:
    rows = [
        (
            module_exchange,
            SYMBOL,
            from_us(b.open_time_us),
            from_us(b.open_time_us + MINUTE_US - 1000),
            b.close,
            b.volume,
            b.trades,
        )
        for b in inject(bars, [pump])
    ]
    with psycopg2.connect(services.pg_dsn()) as conn, conn.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO candles (exchange, symbol, open_time, close_time, open, high, low, close, volume, "
            "quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, state) VALUES %s",
            [(e, s, o, c, p, p, p, p, v, 0, t, 0, 0, "closed") for e, s, o, c, p, v, t in rows],
        )
    conn.close()
    return module_exchange


@pytest.fixture(scope="module")
def topic(services: Settings) -> str:
    name = f"sctest-{uuid.uuid4().hex[:8]}-alerts"
    admin = KafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    admin.create_topics([NewTopic(name, 1, 1)])
    yield name
    admin.delete_topics([name])
    admin.close()


def topic_records(settings: Settings, topic: str) -> list[dict]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    part = TopicPartition(topic, 0)
    consumer.assign([part])
    consumer.seek_to_beginning(part)
    end = consumer.end_offsets([part])[part]
    out = []
    while consumer.position(part) < end:
        for records in consumer.poll(timeout_ms=500).values():
            out += [json.loads(r.value) for r in records]
    consumer.close()
    return out


def alert_rows(settings: Settings, exchange: str) -> list[tuple]:
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id, type, at, kind, detector, model_version, webhook_status, features->>'close' FROM alerts "
            "WHERE exchange = %s ORDER BY id",
            (exchange,),
        )
        rows = cur.fetchall()
    conn.close()
    return rows


@pytest.fixture(scope="module")
def forest(bars):
    return detector.fit(list(features(bars[:-60])), alerts_per_day=5)


def service(settings: Settings, topic: str, hook: FakeWebhook, forest) -> ScorerService:
    ours = dataclasses.replace(
        settings, alerts_topic=topic, anomaly_thresholds="return_z=6,volume_z=6", scorer_model_refresh_s=3600
    )
    return ScorerService(
        ours,
        publisher=AlertPublisher(ours.kafka_bootstrap, topic),
        webhook=Webhook(hook.url, backoff_s=0.05),
        load_champion=lambda: (forest, "7"),
    )


def test_an_injected_pump_is_raised_once_to_postgres_the_topic_and_the_webhook(
    services, closed, pump, topic, forest
) -> None:
    with FakeWebhook() as hook:
        hook.fail_next(1)  # the first POST fails and is retried
        scorer = service(services, topic, hook, forest)
        try:
            report = scorer.poll()
            assert report.candles >= 1440
            assert scorer.poll().raised == []  # the overlap re-reads, nothing is raised twice
        finally:
            scorer.close()
        rows = alert_rows(services, closed)
        at_pump = [r for r in rows if pump.start_us <= to_us(r[2]) < pump.start_us + 3 * MINUTE_US]
        assert {r[4] for r in at_pump} == {"rules", "isolation_forest"}, rows
        assert any(r[3] == "pump" for r in at_pump)
        assert {r[5] for r in at_pump if r[4] == "isolation_forest"} == {"7"}  # the champion's version
        assert all(r[6] == "delivered" for r in rows)
        ids = {r[0] for r in rows}
        assert {b["id"] for b in hook.received if b["exchange"] == closed} == ids
        assert hook.attempts == len(hook.received) + 1
        on_topic = [r for r in topic_records(services, topic) if r["exchange"] == closed]
        assert sorted(r["id"] for r in on_topic) == sorted(ids)
        assert all(r["candle_closed_at"] and r["features"]["close"] for r in on_topic)

        # A restarted scorer reads the same closed candles and raises nothing again.
        again = service(services, topic, hook, forest)
        try:
            assert [a for _, a in again.poll().raised if a.exchange == closed] == []
        finally:
            again.close()
        assert len(alert_rows(services, closed)) == len(rows)


def test_a_price_rule_fires_on_the_crossing_and_a_removed_one_does_not(services, closed, topic, forest) -> None:
    market = f"{closed}:{SYMBOL}"
    with psycopg2.connect(services.pg_dsn()) as conn, conn.cursor() as cur:
        rule = store.add_rule(cur, market, "above", "0.0020")
        gone = store.add_rule(cur, market, "above", "0.0019")
        store.remove_rule(cur, gone.id)
        with pytest.raises(store.RuleError, match="exists already"):
            store.add_rule(cur, market, "above", "0.00200")  # the same level, written otherwise
    conn.close()
    now_us = time.time_ns() // 1000
    minute = now_us - now_us % MINUTE_US

    def live_price(price: str, open_us: int) -> None:
        with psycopg2.connect(services.pg_dsn()) as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO candles (exchange, symbol, open_time, close_time, open, high, low, close, volume, "
                "quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, state) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1, 1, 1, 0, 0, 'live') "
                "ON CONFLICT (exchange, symbol, open_time) DO UPDATE SET close = EXCLUDED.close, updated_at = now()",
                (closed, SYMBOL, from_us(open_us), from_us(open_us + MINUTE_US - 1000), price, price, price, price),
            )
        conn.close()

    with FakeWebhook() as hook:
        scorer = service(services, topic, hook, forest)
        try:
            live_price("0.00195", minute)
            scorer.poll()  # arms the rule: the first price seen
            live_price("0.00201", minute + MINUTE_US)
            raised = [a for _, a in scorer.poll().raised if a.type == "price" and a.exchange == closed]
        finally:
            scorer.close()
    assert [(a.rule_id, a.kind, a.price) for a in raised] == [(rule.id, "above", Decimal("0.00201"))]
    assert [b["headline"] for b in hook.received if b["type"] == "price" and b["exchange"] == closed] == [
        raised[0].headline()
    ]


class RefusingOnce(AlertPublisher):
    """The real publisher, but Kafka "does not answer" the first time."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic)
        self.refused = 0

    def publish(self, alerts) -> None:
        if not self.refused:
            self.refused += 1
            raise KafkaTimeoutError("the broker did not answer (test)")
        super().publish(alerts)


def test_an_alert_kafka_refused_or_a_killed_scorer_never_sent_goes_out_on_a_later_poll(
    services, closed, topic, forest
) -> None:
    now_us = time.time_ns() // 1000
    # A scorer killed between the insert and the send left this row behind.
    orphan = AlertRecord(
        type="price",
        exchange=closed,
        symbol="OUTBOXUSDT",
        at_us=now_us - now_us % MINUTE_US,
        kind="below",
        detector="rule:outbox-test",
        price=Decimal("1.5"),
        features={"level": "2"},
    )
    with psycopg2.connect(services.pg_dsn()) as conn, conn.cursor() as cur:
        orphan_id = store.insert_alert(cur, orphan)
    conn.close()

    def published_at() -> object:
        return rows(services, "SELECT published_at FROM alerts WHERE id = %s", (orphan_id,))[0][0]

    ours = dataclasses.replace(services, alerts_topic=topic, scorer_model_refresh_s=3600)
    publisher = RefusingOnce(ours.kafka_bootstrap, topic)
    with FakeWebhook() as hook:
        scorer = ScorerService(ours, publisher=publisher, webhook=Webhook(hook.url), load_champion=lambda: None)
        try:
            scorer.poll()  # the start looks for what is pending; Kafka refuses it
            assert publisher.refused == 1 and published_at() is None
            assert [r for r in topic_records(services, topic) if r["id"] == orphan_id] == []
            scorer.poll()  # the next poll sends it again, and this time Kafka takes it
        finally:
            scorer.close()
        assert all(b["id"] != orphan_id for b in hook.received)  # the webhook gets only new alerts
    [sent] = [r for r in topic_records(services, topic) if r["id"] == orphan_id]
    assert (sent["symbol"], sent["kind"], sent["price"]) == ("OUTBOXUSDT", "below", "1.5")
    assert sent["features"] == {"level": "2"}
    assert published_at() is not None
