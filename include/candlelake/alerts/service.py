"""The scorer: closed candles and prices from PostgreSQL in, alerts out, every CANDLELAKE_SCORER_POLL_S.

Each poll:

1. reads the candles that became closed (the stream's watermark passed them) since the last poll, less
   an overlap (a transaction's `now()` is its start, so a row can commit with a time the last poll had
   already passed), and pushes them into the market's feature book (candlelake.alerts.scoring): the
   z-score rules and the champion detector score each one;
2. reads each watched market's newest price (a live candle's close, a price point) and checks the price
   rules (candlelake.alerts.price_rules);
3. inserts every alert into `alerts` (once: a unique key per market, time, type and detector), publishes
   to the `alerts` topic every row it has not acknowledged yet (the table is the outbox: see `deliver`)
   and hands the new ones to the webhook's sender thread (a slow receiver never delays a poll).

The detector is MLflow's `models:/candlelake-anomaly-detector@champion`, looked up again every
CANDLELAKE_SCORER_MODEL_REFRESH_S; without a champion (or without MLflow) the rules score alone. On start
the books are filled with the last two hours of closed candles (the features need an hour behind a
candle). Only candles that opened in the last `CATCH_UP` are scored: a scorer that was down raises what it
missed of the last minutes, not hours of stale alerts, and the nightly batch's curated day (rewritten
rows, so read again) fills the books without alerting on yesterday.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2

from candlelake.alerts import store
from candlelake.alerts.delivery import AlertPublisher, Webhook, WebhookSender
from candlelake.alerts.price_rules import PriceWatch
from candlelake.alerts.record import AlertRecord, from_anomaly, from_crossing
from candlelake.alerts.scoring import LiveScorer
from candlelake.analytics.detector import DETECTOR, Detector
from candlelake.analytics.rules import parse_rules
from candlelake.config import Settings
from candlelake.util import from_us

log = logging.getLogger("candlelake.scorer")

OVERLAP = timedelta(seconds=60)
WARM_UP = timedelta(hours=2)
CATCH_UP = timedelta(minutes=10)
RULES_REFRESH_S = 5.0
COVERED_SQL = "SELECT market_coverage(%s, %s, %s, %s) @> tstzrange(%s, %s, '[)')"


def heartbeat_path(settings: Settings) -> Path:
    return settings.runtime_dir / "scorer.heartbeat.json"


@dataclass
class PollReport:
    candles: int = 0
    raised: list[tuple[int, AlertRecord]] = field(default_factory=list)


class ScorerService:
    def __init__(
        self,
        settings: Settings,
        *,
        publisher: AlertPublisher | None = None,
        webhook: Webhook | None = None,
        load_champion: Callable[[], tuple[Any, str] | None] | None = None,
    ) -> None:
        self.settings = settings
        self._conn = psycopg2.connect(settings.pg_dsn(), application_name="candlelake-scorer")
        self._conn.autocommit = True
        self.scorer = LiveScorer(parse_rules(settings.anomaly_thresholds), covered=self._covered)
        self.watch = PriceWatch()
        self.publisher = publisher or AlertPublisher(settings.kafka_bootstrap, settings.alerts_topic)
        hook = (
            webhook
            if webhook is not None
            else (Webhook(settings.alert_webhook_url) if settings.alert_webhook_url else None)
        )
        # The sender's thread records each POST's outcome on a connection of its own.
        self._status_conn: Any = None
        self.webhook = None if hook is None else WebhookSender(hook, self._record_webhook_status)
        self._load_champion = load_champion or self._champion_from_mlflow
        self.model_version: str | None = None
        # Never checked: the first poll loads the champion and the rules, whatever the clock says.
        self._model_checked: float | None = None
        self._rules_checked: float | None = None
        # Whether the outbox may hold alerts: at start, those a killed scorer inserted and never sent.
        self._unpublished = True
        now = datetime.now(UTC)
        self._candles_since = now - WARM_UP
        self._prices_since = now - OVERLAP

    # --- the detector ---------------------------------------------------------------------------

    def _champion_from_mlflow(self) -> tuple[Any, str] | None:
        from candlelake.analytics import registry

        return registry.champion(self.settings, registry.DETECTOR_MODEL)

    def refresh_model(self) -> None:
        """Load the champion detector when it changed; keep scoring with the rules whatever happens."""
        self._model_checked = time.monotonic()
        try:
            found = self._load_champion()
        except Exception as exc:  # MLflow unreachable or a model that cannot be read: the rules go on
            log.warning("no detector from MLflow (%s); scoring with the rules alone", exc)
            return
        if found is None:
            if self.scorer.detector is not None:
                log.info("the detector has no champion any more; scoring with the rules alone")
            self.scorer.detector, self.model_version = None, None
            return
        model, version = found
        if version != self.model_version:
            self.scorer.detector, self.model_version = Detector(model, DETECTOR), version
            log.info("scoring with detector version %s", version)

    # --- one poll -------------------------------------------------------------------------------

    def _covered(self, market: str, start_us: int, end_us: int) -> bool:
        exchange, _, symbol = market.partition(":")
        start, end = from_us(start_us), from_us(end_us)
        with self._conn.cursor() as cur:
            cur.execute(COVERED_SQL, (exchange, symbol, start, end, start, end))
            row = cur.fetchone()
        return bool(row and row[0])

    def poll(self) -> PollReport:
        report = PollReport()
        now = time.monotonic()
        if self._model_checked is None or now - self._model_checked >= self.settings.scorer_model_refresh_s:
            self.refresh_model()
        with self._conn.cursor() as cur:
            if self._rules_checked is None or now - self._rules_checked >= RULES_REFRESH_S:
                self.watch.replace_rules(store.list_rules(cur))
                self._rules_checked = now
            candles = store.closed_since(cur, self._candles_since)
        alerts: list[AlertRecord] = []
        # Only the last minutes are scored: older candles (the warm-up, a day the nightly batch curated
        # again) fill the books but raise nothing, so yesterday's curated day is not alerted on today.
        score_from_us = time.time_ns() // 1000 - int(CATCH_UP.total_seconds() * 1_000_000)
        for scored in self.scorer.push_many(candles, score_from_us):
            report.candles += 1
            closed_at = scored.candle.closed_at_us
            alerts += [from_anomaly(a, self._version_of(a.detector), closed_at) for a in scored.anomalies]
        if candles:
            self._candles_since = from_us(max(c.closed_at_us for c in candles)) - OVERLAP
        with self._conn.cursor() as cur:
            prices = store.latest_prices(cur, self._prices_since, self.watch.markets)
        for exchange, symbol, price, at_us in sorted(prices, key=lambda p: p[3]):
            alerts += [from_crossing(c) for c in self.watch.observe(exchange, symbol, price, at_us)]
        self._prices_since = datetime.now(UTC) - OVERLAP
        report.raised = self.deliver(alerts)
        return report

    def _version_of(self, detector: str) -> str | None:
        return self.model_version if detector == DETECTOR else None

    def deliver(self, alerts: list[AlertRecord]) -> list[tuple[int, AlertRecord]]:
        """Insert each alert, publish what the topic has not acknowledged yet, POST only the new ones.

        PostgreSQL is the outbox: an alert is a row first, and `published_at` is set once Kafka
        acknowledged it, so one that Kafka refused, or that a killed scorer never sent, goes out on a
        later poll (the topic's readers may see an alert twice, never miss one). A repeat of an alert
        (a restarted scorer scoring a candle again) inserts nothing and is not posted again.
        """
        with self._conn.cursor() as cur:
            new = [(alert_id, a) for a in alerts if (alert_id := store.insert_alert(cur, a)) is not None]
            pending = store.unpublished(cur) if new or self._unpublished else []
        if pending:
            self._publish(pending)
        if not new:
            return []
        if self.webhook is not None:
            self.webhook.submit(new)
        for alert_id, alert in new:
            log.info("alert %s: %s", alert_id, alert.headline())
        return new

    def _record_webhook_status(self, alert_id: int, status: str) -> None:
        """On the sender's thread: one reconnect when PostgreSQL restarted since the last POST."""
        for attempt in (1, 2):
            try:
                if self._status_conn is None or self._status_conn.closed:
                    self._status_conn = psycopg2.connect(self.settings.pg_dsn(), application_name="candlelake-webhook")
                    self._status_conn.autocommit = True
                with self._status_conn.cursor() as cur:
                    store.set_webhook_status(cur, alert_id, status)
                return
            except psycopg2.OperationalError:
                self._status_conn = None
                if attempt == 2:
                    raise

    def _publish(self, pending: list[tuple[int, AlertRecord]]) -> None:
        try:
            self.publisher.publish(pending)
        except Exception as exc:  # kafka-python's errors, a timeout: the rows stay pending for the next poll
            self._unpublished = True
            log.warning("alerts topic did not take %d alert(s), retrying next poll: %s", len(pending), exc)
            return
        with self._conn.cursor() as cur:
            store.mark_published(cur, [alert_id for alert_id, _ in pending])
        self._unpublished = False

    def beat(self) -> None:
        """The heartbeat the platform's health check reads: this process, alive and polling."""
        path = heartbeat_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "at": datetime.now(UTC).isoformat(),
                    "markets": self.scorer.markets,
                    "detector_version": self.model_version,
                    "rules": len(self.watch.markets),
                }
            )
        )
        tmp.replace(path)

    def run(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            started = time.monotonic()
            try:
                self.poll()
            except psycopg2.Error as exc:  # PostgreSQL restarting: the next poll reconnects and catches up
                log.warning("poll failed: %s", str(exc).strip().splitlines()[0])
                self._reconnect()
            self.beat()
            time.sleep(max(0.0, self.settings.scorer_poll_s - (time.monotonic() - started)))

    def _reconnect(self) -> None:
        try:
            self._conn.close()
            self._conn = psycopg2.connect(self.settings.pg_dsn(), application_name="candlelake-scorer")
            self._conn.autocommit = True
        except psycopg2.Error:
            pass  # still down: the next poll tries again

    def close(self) -> None:
        self.publisher.close()
        if self.webhook is not None:
            self.webhook.close()
        if self._status_conn is not None:
            self._status_conn.close()
        self._conn.close()
