"""`candlelake replay` into the real Kafka (the platform's, at CANDLELAKE_KAFKA_BOOTSTRAP).

The test records the end offsets of `trades` and the dead-letter topic, runs the real command on a
recorded Binance capture with one malformed line and one kline added, then reads both topics from
those offsets: exactly the capture's trades arrive, once each, and the malformed line is in the
dead-letter topic with its reason. Kafka is the tier's (tests/integration/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from kafka import KafkaConsumer, TopicPartition

from candlelake.config import Settings, load_settings

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "candlelake")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "replay"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def consumer(settings: Settings) -> Iterator[KafkaConsumer]:
    try:
        client = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, request_timeout_ms=15_000
        )
        client.topics()
    except Exception as exc:
        pytest.fail(f"Kafka at {settings.kafka_bootstrap} does not answer ({exc}); run `candlelake up` first")
    yield client
    client.close()


def end_offsets(consumer: KafkaConsumer, topic: str) -> dict[TopicPartition, int]:
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    assert partitions, f"topic {topic} does not exist"
    return dict(consumer.end_offsets(partitions))


def read_between(
    consumer: KafkaConsumer, start: dict[TopicPartition, int], end: dict[TopicPartition, int]
) -> list[dict[str, Any]]:
    consumer.assign(list(start))
    for partition, offset in start.items():
        consumer.seek(partition, offset)
    values: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while any(consumer.position(p) < end[p] for p in start) and time.monotonic() < deadline:
        for partition, records in consumer.poll(timeout_ms=1000).items():
            values.extend(json.loads(r.value) for r in records if r.offset < end[partition])
    return values


def test_replay_sends_exactly_the_captured_trades_and_dead_letters_a_malformed_line(
    consumer: KafkaConsumer, settings: Settings, tmp_path: Path
) -> None:
    spot = (FIXTURES / "binance-spot-aggtrade.jsonl").read_text().splitlines()
    kline = (FIXTURES / "binance-spot-kline_1m.jsonl").read_text().splitlines()[0]
    malformed = spot[3].replace('"q":', f'"marker":"{uuid.uuid4()}","q":').replace('"p":"', '"p":"-')
    capture = tmp_path / "capture.jsonl"
    capture.write_text("\n".join([*spot[:3], malformed, kline, *spot[4:], spot[0]]) + "\n")
    expected = {(m["data"]["s"], m["data"]["a"]) for m in map(json.loads, spot) if m["data"] is not None}
    expected.discard((json.loads(spot[3])["data"]["s"], json.loads(spot[3])["data"]["a"]))

    trades_start = end_offsets(consumer, settings.trades_topic)
    dead_start = end_offsets(consumer, settings.dead_letter_topic)
    started_us = time.time_ns() // 1000
    result = subprocess.run(
        [CLI, "replay", str(capture), "--no-chain"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "accepted    199" in result.stdout and "delivered 199" in result.stdout
    assert "rejected    1 (non-positive-price 1)" in result.stdout
    assert "duplicates  1" in result.stdout and "skipped     1" in result.stdout
    # A capture from 2025: older than any live stream, and said so, with what to run instead of the chain.
    assert "199 of 199 trades are older than the live stream's watermark" in result.stdout
    assert "--no-chain: trigger lake_compaction for binance " in result.stdout

    trades_end = end_offsets(consumer, settings.trades_topic)
    dead_end = end_offsets(consumer, settings.dead_letter_topic)
    arrived = [
        t
        for t in read_between(consumer, trades_start, trades_end)
        if t.get("source") == "replay:binance-ws" and t.get("ingest_time", 0) >= started_us
    ]
    assert sorted((t["symbol"], t["trade_id"]) for t in arrived) == sorted(expected)
    first = next(t for t in arrived if t["trade_id"] == json.loads(spot[0])["data"]["a"])
    assert first == {
        "exchange": "binance", "symbol": "BTCUSDT", "trade_id": 665076760, "price": "58001.03000000",
        "qty": "0.08620500", "trade_time": 1617566591314000, "is_buyer_maker": True,
        "ingest_time": first["ingest_time"], "source": "replay:binance-ws",
    }  # fmt: skip

    dead = [d for d in read_between(consumer, dead_start, dead_end) if d.get("raw") == malformed]
    assert len(dead) == 1
    assert "is not above zero" in dead[0]["reason"] and dead[0]["source"] == "replay:binance-ws"
    assert dead[0]["time"].startswith("20")

    # The file's coverage, per market: its first to its last trade (a capture is cut nowhere else).
    times: dict[str, list[int]] = {}
    for t in arrived:
        times.setdefault(t["symbol"], []).append(t["trade_time"])
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT symbol, kind, (extract(epoch FROM started_at) * 1e6)::bigint, "
            "(extract(epoch FROM ended_at) * 1e6)::bigint FROM coverage WHERE source = 'replay:capture.jsonl' "
            "ORDER BY started_at"
        )
        recorded: dict[str, list[tuple[str, int, int]]] = {}
        for symbol, kind, started, ended in cur.fetchall():
            recorded.setdefault(symbol, []).append((kind, started, ended))
    conn.close()
    assert set(recorded) == set(times)
    skipped = json.loads(spot[3])["data"]  # the malformed trade: the file does not hold it
    for symbol, seen in times.items():
        spans = recorded[symbol]
        assert {kind for kind, _, _ in spans} == {"replay"}
        assert (spans[0][1], spans[-1][2]) == (min(seen), max(seen) + 1)
        # Cut where the ids skip: the time between the trades around the rejected one is not covered.
        assert len(spans) == (2 if symbol == skipped["s"] else 1)
    lost = skipped["T"] * 1000
    assert not any(a <= lost < b for _, a, b in recorded[skipped["s"]])
