"""Where a raised alert goes besides PostgreSQL: the `alerts` topic, and a webhook when one is set.

The webhook gets the alert's JSON (candlelake.alerts.record) with a `text` line for chat tools that read
one (Slack's and Mattermost's incoming webhooks do). A webhook that fails is retried three times with
backoff, then given up on: the alert stays in PostgreSQL and on the topic, and its row says why the
webhook did not take it (`webhook_status`). A slow webhook never holds up scoring for long (5 s timeout).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from candlelake.alerts.record import AlertRecord

WEBHOOK_TIMEOUT_S = 5.0
WEBHOOK_ATTEMPTS = 3


class AlertPublisher:
    """Sends alerts to the alerts topic, keyed by market; `publish` returns once Kafka has them all."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap, client_id="candlelake-alerts", acks="all", linger_ms=0
        )

    def publish(self, alerts: Sequence[tuple[int, AlertRecord]]) -> None:
        sent = [
            self._producer.send(self.topic, key=a.key.encode(), value=a.to_json_bytes(alert_id))
            for alert_id, a in alerts
        ]
        self._producer.flush(timeout=30)
        for future in sent:
            future.get(timeout=0)  # raises if Kafka refused one

    def close(self) -> None:
        self._producer.close(timeout=10)


class Webhook:
    """POSTs each alert to one URL."""

    def __init__(self, url: str, *, backoff_s: float = 0.5) -> None:
        self.url = url
        self._backoff_s = backoff_s
        # Our own endpoint, or the user's: no HTTP(S)_PROXY from the environment in between.
        self._http = httpx.Client(timeout=WEBHOOK_TIMEOUT_S, trust_env=False)

    def send(self, alert_id: int, alert: AlertRecord) -> str:
        """'delivered', or 'failed: <why>' after the last attempt; never raises."""
        body: dict[str, Any] = {**alert.as_json(alert_id), "text": alert.headline()}
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(WEBHOOK_ATTEMPTS),
                wait=wait_exponential(multiplier=self._backoff_s, max=4),
                retry=retry_if_exception_type(httpx.HTTPError),
                reraise=True,
            ):
                with attempt:
                    response = self._http.post(
                        self.url, content=json.dumps(body), headers={"content-type": "application/json"}
                    )
                    response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            return f"failed: HTTP {exc.response.status_code} after {WEBHOOK_ATTEMPTS} attempts"
        except httpx.HTTPError as exc:
            return f"failed: {type(exc).__name__}: {exc} after {WEBHOOK_ATTEMPTS} attempts"
        return "delivered"

    def close(self) -> None:
        self._http.close()
