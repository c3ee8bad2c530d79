"""Where a raised alert goes besides PostgreSQL: the `alerts` topic, and a webhook when one is set.

The webhook gets the alert's JSON (candlelake.alerts.record) with a `text` line for chat tools that read
one (Slack's and Mattermost's incoming webhooks do). A webhook that fails is retried three times with
backoff, then given up on: the alert stays in PostgreSQL and on the topic, and its row says why the
webhook did not take it (`webhook_status`). The POSTs run on a thread of their own (`WebhookSender`): a
slow or failing receiver (three attempts of up to 5 s each) never holds up the next poll's scoring.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from candlelake.alerts.record import AlertRecord

WEBHOOK_TIMEOUT_S = 5.0
WEBHOOK_ATTEMPTS = 3
DRAIN_S = 30.0

log = logging.getLogger("candlelake.alerts.webhook")


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


Outcome = Callable[[int, str], None]
"""Told each alert's webhook status ('delivered' or 'failed: ...'), on the sender's thread."""


class WebhookSender:
    """POSTs alerts to a Webhook from a thread of its own, oldest first; `submit` returns at once.

    `close` sends what is still queued, for at most `DRAIN_S`: what is left then (a receiver that hangs)
    keeps no status and is logged as not sent."""

    def __init__(self, webhook: Webhook, outcome: Outcome) -> None:
        self.webhook = webhook
        self._outcome = outcome
        self._queue: queue.Queue[tuple[int, AlertRecord] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="candlelake-webhook", daemon=True)
        self._thread.start()

    def submit(self, alerts: Sequence[tuple[int, AlertRecord]]) -> None:
        for item in alerts:
            self._queue.put(item)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            alert_id, alert = item
            status = self.webhook.send(alert_id, alert)
            if status != "delivered":
                log.warning("webhook did not take alert %s: %s", alert_id, status)
            try:
                self._outcome(alert_id, status)
            except Exception as exc:  # PostgreSQL away: the POST happened, only its record is lost
                log.warning("could not record the webhook status of alert %s: %s", alert_id, exc)

    def close(self, drain_s: float = DRAIN_S) -> None:
        self._queue.put(None)
        self._thread.join(timeout=drain_s)
        if self._thread.is_alive():  # its client stays open: the daemon thread dies with the process
            log.warning("webhook still busy after %.0f s; %d alert(s) not sent", drain_s, self._queue.qsize())
            return
        self.webhook.close()
