"""Dead-letter counts in PostgreSQL equal the dead-letter topic, per code, and a second replay adds to them.

`candlelake.runs.replay.run` replays a recorded Binance capture with malformed lines of several reason
classes into Kafka topics and a PostgreSQL database of this module's own (the platform's schema), so
the topic holds exactly our dead letters and `dead_letter_counts` exactly our counts; both are dropped
at the end. The platform's PostgreSQL and Kafka are the tier's (tests/integration/conftest.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from kafka import KafkaConsumer, TopicPartition
from psycopg2 import errors, sql

from candlelake.config import Settings
from candlelake.ingest.dead_letter import EXAMPLE_CHARS
from candlelake.platform.kafka import KafkaComponent, admin_client
from candlelake.platform.postgres import PostgresComponent, schema_sql
from candlelake.runs import replay

pytestmark = pytest.mark.integration

SPOT = Path(__file__).resolve().parents[1] / "fixtures" / "replay" / "binance-spot-aggtrade.jsonl"


@pytest.fixture(scope="module")
def settings(services: Settings) -> Iterator[Settings]:
    """The tier's services with a database and topics of our own, dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    ours = dataclasses.replace(
        services,
        pg_database=f"candlelake_dltest_{tag}",
        trades_topic=f"dltest-{tag}-trades",
        dead_letter_topic=f"dltest-{tag}-dead-letter",
        prices_topic=f"dltest-{tag}-prices",
        price_kpis_topic=f"dltest-{tag}-prices.kpis",
        alerts_topic=f"dltest-{tag}-alerts",
    )
    topics = KafkaComponent(ours).topic_specs()
    admin_pg = PostgresComponent(services)._superuser_conn()
    try:
        with admin_pg.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(ours.pg_database), sql.Identifier(ours.pg_user)
                )
            )
        with psycopg2.connect(ours.pg_dsn()) as conn, conn.cursor() as cur:
            cur.execute(schema_sql())
        conn.close()
        with admin_client(ours.kafka_bootstrap, 15_000, "dead-letter-counts-test") as admin:
            admin.create_topics(topics, timeout_ms=15_000)
            admin.wait_for_topics(list(topics), timeout_ms=15_000)
        yield ours
    finally:
        try:
            with admin_client(ours.kafka_bootstrap, 15_000, "dead-letter-counts-test") as admin:
                admin.delete_topics(list(topics), timeout_ms=15_000)
        finally:
            with admin_pg.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(ours.pg_database)))
            admin_pg.close()


def capture(path: Path) -> Path:
    """The capture's first 20 trades and 8 dead letters: malformed 4, non-positive-price 1, not-finite 1,
    missing-field 2; one malformed line is longer than the example kept."""
    spot = SPOT.read_text().splitlines()[:20]
    bad = [
        "{not json",
        "garbage line",
        "x" * (EXAMPLE_CHARS * 3),
        "[1,2]",
        spot[1].replace('"p":"', '"p":"-'),
        re.sub(r'"p":"[^"]*"', '"p":"NaN"', spot[2]),
        spot[3].replace('"q":', '"qq":'),
        spot[4].replace('"T":', '"TT":'),
    ]
    path.write_text("\n".join([spot[0], *bad[:4], *spot[5:], *bad[4:]]) + "\n")
    return path


def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    """Every record on our dead-letter topic, from the start to the end offsets of now."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        partitions = [
            TopicPartition(settings.dead_letter_topic, p)
            for p in sorted(consumer.partitions_for_topic(settings.dead_letter_topic) or [])
        ]
        end = consumer.end_offsets(partitions)
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        values: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(p) < end[p] for p in partitions) and time.monotonic() < deadline:
            for partition, records in consumer.poll(timeout_ms=1000).items():
                values.extend(json.loads(r.value) for r in records if r.offset < end[partition])
        return values
    finally:
        consumer.close()


def table(settings: Settings) -> dict[tuple[date, str, str], tuple[Any, ...]]:
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT day, source, code, count, last_reason, last_raw, first_at, last_at FROM dead_letter_counts")
        rows = {(day, source, code): tuple(rest) for day, source, code, *rest in cur.fetchall()}
    conn.close()
    return rows


def on_topic(records: list[dict[str, Any]]) -> Counter[tuple[date, str, str]]:
    return Counter((datetime.fromisoformat(d["time"]).date(), d["source"], d["code"]) for d in records)


def test_counts_per_code_equal_the_dead_letter_topic_and_a_second_replay_adds_to_them(
    settings: Settings, tmp_path: Path
) -> None:
    file = capture(tmp_path / "capture.jsonl")
    said: list[str] = []
    assert replay.run(settings, str(file), None, None, None, said.append, chain=False) == 0
    assert "rejected    8 (malformed 4, missing-field 2, non-positive-price 1, not-finite 1)" in said[0]

    first = dead_letters(settings)
    assert Counter(d["code"] for d in first) == {
        "malformed": 4,
        "missing-field": 2,
        "non-positive-price": 1,
        "not-finite": 1,
    }
    rows = table(settings)
    assert {key: row[0] for key, row in rows.items()} == on_topic(first)
    for (_, source, code), (_, reason, raw, first_at, last_at) in rows.items():
        ours = [d for d in first if (d["source"], d["code"]) == (source, code)]
        assert source in ("replay:ws-capture", "replay:binance-ws") and first_at <= last_at
        assert len(raw) <= EXAMPLE_CHARS and raw in {d["raw"][:EXAMPLE_CHARS] for d in ours}
        assert reason in {d["reason"] for d in ours}
        assert first_at == min(datetime.fromisoformat(d["time"]) for d in ours)
        assert last_at == max(datetime.fromisoformat(d["time"]) for d in ours)

    assert replay.run(settings, str(file), None, None, None, said.append, chain=False) == 0
    both = dead_letters(settings)
    assert len(both) == 16
    again = table(settings)
    assert {key: row[0] for key, row in again.items()} == on_topic(both)
    assert sum(row[0] for row in again.values()) == 16
    for key, (_, _, _, first_at, last_at) in again.items():
        if key in rows:  # the same UTC day (a replay across midnight starts a new row)
            assert first_at == rows[key][3] and last_at > rows[key][4]


def test_the_dashboard_role_can_read_the_counts_but_not_write_them(services: Settings) -> None:
    """In the platform's database (the grants of `up`), the read-only role sees the row the producer's role
    wrote, and may not change it."""
    source = f"dltest-{uuid.uuid4().hex[:8]}"
    row = (date(2026, 12, 7), source, "bad_json", 3, "not JSON: Expecting value", "{oops")
    with psycopg2.connect(services.pg_dsn()) as writer, writer.cursor() as cur:
        cur.execute(
            "INSERT INTO dead_letter_counts (day, source, code, count, last_reason, last_raw)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            row,
        )
    writer.close()
    try:
        with psycopg2.connect(services.pg_reader_dsn) as reader, reader.cursor() as cur:
            cur.execute(
                "SELECT day, source, code, count, last_reason, last_raw FROM dead_letter_counts WHERE source = %s",
                (source,),
            )
            assert cur.fetchall() == [row]
            # Refused twice over: the role's transactions are read-only, and it holds no DELETE grant.
            with pytest.raises((errors.ReadOnlySqlTransaction, errors.InsufficientPrivilege)):
                cur.execute("DELETE FROM dead_letter_counts WHERE source = %s", (source,))
        reader.close()
    finally:
        with psycopg2.connect(services.pg_dsn()) as writer, writer.cursor() as cur:
            cur.execute("DELETE FROM dead_letter_counts WHERE source = %s", (source,))
        writer.close()
