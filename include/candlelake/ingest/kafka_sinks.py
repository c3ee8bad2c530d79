"""Trades into Kafka: the same guarantees with either client, chosen by CANDLELAKE_KAFKA_CLIENT.

Both clients are configured alike: acks=all and idempotence on (a retried batch is written once),
retries until `delivery_timeout_ms`, LZ4-compressed batches of up to 256 KiB lingering 20 ms (a
fraction of a live candle's latency; at 1,000 trades/s that is a 20-trade batch instead of one request
per trade). Every trade handed to `send` ends in exactly one of two callbacks: delivered (counted as
produced) or failed after every retry (counted, and handed to `on_failure`, which records it in the gap
ledger). `close()` flushes, so a graceful shutdown loses nothing.

- `kafka-python` (default): pure Python, a named dependency, enough for live feeds (thousands of
  trades per second).
- `confluent` (librdkafka): several times the throughput per core; use it to replay files fast
  (README: producer benchmark).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from candlelake.config import Settings
from candlelake.ingest.counters import Counters, DeliveryReports
from candlelake.price import PricePoint
from candlelake.trade import Trade

log = logging.getLogger(__name__)

KAFKA_CLIENTS = ("kafka-python", "confluent")
LINGER_MS = 20
BATCH_BYTES = 256 * 1024
DELIVERY_TIMEOUT_MS = 120_000

OnDelivered = Callable[[Trade], None]
OnFailure = Callable[[Trade, str], None]


class TradeSink(Protocol):
    def send(self, trade: Trade) -> None: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...


def topic_for(settings: Settings, trade: Trade) -> str:
    """Every trade goes to one topic; partitioning by key keeps a market's trades in order."""
    return settings.trades_topic


def key_for(trade: Trade) -> bytes:
    return trade.key.encode()


class KafkaPythonSink:
    """kafka-python's KafkaProducer; callbacks run on its I/O thread."""

    def __init__(
        self,
        settings: Settings,
        on_delivered: OnDelivered,
        on_failure: OnFailure,
        client_id: str = "candlelake-producer",
    ) -> None:
        from kafka import KafkaProducer  # heavy import kept out of module import

        self.settings = settings
        self._on_delivered = on_delivered
        self._on_failure = on_failure
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            # kafka-python compresses LZ4 with the lz4 package and zstd with zstandard (requirements.in).
            compression_type=None if settings.kafka_compression == "none" else settings.kafka_compression,
            linger_ms=LINGER_MS,
            batch_size=BATCH_BYTES,
            retries=2**31 - 1,
            delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
            max_in_flight_requests_per_connection=5,
        )

    def send(self, trade: Trade) -> None:
        try:
            future = self._producer.send(
                topic_for(self.settings, trade), key=key_for(trade), value=trade.to_json_bytes()
            )
        except Exception as exc:  # buffer full past max_block_ms, producer closed: still never silent
            self._on_failure(trade, f"{type(exc).__name__}: {exc}")
            return
        future.add_callback(lambda _meta: self._on_delivered(trade))
        future.add_errback(lambda error: self._on_failure(trade, f"{type(error).__name__}: {error}"))

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout=timeout)

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()


class ConfluentSink:
    """librdkafka through confluent-kafka; delivery callbacks are served by `send` and a poll thread."""

    def __init__(
        self,
        settings: Settings,
        on_delivered: OnDelivered,
        on_failure: OnFailure,
        client_id: str = "candlelake-producer",
        report_successes: bool = True,
    ) -> None:
        from confluent_kafka import Producer

        self.settings = settings
        # Without success reports (a replay only needs the count, taken at close) librdkafka calls back
        # for failures alone: a fifth of a replayed trade's cost saved.
        self.report_successes = report_successes
        self.sent = 0
        self._on_delivered = on_delivered
        self._on_failure = on_failure
        self._producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "client.id": client_id,
                "acks": "all",
                "enable.idempotence": True,
                "compression.type": settings.kafka_compression,
                "linger.ms": LINGER_MS,
                "batch.size": BATCH_BYTES,
                "delivery.timeout.ms": DELIVERY_TIMEOUT_MS,
                # Generous local queue: a broker restart must not make send() fail while it retries.
                "queue.buffering.max.messages": 2_000_000,
                "delivery.report.only.error": not report_successes,
            }
        )
        self._stop = threading.Event()
        self._last_send = 0.0
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        # Only while `send` is idle: serving reports from two threads at once costs a GIL hand-off each.
        while not self._stop.wait(0.1):
            if time.monotonic() - self._last_send >= 0.1:
                self._producer.poll(0)

    def send(self, trade: Trade) -> None:
        callback: Callable[[Any, Any], None]
        if self.report_successes:

            def report(error: Any, _message: Any) -> None:
                if error is None:
                    self._on_delivered(trade)
                else:
                    self._on_failure(trade, str(error))

            callback = report
        else:
            callback = self._report_failure  # the record carries the trade: no closure per send

        value = trade.to_json_bytes()
        self._last_send = time.monotonic()
        while True:
            try:
                self._producer.produce(
                    topic_for(self.settings, trade), value=value, key=key_for(trade), on_delivery=callback
                )
                self.sent += 1
                # Serve delivery reports here, in the sending thread: a poll thread serving them while
                # this one sends would hand the GIL back and forth for every report. Reporting failures
                # only, a poll per 256 trades is enough (the records go out on librdkafka's own thread).
                if self.report_successes or not self.sent % 256:
                    self._producer.poll(0)
                return
            except BufferError:  # local queue full: wait for deliveries instead of dropping
                self._producer.poll(0.05)
            except Exception as exc:
                self._on_failure(trade, f"{type(exc).__name__}: {exc}")
                return

    def _report_failure(self, error: Any, message: Any) -> None:
        if error is not None:
            self._on_failure(Trade.from_wire(json.loads(message.value())), str(error))

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(-1 if timeout is None else timeout)

    def close(self) -> None:
        self._producer.flush(-1)
        self._stop.set()
        self._poller.join(timeout=5)


def make_trade_sink(
    settings: Settings, on_delivered: OnDelivered, on_failure: OnFailure, client_id: str = "candlelake-producer"
) -> TradeSink:
    """The Kafka client CANDLELAKE_KAFKA_CLIENT names."""
    if settings.kafka_client == "confluent":
        return ConfluentSink(settings, on_delivered, on_failure, client_id)
    return KafkaPythonSink(settings, on_delivered, on_failure, client_id)


class KafkaTradeSink:
    """A trade sink whose delivery reports go to `reports` (by default: counted into `counters`).

    The producer passes the `DeliveryReports` its pipeline records failures from; replay, backfills,
    tests and benchmarks only count. With `per_trade=False` (replay, confluent client) successes are
    counted in bulk when the sink closes, not one report per trade; failures are still reported one by one.
    """

    def __init__(
        self,
        settings: Settings,
        counters: Counters,
        client_id: str = "candlelake-producer",
        per_trade: bool = True,
        reports: DeliveryReports | None = None,
    ) -> None:
        self.counters = counters
        self.reports = reports or DeliveryReports(counters)
        self.per_trade = per_trade or settings.kafka_client != "confluent"
        self._sink: TradeSink
        if self.per_trade:
            self._sink = make_trade_sink(settings, self.reports.delivered, self.reports.failed, client_id)
        else:
            self._sink = ConfluentSink(
                settings, self.reports.delivered, self.reports.failed, client_id, report_successes=False
            )

    def send(self, trade: Trade) -> None:
        self._sink.send(trade)

    def flush(self, timeout: float | None = None) -> None:
        self._sink.flush(timeout)

    def close(self) -> None:
        self._sink.close()  # flushes: afterwards every trade is delivered or reported as failed
        if not self.per_trade:
            assert isinstance(self._sink, ConfluentSink)
            with self.counters.lock:
                self.counters.produced = self._sink.sent - self.counters.delivery_failures


class KafkaPriceSink:
    """Price points to the `prices` topic with kafka-python (a few per second at most)."""

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaProducer

        self.topic = settings.prices_topic
        self.failures = 0
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id="candlelake-prices",
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
        )

    def send(self, point: PricePoint) -> None:
        future = self._producer.send(self.topic, key=point.key.encode(), value=point.to_json_bytes())
        future.add_errback(self._failed)

    def _failed(self, error: BaseException) -> None:
        self.failures += 1
        log.error("price point delivery failed: %s", error)

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()
