"""Streaming-query progress into the PostgreSQL table `stream_progress`, and the freshness read of it.

The streaming job's `ProgressPoller` hands every finished micro-batch's progress to a
`ProgressRecorder`. Recording must never stop the job: when PostgreSQL is briefly down, rows wait in a
bounded buffer and are written once it answers again (each keeps its own time), and nothing is ever
raised to Spark.

A query with no new input runs no batch and reports no progress. While it waits for data (Spark has
asked the source for new offsets and found none, or waits for its next trigger), the poller reports
it idle every `idle_every_s`: that refreshes `recorded_at` of the run's latest row, so `recorded_at`
reads "the query last reported at this time, at this batch", and a quiet market does not look like a
dead stream. A run that has been idle since it started (a restart with nothing new in Kafka) has no
batch yet: its first idle report inserts a row with batch_id IDLE_BATCH_ID (-1) and zero rows. A query
stuck in a trigger (Kafka not answering, a batch that never ends) is not reported idle, so it goes stale.

Recording a batch of the candles query also closes the live candles its watermark has passed (see
candlelake.stream.postgres_candles.CLOSE_LIVE_SQL), in the same transaction: a candle is 'closed' exactly
when the progress that says the watermark passed it is on record.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg2
import psycopg2.extensions

from candlelake.stream.postgres_candles import close_live_candles
from candlelake.util import first_line

log = logging.getLogger(__name__)

# The streaming job's query names; the platform's health check expects a fresh row from each.
LAKE_QUERY = "lake_trades"
CANDLES_QUERY = "live_candles"
STREAM_QUERIES: tuple[str, ...] = (LAKE_QUERY, CANDLES_QUERY)
# The price points' query is recorded too, but is not one the health check waits for: a platform without
# a price source has nothing on that topic, and a failed query ends the whole job anyway.
PRICES_QUERY = "lake_prices"
IDLE_BATCH_ID = -1  # "this run has reported, but has not run a batch yet"

# Spark reports "no watermark yet" as the epoch; stored as NULL.
_NO_WATERMARK = datetime(1970, 1, 1, tzinfo=UTC)

INSERT_SQL = (
    "INSERT INTO stream_progress (query_name, run_id, batch_id, batch_time, num_input_rows, "
    "input_rows_per_second, processed_rows_per_second, rows_dropped_by_watermark, watermark, duration_ms, "
    "durations, end_offsets, recorded_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now() - make_interval(secs => %s)) "
    "ON CONFLICT (query_name, run_id, batch_id) DO UPDATE SET recorded_at = EXCLUDED.recorded_at"
)
TOUCH_SQL = (
    "UPDATE stream_progress SET recorded_at = now() WHERE query_name = %s AND run_id = %s AND batch_id = "
    "(SELECT max(batch_id) FROM stream_progress WHERE query_name = %s AND run_id = %s)"
)
FRESHNESS_SQL = (
    "SELECT query_name, EXTRACT(EPOCH FROM now() - max(recorded_at)) FROM stream_progress "
    "WHERE query_name = ANY(%s) AND recorded_at >= %s GROUP BY query_name"
)


@dataclass(frozen=True)
class ProgressRow:
    """One micro-batch of one query, as stored in `stream_progress`."""

    query_name: str
    run_id: str
    batch_id: int
    batch_time: datetime
    num_input_rows: int
    input_rows_per_second: float | None
    processed_rows_per_second: float | None
    rows_dropped_by_watermark: int
    watermark: datetime | None
    duration_ms: int | None
    # Spark's durationMs breakdown as JSON text (addBatch, walCommit, ...): where a slow batch spent its time.
    durations: str | None = None
    # The Kafka offsets the batch read up to, {"topic": {"partition": offset}} as JSON text (its sources'
    # endOffset): the supervisor compares them with the topic's end to tell how far the query trails.
    end_offsets: str | None = None


def parse_time(text: str | None) -> datetime | None:
    """Spark's progress times ("2026-11-22T04:22:26.049Z") as aware UTC datetimes."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _rate(value: Any) -> float | None:
    # Spark leaves a rate out (or NaN) when it cannot compute one, e.g. for a batch of zero duration.
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def progress_row(progress: Mapping[str, Any]) -> ProgressRow:
    """A StreamingQueryProgress in its JSON form (`json.loads(progress.json)`) -> ProgressRow."""
    watermark = parse_time((progress.get("eventTime") or {}).get("watermark"))
    dropped = sum(int(op.get("numRowsDroppedByWatermark") or 0) for op in progress.get("stateOperators") or [])
    batch_time = parse_time(progress.get("timestamp"))
    duration = progress.get("batchDuration")
    if duration is None:
        duration = (progress.get("durationMs") or {}).get("triggerExecution")
    return ProgressRow(
        query_name=str(progress.get("name") or progress.get("id")),
        run_id=str(progress["runId"]),
        batch_id=int(progress["batchId"]),
        batch_time=batch_time or datetime.now(UTC),
        num_input_rows=int(progress.get("numInputRows") or 0),
        input_rows_per_second=_rate(progress.get("inputRowsPerSecond")),
        processed_rows_per_second=_rate(progress.get("processedRowsPerSecond")),
        rows_dropped_by_watermark=dropped,
        watermark=None if watermark == _NO_WATERMARK else watermark,
        duration_ms=None if duration is None else int(duration),
        durations=json.dumps(progress["durationMs"], sort_keys=True) if progress.get("durationMs") else None,
        end_offsets=end_offsets_json(progress),
    )


def end_offsets_json(progress: Mapping[str, Any]) -> str | None:
    """The batch's Kafka end offsets, merged over its sources, as `{"topic": {"partition": offset}}` JSON.

    Spark renders a Kafka source's endOffset as a JSON object (a string when it could not parse it);
    a source without offsets (a rate or memory source in tests) adds nothing. None when no source has any.
    """
    merged: dict[str, dict[str, int]] = {}
    for source in progress.get("sources") or []:
        end = source.get("endOffset")
        if isinstance(end, str):
            try:
                end = json.loads(end)
            except ValueError:
                continue
        if not isinstance(end, Mapping):
            continue
        for topic, partitions in end.items():
            if isinstance(partitions, Mapping):
                merged.setdefault(str(topic), {}).update({str(p): int(o) for p, o in partitions.items()})
    return json.dumps(merged, sort_keys=True) if merged else None


class ProgressRecorder:
    """Writes ProgressRows to PostgreSQL over one reused connection; never raises.

    Rows that cannot be written wait (at most `buffer_size`, oldest dropped first) and go out, with
    their original time, on the next successful write. After a failure, reconnects are attempted at
    most every `retry_s` seconds so a dead database does not slow every Spark event.
    """

    def __init__(self, dsn: str, buffer_size: int = 2000, retry_s: float = 5.0, connect_timeout_s: int = 3) -> None:
        self._dsn = dsn
        self._pending: deque[tuple[ProgressRow, float]] = deque(maxlen=buffer_size)
        self._retry_s = retry_s
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg2.extensions.connection | None = None
        self._next_attempt = 0.0
        self._lock = threading.Lock()
        self._warned = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, row: ProgressRow) -> bool:
        """Queue `row` and write everything queued; True when nothing is left waiting."""
        with self._lock:
            self._pending.append((row, time.monotonic()))
            return self._flush()

    def touch(self, query_name: str, run_id: str, at: datetime | None = None) -> bool:
        """Mark an idle query as alive (see the module docstring); True when written."""

        def write(cur: Any) -> None:
            cur.execute(TOUCH_SQL, (query_name, run_id, query_name, run_id))
            if cur.rowcount == 0:  # no batch in this run yet
                row = ProgressRow(
                    query_name, run_id, IDLE_BATCH_ID, at or datetime.now(UTC), 0, None, None, 0, None, None
                )
                cur.execute(INSERT_SQL, (*astuple(row), 0.0))

        with self._lock:
            return self._run(write)

    def close(self) -> None:
        with self._lock:
            if self._pending:
                self._flush()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _flush(self) -> bool:
        def write(cur: Any) -> None:
            now = time.monotonic()
            for row, seen in list(self._pending):
                cur.execute(INSERT_SQL, (*astuple(row), max(0.0, now - seen)))
            passed = [row.watermark for row, _ in self._pending if row.query_name == CANDLES_QUERY and row.watermark]
            if passed:
                close_live_candles(cur, max(passed))

        if self._run(write):
            self._pending.clear()
            return True
        return False

    def _run(self, work: Any) -> bool:
        if time.monotonic() < self._next_attempt:
            return False
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg2.connect(
                    self._dsn, connect_timeout=self._connect_timeout_s, application_name="candlelake-stream-progress"
                )
                # Set here, not as `options=`, which would replace any options the DSN itself carries.
                with self._conn, self._conn.cursor() as cur:
                    cur.execute("SET statement_timeout = 5000")
            with self._conn, self._conn.cursor() as cur:  # one transaction; rolled back on error
                work(cur)
        except Exception as exc:
            self._next_attempt = time.monotonic() + self._retry_s
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None
            if not self._warned:
                log.warning(
                    "cannot record streaming progress in PostgreSQL (%s); keeping up to %d rows until it answers",
                    first_line(exc),
                    self._pending.maxlen or 0,
                )
                self._warned = True
            return False
        if self._warned:
            log.info("recording streaming progress in PostgreSQL again")
            self._warned = False
        return True


def fresh_queries(conn: psycopg2.extensions.connection, queries: Sequence[str], since: datetime) -> dict[str, float]:
    """Seconds since each of `queries` last reported, counting only reports at or after `since`."""
    with conn.cursor() as cur:
        cur.execute(FRESHNESS_SQL, (list(queries), since))
        return {str(name): float(age) for name, age in cur.fetchall()}


class PolledQuery(Protocol):
    """What ProgressPoller reads of a pyspark StreamingQuery (a protocol, so tests can pass fakes)."""

    @property
    def name(self) -> str: ...
    @property
    def runId(self) -> str: ...
    @property
    def isActive(self) -> bool: ...
    @property
    def status(self) -> Mapping[str, Any]: ...
    @property
    def lastProgress(self) -> Any: ...
    @property
    def recentProgress(self) -> Sequence[Any]: ...


def _progress_dict(progress: Any) -> dict[str, Any]:
    # pyspark's StreamingQueryProgress (a dict subclass whose values are objects) carries its JSON text in
    # `.json`; a plain dict (tests) passes through.
    text = getattr(progress, "json", None)
    return json.loads(text) if isinstance(text, str) else dict(progress)


class ProgressPoller:
    """Copies each query's finished micro-batches into `stream_progress`, polled from the driver's main loop.

    Why not a StreamingQueryListener: pyspark hands a Python listener each event as a tree of JVM objects
    and converts it field by field over py4j, and every field name py4j has not seen makes the JVM search
    all of Spark's ~300 jars for a class of that name. In a profile at 1,000 trades/s that was 37% of the
    driver's CPU samples. `lastProgress` costs two py4j calls: the progress as one JSON string.

    Each poll reads every query's newest progress; when batches finished since the last poll that are
    no longer the newest, they are taken from `recentProgress` (Spark keeps the last 100), so no batch's
    counts (rows read, rows dropped by the watermark) are missed.
    """

    def __init__(self, recorder: ProgressRecorder, idle_every_s: float = 5.0) -> None:
        self.recorder = recorder
        self.idle_every_s = idle_every_s
        self._last: dict[str, tuple[str, int]] = {}  # query name -> (run id, batch id) last recorded
        self._reported_at: dict[str, float] = {}  # query name -> monotonic time of the last record or touch

    def poll(self, queries: Sequence[PolledQuery]) -> None:
        """Record what finished since the last poll; never raises."""
        for query in queries:
            try:
                self._poll_one(query)
            except Exception:
                log.exception("could not read the progress of query %s", getattr(query, "name", "?"))

    def _poll_one(self, query: PolledQuery) -> None:
        name = query.name
        newest = query.lastProgress
        now = time.monotonic()
        if newest is not None:
            latest = _progress_dict(newest)
            key = (str(latest["runId"]), int(latest["batchId"]))
            last = self._last.get(name)
            if key != last:
                if last is not None and last[0] == key[0] and key[1] > last[1] + 1:
                    for earlier in query.recentProgress:
                        missed = _progress_dict(earlier)
                        if str(missed["runId"]) == key[0] and last[1] < int(missed["batchId"]) < key[1]:
                            self.recorder.record(progress_row(missed))
                self.recorder.record(progress_row(latest))
                self._last[name] = key
                self._reported_at[name] = now
                return
        if now - self._reported_at.get(name, 0.0) < self.idle_every_s or not query.isActive:
            return
        if not query.status.get("isTriggerActive", True):
            self.recorder.touch(name, str(query.runId), datetime.now(UTC))
            self._reported_at[name] = now
