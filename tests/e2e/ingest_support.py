"""Shared parts of the ingestion end-to-end tests: a fake exchange, the real producer process, Kafka reads.

A test plays the first `seconds` of a real capture at its recorded pace (speed 1: trade times are
the wall clock, so the streaming job's watermark sees nothing unusual) through a fake exchange's
WebSocket and REST servers, runs `candlelake produce` against them as a separate process, and reads
back what reached Kafka.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
from kafka import KafkaConsumer, TopicPartition

from candlelake.config import Settings
from candlelake.sources import binance, coinbase
from candlelake.trade import Trade
from tests.e2e.conftest import ARTIFACTS, CLI
from tests.e2e.test_pipeline import FIELDS
from tests.fakes.recording import LiveReplay, Recording, binance_shifted, coinbase_shifted


def window(path: Path, seconds: float, symbols: set[str] | None = None) -> Recording:
    """The frames of the first `seconds` of a capture (of `symbols` only, when given)."""
    whole = Recording.load(path)
    frames = tuple(
        f for f in whole.frames if f.at_s <= seconds and (symbols is None or _symbol_of(f.payload) in symbols)
    )
    return Recording(frames, whole.first_time_us)


def _symbol_of(payload: dict[str, Any]) -> str | None:
    data = payload.get("data", payload)
    return data.get("s") or data.get("product_id")


def live(recording: Recording, lead_s: float = 4.0) -> LiveReplay:
    """The recording as a live market starting `lead_s` from now (time for the producer to connect)."""
    return LiveReplay(recording, start=datetime.now(UTC) + timedelta(seconds=lead_s), speed=1.0)


def expected_trades(replay: LiveReplay, exchange: str) -> list[Trade]:
    """Every trade of the replay as the producer should send it (times shifted like the fakes')."""
    trades = []
    for frame in replay.recording.frames:
        if exchange == "coinbase":
            payload = coinbase_shifted(frame.payload, replay.shift_us)
            if payload.get("type") == "match":
                trades.append(coinbase.parse_match(payload, source="coinbase-ws"))
        else:
            data = binance_shifted(frame.payload, replay.shift_us).get("data", {})
            if data.get("e") == "aggTrade":
                trades.append(binance.parse_trade(data, exchange=exchange, source=f"{exchange}-ws"))
    return trades


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def read_topic(
    settings: Settings, topic: str, since: dict[int, int], timeout_s: float = 60.0
) -> list[tuple[bytes, bytes]]:
    """(key, value) of the records appended to `topic` after the offsets `since`, up to its end now.

    The platform's own producer keeps writing to the topic, so "until idle" would never come: read to
    the end offsets taken at the call.
    """
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in since]
        consumer.assign(parts)
        ends = consumer.end_offsets(parts)
        for tp in parts:
            consumer.seek(tp, since[tp.partition])
        out: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            assert time.monotonic() < deadline, f"could not read {topic} to its end in {timeout_s:.0f}s"
            for tp, records in consumer.poll(timeout_ms=500).items():
                out.extend((r.key, r.value) for r in records if r.offset < ends[tp])
        return out
    finally:
        consumer.close()


def trades_in_kafka(settings: Settings, since: dict[int, int], keys: set[str]) -> list[Trade]:
    import json

    return [
        Trade.from_wire(json.loads(value))
        for key, value in read_topic(settings, settings.trades_topic, since)
        if key is not None and key.decode() in keys
    ]


def forget_markets(settings: Settings, exchange: str, symbols: list[str]) -> None:
    """A rerun replays the same ids: the previous run's last ids would make them look like duplicates."""
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM ingest_positions WHERE exchange = %s AND symbol = ANY(%s)", (exchange, symbols))
    conn.close()


def ledger_rows(settings: Settings, exchange: str, symbols: list[str], since: datetime) -> list[dict[str, Any]]:
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT * FROM trade_gaps WHERE exchange = %s AND symbol = ANY(%s) AND detected_at >= %s ORDER BY gap_id",
            (exchange, symbols, since),
        )
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    conn.close()
    return rows


def health_row(settings: Settings, source: str) -> dict[str, Any] | None:
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM producer_health WHERE source = %s ORDER BY heartbeat_at DESC LIMIT 1", (source,))
        row = cur.fetchone()
        names = [d[0] for d in cur.description]
    conn.close()
    return dict(zip(names, row, strict=True)) if row else None


def market_candles(settings: Settings, exchange: str, symbol: str, trades: list[Trade]) -> dict[tuple, dict[str, Any]]:
    """The stored candles of one market over the minutes the given trades fall in."""
    first = min(t.trade_time_us for t in trades) // 60_000_000 * 60
    last = max(t.trade_time_us for t in trades) // 60_000_000 * 60
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT exchange, symbol, open_time, " + ", ".join(FIELDS) + " FROM candles "
            "WHERE exchange = %s AND symbol = %s AND open_time BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
            (exchange, symbol, first, last),
        )
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    conn.close()
    return {(r["exchange"], r["symbol"], r["open_time"]): r for r in rows}


@contextlib.contextmanager
def producer(
    settings: Settings, source: str, symbols: list[str], env: dict[str, str], name: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`candlelake produce` as its own process; SIGTERM at the end (it must flush and exit 0)."""
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / f"producer-{name}.log").open("wb")
    quick = {
        # Longer than the quiet lead before a capture starts (see test_ingestion.run_capture), so only a
        # stall trips it; short enough for a test.
        "CANDLELAKE_WS_WATCHDOG_S": "10",
        "CANDLELAKE_GAP_GRACE_S": "1",
        "CANDLELAKE_HEALTH_INTERVAL_S": "1",
    }
    proc = subprocess.Popen(
        [CLI, "produce", "--source", source, "--symbols", ",".join(symbols)],
        env={**os.environ, **quick, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def producer_log(name: str) -> str:
    return (ARTIFACTS / f"producer-{name}.log").read_text(errors="replace")


def sleep_until(deadline: datetime) -> None:
    """Until the wall clock reaches `deadline`: a recording is played at its recorded pace, so its end is a
    time, not a condition to poll for."""
    delay = (deadline - datetime.now(UTC)).total_seconds()
    if delay > 0:
        time.sleep(delay)
