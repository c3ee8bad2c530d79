"""The producer: trades from a source into Kafka, with counters written to PostgreSQL for the supervisor.

The Kafka client is kafka-python with acks=all and idempotence on, so a retried batch is never written
twice by the broker. A delivery that fails after the client's own retries is counted; nothing is
dropped without a number going up.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from candlelake.config import Settings
from candlelake.trade import Trade

log = logging.getLogger(__name__)


def topic_for(settings: Settings, trade: Trade) -> str:
    """Every trade goes to one topic; partitioning by key keeps a market's trades in order."""
    return settings.trades_topic


def key_for(trade: Trade) -> bytes:
    return trade.key.encode()


class TradeSink(Protocol):
    def send(self, trade: Trade) -> None: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...


@dataclass
class Counters:
    """What the producer has done; read by the health reporter from another thread."""

    received: int = 0
    produced: int = 0
    rejected: int = 0
    duplicates: int = 0
    delivery_failures: int = 0
    last_trade_time_us: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "received": self.received,
                "produced": self.produced,
                "rejected": self.rejected,
                "duplicates": self.duplicates,
                "delivery_failures": self.delivery_failures,
                "last_trade_time": {
                    k: datetime.fromtimestamp(v / 1e6, UTC).isoformat() for k, v in self.last_trade_time_us.items()
                },
            }


class KafkaTradeSink:
    """Sends trades to Kafka with kafka-python; delivery results update the counters."""

    def __init__(self, settings: Settings, counters: Counters, client_id: str = "candlelake-producer") -> None:
        from kafka import KafkaProducer  # heavy import kept out of module import

        self.settings = settings
        self.counters = counters
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
            batch_size=256 * 1024,
            retries=2**31 - 1,
            delivery_timeout_ms=120_000,
            max_in_flight_requests_per_connection=5,
        )

    def send(self, trade: Trade) -> None:
        future = self._producer.send(topic_for(self.settings, trade), key=key_for(trade), value=trade.to_json_bytes())
        future.add_callback(self._on_success, trade)
        future.add_errback(self._on_error, trade)

    def _on_success(self, trade: Trade, _metadata: object) -> None:
        with self.counters.lock:
            self.counters.produced += 1
            previous = self.counters.last_trade_time_us.get(trade.key, 0)
            self.counters.last_trade_time_us[trade.key] = max(previous, trade.trade_time_us)

    def _on_error(self, trade: Trade, error: BaseException) -> None:
        with self.counters.lock:
            self.counters.delivery_failures += 1
        log.error("delivery failed for %s trade %s: %s", trade.key, trade.trade_id, error)

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout=timeout)

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()


class HealthReporter(threading.Thread):
    """Upserts this producer's counters into `producer_health` every few seconds; never kills the producer."""

    UPSERT = """
        INSERT INTO producer_health (producer, source, pid, started_at, heartbeat_at, received, produced,
                                     rejected, duplicates, delivery_failures, last_trade_time)
        VALUES (%(producer)s, %(source)s, %(pid)s, %(started_at)s, now(), %(received)s, %(produced)s,
                %(rejected)s, %(duplicates)s, %(delivery_failures)s, %(last_trade_time)s)
        ON CONFLICT (producer) DO UPDATE SET
            source = EXCLUDED.source, pid = EXCLUDED.pid, started_at = EXCLUDED.started_at,
            heartbeat_at = EXCLUDED.heartbeat_at, received = EXCLUDED.received, produced = EXCLUDED.produced,
            rejected = EXCLUDED.rejected, duplicates = EXCLUDED.duplicates,
            delivery_failures = EXCLUDED.delivery_failures, last_trade_time = EXCLUDED.last_trade_time
    """

    def __init__(self, settings: Settings, counters: Counters, producer: str, source: str) -> None:
        super().__init__(name="health-reporter", daemon=True)
        self.settings = settings
        self.counters = counters
        self.producer = producer
        self.source = source
        self.started_at = datetime.now(UTC)
        self.stopped = threading.Event()

    def report(self) -> None:
        import psycopg2

        row = self.counters.snapshot()
        row["last_trade_time"] = json.dumps(row["last_trade_time"])
        row.update(producer=self.producer, source=self.source, pid=os.getpid(), started_at=self.started_at)
        with psycopg2.connect(self.settings.pg_dsn(), connect_timeout=3) as conn, conn.cursor() as cur:
            cur.execute(self.UPSERT, row)
        conn.close()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.health_interval_s):
            try:
                self.report()
            except Exception as exc:
                log.warning("could not record producer health: %s", exc)

    def stop(self) -> None:
        self.stopped.set()
        try:
            self.report()
        except Exception as exc:
            log.warning("could not record final producer health: %s", exc)


def run_simulator(
    settings: Settings,
    sink: TradeSink,
    counters: Counters,
    stop: threading.Event,
    symbols: list[str],
    rate: float,
    seed: int,
    limit: int | None = None,
) -> int:
    """Produce simulated trades in real time (trade time = now) until `stop` is set or `limit` reached."""
    from candlelake.simulator import Simulator

    now_us = time.time_ns() // 1000
    # Ids continue upward across restarts (the base grows 1,000 per millisecond of wall time), so a
    # restarted simulator never reuses an id that dedupe would then throw away.
    sim = Simulator(symbols, rate, seed=seed, start_time_us=now_us, first_trade_id=now_us // 1000 * 1000)
    sent = 0
    next_at = time.monotonic()
    while not stop.is_set() and (limit is None or sent < limit):
        next_at += sim.next_gap_us() / 1e6
        delay = next_at - time.monotonic()
        if delay > 0 and stop.wait(delay):
            break
        stamp = time.time_ns() // 1000
        trade = sim.next_trade(stamp, stamp)
        with counters.lock:
            counters.received += 1
        sink.send(trade)
        sent += 1
    return sent


def run(settings: Settings, source: str, symbols: list[str], rate: float, seed: int, limit: int | None = None) -> int:
    """The producer process: install signal handlers, run the source, flush on the way out."""
    if source != "simulator":
        raise ValueError(f"unknown source {source!r}; available now: simulator")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    counters = Counters()
    sink = KafkaTradeSink(settings, counters)
    reporter = HealthReporter(settings, counters, producer=f"{source}@{socket.gethostname()}", source=source)
    reporter.start()
    log.info("producing %s trades at %.1f/s for %s into %s", source, rate, ",".join(symbols), settings.kafka_bootstrap)
    try:
        return run_simulator(settings, sink, counters, stop, symbols, rate, seed, limit)
    finally:
        sink.close()  # flushes: every trade handed to the client is delivered or counted as failed
        reporter.stop()
        log.info("producer stopped: %s", counters.snapshot())
