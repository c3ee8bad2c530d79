"""The producer's heartbeat: its counters upserted into PostgreSQL's `producer_health` every few seconds.

The platform's supervisor and health checks read the row (candlelake.platform.supervisor,
candlelake.platform.health): a heartbeat older than its limit means a stalled or dead producer. The
reporter never kills the producer it reports on: a beat that cannot be written is logged and retried.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from candlelake.config import Settings
from candlelake.ingest.counters import Counters
from candlelake.util import first_line

log = logging.getLogger(__name__)


class HealthReporter(threading.Thread):
    """Upserts this producer's counters into `producer_health` every few seconds; never kills the producer."""

    UPSERT = """
        INSERT INTO producer_health (producer, source, pid, started_at, heartbeat_at, received, produced,
                                     rejected, duplicates, delivery_failures, gaps, missing_ids, backfilled,
                                     reconnects, prices, last_trade_time, last_price)
        VALUES (%(producer)s, %(source)s, %(pid)s, %(started_at)s, now(), %(received)s, %(produced)s,
                %(rejected)s, %(duplicates)s, %(delivery_failures)s, %(gaps)s, %(missing_ids)s, %(backfilled)s,
                %(reconnects)s, %(prices)s, %(last_trade_time)s, %(last_price)s)
        ON CONFLICT (producer) DO UPDATE SET
            source = EXCLUDED.source, pid = EXCLUDED.pid, started_at = EXCLUDED.started_at,
            heartbeat_at = EXCLUDED.heartbeat_at, received = EXCLUDED.received, produced = EXCLUDED.produced,
            rejected = EXCLUDED.rejected, duplicates = EXCLUDED.duplicates,
            delivery_failures = EXCLUDED.delivery_failures, gaps = EXCLUDED.gaps,
            missing_ids = EXCLUDED.missing_ids, backfilled = EXCLUDED.backfilled,
            reconnects = EXCLUDED.reconnects, prices = EXCLUDED.prices,
            last_trade_time = EXCLUDED.last_trade_time, last_price = EXCLUDED.last_price
    """

    def __init__(
        self,
        settings: Settings,
        counters: Counters,
        producer: str,
        source: str,
        also: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="health-reporter", daemon=True)
        self.settings = settings
        self.counters = counters
        self.producer = producer
        self.source = source
        self.also = also  # more bookkeeping on the same beat (trade-id positions, dead-letter counts)
        self.started_at = datetime.now(UTC)
        self.stopped = threading.Event()

    def report(self) -> None:
        import psycopg2

        row = self.counters.snapshot()
        row["last_trade_time"] = json.dumps(row["last_trade_time"])
        row["last_price"] = json.dumps(row["last_price"])
        row.update(producer=self.producer, source=self.source, pid=os.getpid(), started_at=self.started_at)
        with psycopg2.connect(self.settings.pg_dsn(), connect_timeout=3) as conn, conn.cursor() as cur:
            cur.execute(self.UPSERT, row)
        conn.close()
        if self.also is not None:
            self.also()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.health_interval_s):
            try:
                self.report()
            except Exception as exc:
                log.warning("could not record producer health: %s", first_line(exc))

    def stop(self) -> None:
        self.stopped.set()
        try:
            self.report()
        except Exception as exc:
            log.warning("could not record final producer health: %s", exc)
