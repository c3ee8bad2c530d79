"""The dead-letter sink: raw input that did not become a trade, with the reason, on its own Kafka topic.

Record value (JSON, UTF-8), key = the source::

    {"raw": "<the raw message or CSV row, as text>", "reason": "price 'NaN' is not a finite number",
     "source": "replay:binance-ws", "time": "2026-11-22T05:40:00.123456+00:00"}

`time` is when the input was rejected (UTC). Nothing rejected is dropped: a failed delivery is counted.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime

from candlelake.config import Settings
from candlelake.sources.validate import Rejection

log = logging.getLogger(__name__)


def dead_letter_record(rejection: Rejection, at: datetime | None = None) -> dict[str, str]:
    return {
        "raw": rejection.raw,
        "reason": rejection.reason,
        "source": rejection.source,
        "time": (at or datetime.now(UTC)).isoformat(),
    }


class DeadLetterSink:
    """Sends rejections to the dead-letter topic with kafka-python (acks=all, idempotent)."""

    def __init__(self, settings: Settings, client_id: str = "candlelake-dead-letter") -> None:
        from kafka import KafkaProducer  # heavy import kept out of module import

        self.topic = settings.dead_letter_topic
        self.sent = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
            retries=2**31 - 1,
            delivery_timeout_ms=120_000,
        )

    def send(self, rejection: Rejection) -> None:
        value = json.dumps(dead_letter_record(rejection), separators=(",", ":")).encode()
        future = self._producer.send(self.topic, key=rejection.source.encode(), value=value)
        future.add_callback(self._on_success)
        future.add_errback(self._on_error)

    def _on_success(self, _metadata: object) -> None:
        with self._lock:
            self.sent += 1

    def _on_error(self, error: BaseException) -> None:
        with self._lock:
            self.failures += 1
        log.error("dead-letter delivery failed: %s", error)

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()
