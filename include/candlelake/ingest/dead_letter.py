"""The dead-letter sink: raw input that did not become a trade, with the reason, on its own Kafka topic.

Record value (JSON, UTF-8), key = the source::

    {"raw": "<the raw message or CSV row, as text>", "code": "not-finite",
     "reason": "price 'NaN' is not a finite number", "source": "replay:binance-ws",
     "time": "2026-11-22T05:40:00.123456+00:00"}

`time` is when the input was rejected (UTC); `code` is the short reason class (`Rejection.code`:
missing-field, malformed, not-finite, ...) and `reason` the text that explains it. Nothing rejected is
dropped: a failed delivery is counted.

Every dead letter Kafka acknowledged is also counted per (UTC day of `time`, source, code), with the
latest reason and raw example, and `flush_counts` adds those counts to the `dead_letter_counts` table
(sql/schema.sql) for the dashboard, which reads PostgreSQL only. The topic stays the record of what was
rejected: a process killed before its next flush loses the counts of its last seconds, never a dead
letter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from candlelake.config import Settings
from candlelake.sources.fields import Rejection
from candlelake.util import first_line

log = logging.getLogger(__name__)

EXAMPLE_CHARS = 500  # of the raw input kept as the example: enough to see what was wrong, never a whole file

_UPSERT_COUNTS = """
    INSERT INTO dead_letter_counts (day, source, code, count, last_reason, last_raw, first_at, last_at)
    SELECT * FROM unnest(%s::date[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[],
                         %s::timestamptz[], %s::timestamptz[])
    ON CONFLICT (day, source, code) DO UPDATE SET
        count = dead_letter_counts.count + EXCLUDED.count,
        last_reason = CASE WHEN dead_letter_counts.last_at IS NULL OR EXCLUDED.last_at >= dead_letter_counts.last_at
                           THEN EXCLUDED.last_reason ELSE dead_letter_counts.last_reason END,
        last_raw = CASE WHEN dead_letter_counts.last_at IS NULL OR EXCLUDED.last_at >= dead_letter_counts.last_at
                        THEN EXCLUDED.last_raw ELSE dead_letter_counts.last_raw END,
        first_at = least(dead_letter_counts.first_at, EXCLUDED.first_at),
        last_at = greatest(dead_letter_counts.last_at, EXCLUDED.last_at)
"""


def dead_letter_record(rejection: Rejection, at: datetime | None = None) -> dict[str, str]:
    return {
        "raw": rejection.raw,
        "code": rejection.code,
        "reason": rejection.reason,
        "source": rejection.source,
        "time": (at or datetime.now(UTC)).isoformat(),
    }


CountKey = tuple[date, str, str]  # (UTC day, source, code): the table's primary key


@dataclass(slots=True)
class Tally:
    """Dead letters of one (day, source, code) not yet written, and the latest example among them."""

    count: int
    first_at: datetime
    last_at: datetime
    last_reason: str
    last_raw: str

    def add(self, at: datetime, reason: str, raw: str) -> None:
        """One more; acknowledgements may come out of order, so the example is the latest by time."""
        self.count += 1
        self.first_at = min(self.first_at, at)
        if at >= self.last_at:
            self.last_at, self.last_reason, self.last_raw = at, reason, raw


class DeadLetterCounts:
    """Counts per (UTC day, source, code) since the last successful flush; safe from any thread.

    `flush` writes the pending counts as additive deltas and takes them off only once the write is
    committed, so a failed write leaves them for the next flush and nothing is counted twice.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _pending (count() runs on Kafka's IO thread)
        self._flush_lock = threading.Lock()  # one flush at a time: two would write the same deltas
        self._pending: dict[CountKey, Tally] = {}

    def count(self, rejection: Rejection, at: datetime) -> None:
        """One more dead letter, rejected at `at` (aware, any zone; the day is taken in UTC)."""
        at = at.astimezone(UTC)
        key = (at.date(), rejection.source, rejection.code)
        raw = rejection.raw[:EXAMPLE_CHARS]
        with self._lock:
            tally = self._pending.get(key)
            if tally is None:
                self._pending[key] = Tally(1, at, at, rejection.reason, raw)
            else:
                tally.add(at, rejection.reason, raw)

    def pending(self) -> dict[CountKey, Tally]:
        """A copy of the counts not yet written."""
        with self._lock:
            return {
                key: Tally(t.count, t.first_at, t.last_at, t.last_reason, t.last_raw)
                for key, t in self._pending.items()
            }

    def flush(self, conn_or_dsn: Any) -> int:
        """Add the pending counts to `dead_letter_counts`; the number of dead letters written.

        `conn_or_dsn` is a psycopg2 connection (committed here, not closed) or a DSN (connected and
        closed here). Nothing pending writes nothing. Errors propagate; the counts stay pending.
        """
        with self._flush_lock:
            batch = self.pending()
            if not batch:
                return 0
            keys = sorted(batch)
            params = (
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [batch[k].count for k in keys],
                [batch[k].last_reason for k in keys],
                [batch[k].last_raw for k in keys],
                [batch[k].first_at for k in keys],
                [batch[k].last_at for k in keys],
            )
            _execute_committed(conn_or_dsn, _UPSERT_COUNTS, params)
            with self._lock:
                for key, written in batch.items():
                    tally = self._pending[key]  # only flush removes keys, and flushes take turns
                    tally.count -= written.count
                    if tally.count == 0:
                        del self._pending[key]
            return sum(t.count for t in batch.values())


def _execute_committed(conn_or_dsn: Any, statement: str, params: tuple[Any, ...]) -> None:
    if isinstance(conn_or_dsn, str):
        import psycopg2

        conn = psycopg2.connect(conn_or_dsn, connect_timeout=5, application_name="candlelake-dead-letter")
        try:
            _execute_committed(conn, statement, params)
        finally:
            conn.close()
        return
    try:
        with conn_or_dsn.cursor() as cur:
            cur.execute(statement, params)
        conn_or_dsn.commit()
    except BaseException:
        with contextlib.suppress(Exception):  # a dead connection cannot roll back; the first error counts
            conn_or_dsn.rollback()
        raise


class DeadLetterSink:
    """Sends rejections to the dead-letter topic with kafka-python (acks=all, idempotent).

    `producer` is for tests: anything with kafka-python's `send` (returning its Future), `flush`, `close`.
    """

    def __init__(self, settings: Settings, client_id: str = "candlelake-dead-letter", producer: Any = None) -> None:
        self.topic = settings.dead_letter_topic
        self.sent = 0
        self.failures = 0
        self.counts = DeadLetterCounts()
        self._lock = threading.Lock()
        if producer is None:
            from kafka import KafkaProducer  # heavy import kept out of module import

            producer = KafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap,
                client_id=client_id,
                acks="all",
                enable_idempotence=True,
                linger_ms=20,
                retries=2**31 - 1,
                delivery_timeout_ms=120_000,
            )
        self._producer = producer

    def send(self, rejection: Rejection) -> None:
        at = datetime.now(UTC)
        value = json.dumps(dead_letter_record(rejection, at), separators=(",", ":")).encode()
        future = self._producer.send(self.topic, key=rejection.source.encode(), value=value)
        future.add_callback(self._on_success, rejection, at)
        future.add_errback(self._on_error)

    def _on_success(self, rejection: Rejection, at: datetime, _metadata: object) -> None:
        with self._lock:
            self.sent += 1
        self.counts.count(rejection, at)

    def _on_error(self, error: BaseException) -> None:
        with self._lock:
            self.failures += 1
        log.error("dead-letter delivery failed: %s", error)

    def flush_counts(self, conn_or_dsn: Any) -> int:
        """Write the acknowledged dead letters' counts to PostgreSQL; never raises (a failure is logged
        and the counts are kept for the next flush). The number of dead letters written."""
        try:
            return self.counts.flush(conn_or_dsn)
        except Exception as exc:
            log.warning("could not record the dead-letter counts (kept for the next flush): %s", first_line(exc))
            return 0

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()
