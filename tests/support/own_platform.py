"""A database and topics of a test's own on the platform's PostgreSQL and Kafka, for tests that start
a streaming job or a producer: the job's checkpoint guard refuses to start beside other live candles,
and a topic another test writes to would mix its trades in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from psycopg2 import sql

from candlelake.config import Settings
from candlelake.platform.kafka import KafkaComponent, admin_client
from candlelake.platform.postgres import PostgresComponent, schema_sql

TIMEOUT_MS = 15_000


def topic_env(prefix: str) -> dict[str, str]:
    """The topic settings of `prefix`-named topics (trades, dead letters, prices, KPIs, alerts)."""
    return {
        "CANDLELAKE_TRADES_TOPIC": f"{prefix}-trades",
        "CANDLELAKE_DEAD_LETTER_TOPIC": f"{prefix}-dead-letter",
        "CANDLELAKE_PRICES_TOPIC": f"{prefix}-prices",
        "CANDLELAKE_PRICE_KPIS_TOPIC": f"{prefix}-prices.kpis",
        "CANDLELAKE_ALERTS_TOPIC": f"{prefix}-alerts",
    }


@contextmanager
def own_database_and_topics(platform: Settings, settings: Settings, client_id: str) -> Iterator[None]:
    """Create `settings`' database (the schema applied) and topics on `platform`'s PostgreSQL and Kafka;
    delete both afterwards, the database even when a session still holds it."""
    admin = PostgresComponent(platform)._superuser_conn()  # its socket is in the platform's runtime
    database = sql.Identifier(settings.pg_database)
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(database, sql.Identifier(settings.pg_user)))
        with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
            cur.execute(schema_sql())
        conn.close()
        topics = KafkaComponent(settings).topic_specs()
        with admin_client(settings.kafka_bootstrap, TIMEOUT_MS, client_id) as kafka:
            kafka.create_topics(topics, timeout_ms=TIMEOUT_MS)
            kafka.wait_for_topics(list(topics), timeout_ms=TIMEOUT_MS)
        yield
    finally:
        try:
            with admin_client(settings.kafka_bootstrap, TIMEOUT_MS, client_id) as kafka:
                kafka.delete_topics(list(KafkaComponent(settings).topic_specs()), timeout_ms=TIMEOUT_MS)
        finally:
            with admin.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))
            admin.close()
