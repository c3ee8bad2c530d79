"""Dead-letter counts: counted on Kafka's acknowledgement, flushed as additive deltas, kept when a write fails.

No Kafka and no PostgreSQL: the sink gets a fake producer that returns kafka-python's own Future (so the
success and error callbacks run as on the IO thread), and flushes go to a fake connection that records
the statement and can be made to fail.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from kafka.future import Future

from candlelake.config import load_settings
from candlelake.ingest.dead_letter import EXAMPLE_CHARS, DeadLetterCounts, DeadLetterSink
from candlelake.sources.fields import Rejection

pytestmark = pytest.mark.unit

NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rejection(
    code: str = "malformed", source: str = "replay:binance-ws", raw: str = "{x", reason: str = ""
) -> Rejection:
    return Rejection(raw, code, reason or f"a {code} line", source)


class FakeProducer:
    """kafka-python's producer as the sink uses it: send returns a Future that the test completes."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, Future]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> Future:
        future = Future()
        self.sent.append((topic, key, value, future))
        return future

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def execute(self, statement: str, params: tuple[list[Any], ...]) -> None:
        if self.conn.fail_execute:
            raise RuntimeError("server closed the connection unexpectedly\nThis probably means ...")
        self.conn.pending.append(params)


class FakeConnection:
    """Rows as the upsert's unnest arrays; only committed ones reach `committed`."""

    def __init__(self, fail_execute: bool = False, fail_commit: bool = False) -> None:
        self.fail_execute = fail_execute
        self.fail_commit = fail_commit
        self.pending: list[tuple[list[Any], ...]] = []
        self.committed: list[tuple[list[Any], ...]] = []
        self.rollbacks = 0

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def commit(self) -> None:
        if self.fail_commit:
            raise RuntimeError("could not commit")
        self.committed.extend(self.pending)
        self.pending.clear()

    def rollback(self) -> None:
        self.rollbacks += 1
        self.pending.clear()

    def rows(self) -> list[dict[str, Any]]:
        """Every committed row, one dict per (day, source, code) delta."""
        names = ("day", "source", "code", "count", "last_reason", "last_raw", "first_at", "last_at")
        return [
            dict(zip(names, values, strict=True)) for params in self.committed for values in zip(*params, strict=True)
        ]


def test_counts_are_kept_per_utc_day_source_and_code_with_the_latest_example() -> None:
    counts = DeadLetterCounts()
    counts.count(rejection("malformed", raw="first", reason="not JSON"), NOON)
    counts.count(rejection("malformed", raw="latest", reason="not a JSON object"), NOON + timedelta(seconds=2))
    counts.count(rejection("malformed", raw="between", reason="middle"), NOON + timedelta(seconds=1))
    counts.count(rejection("not-finite"), NOON)
    counts.count(rejection("malformed", source="binance-ws"), NOON)
    # 00:30 on 1 March in UTC+02:00 is 22:30 UTC on 28 February: the day is the UTC one.
    counts.count(rejection("malformed"), datetime(2026, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))))

    pending = counts.pending()
    assert {key: tally.count for key, tally in pending.items()} == {
        (date(2026, 3, 1), "replay:binance-ws", "malformed"): 3,
        (date(2026, 2, 28), "replay:binance-ws", "malformed"): 1,
        (date(2026, 3, 1), "replay:binance-ws", "not-finite"): 1,
        (date(2026, 3, 1), "binance-ws", "malformed"): 1,
    }
    malformed = pending[(date(2026, 3, 1), "replay:binance-ws", "malformed")]
    assert (malformed.last_raw, malformed.last_reason) == ("latest", "not a JSON object")
    assert malformed.first_at == NOON and malformed.last_at == NOON + timedelta(seconds=2)
    assert pending[(date(2026, 2, 28), "replay:binance-ws", "malformed")].last_at == datetime(
        2026, 2, 28, 22, 30, tzinfo=UTC
    )


def test_the_raw_example_is_cut_to_a_few_hundred_characters() -> None:
    counts = DeadLetterCounts()
    counts.count(rejection(raw="x" * 10_000), NOON)
    (tally,) = counts.pending().values()
    assert len(tally.last_raw) == EXAMPLE_CHARS == 500


def test_a_flush_writes_the_deltas_once_and_then_nothing() -> None:
    counts = DeadLetterCounts()
    for n in range(3):
        counts.count(rejection("malformed", raw=f"line {n}"), NOON + timedelta(seconds=n))
    counts.count(rejection("missing-field"), NOON)
    conn = FakeConnection()

    assert counts.flush(conn) == 4
    assert sorted((r["code"], r["count"], r["last_raw"]) for r in conn.rows()) == [
        ("malformed", 3, "line 2"),
        ("missing-field", 1, "{x"),
    ]
    assert counts.pending() == {}
    assert counts.flush(conn) == 0 and len(conn.committed) == 1  # nothing counted: no statement at all


def test_a_flush_with_nothing_counted_does_not_connect() -> None:
    assert DeadLetterCounts().flush("host=127.0.0.1 port=1 dbname=nowhere") == 0


@pytest.mark.parametrize("failure", ["execute", "commit"])
def test_a_failed_write_keeps_the_counts_for_the_next_flush(failure: str) -> None:
    counts = DeadLetterCounts()
    counts.count(rejection(raw="old"), NOON)
    broken = FakeConnection(fail_execute=failure == "execute", fail_commit=failure == "commit")
    with pytest.raises(RuntimeError):
        counts.flush(broken)
    assert broken.committed == [] and broken.rollbacks == 1

    counts.count(rejection(raw="new"), NOON + timedelta(seconds=5))  # counted while the database was away
    conn = FakeConnection()
    assert counts.flush(conn) == 2
    assert [(r["count"], r["last_raw"], r["first_at"]) for r in conn.rows()] == [(2, "new", NOON)]


def test_dead_letters_counted_while_a_flush_writes_stay_for_the_next_one() -> None:
    counts = DeadLetterCounts()
    counts.count(rejection(), NOON)

    class CountsDuringWrite(FakeConnection):
        def commit(self) -> None:
            counts.count(rejection(raw="during"), NOON + timedelta(seconds=1))  # Kafka's IO thread, meanwhile
            super().commit()

    first = CountsDuringWrite()
    assert counts.flush(first) == 1 and [r["count"] for r in first.rows()] == [1]
    second = FakeConnection()
    assert counts.flush(second) == 1
    assert [(r["count"], r["last_raw"]) for r in second.rows()] == [(1, "during")]


def test_concurrent_counts_and_flushes_write_every_dead_letter_exactly_once() -> None:
    counts = DeadLetterCounts()
    conn = FakeConnection()
    per_thread, threads = 2_000, 4
    done = threading.Event()

    def produce() -> None:
        for n in range(per_thread):
            counts.count(rejection(("malformed", "not-finite")[n % 2]), NOON)

    def flush_until_done() -> None:
        while not done.is_set():
            counts.flush(conn)

    flushers = [threading.Thread(target=flush_until_done) for _ in range(2)]
    producers = [threading.Thread(target=produce) for _ in range(threads)]
    for t in flushers + producers:
        t.start()
    for t in producers:
        t.join()
    done.set()
    for t in flushers:
        t.join()
    counts.flush(conn)
    totals: dict[str, int] = {}
    for row in conn.rows():
        totals[row["code"]] = totals.get(row["code"], 0) + row["count"]
    assert totals == {"malformed": per_thread * threads // 2, "not-finite": per_thread * threads // 2}


def test_the_sink_counts_acknowledged_dead_letters_only_and_records_the_code() -> None:
    producer = FakeProducer()
    sink = DeadLetterSink(load_settings({}), producer=producer)
    for code in ("malformed", "malformed", "not-finite"):
        sink.send(rejection(code))
    (_, _, first, ok1), (_, _, _, ok2), (_, _, _, lost) = producer.sent
    ok1.success("metadata")
    ok2.success("metadata")
    lost.failure(RuntimeError("broker gone"))

    record = json.loads(first)
    assert record["code"] == "malformed" and record["reason"] == "a malformed line"
    assert (sink.sent, sink.failures) == (2, 1)
    day = datetime.fromisoformat(record["time"]).date()
    assert {key: t.count for key, t in sink.counts.pending().items()} == {(day, "replay:binance-ws", "malformed"): 2}
    (tally,) = sink.counts.pending().values()
    assert tally.first_at == datetime.fromisoformat(record["time"])  # the same instant as the record's `time`


def test_a_sink_flush_that_fails_logs_a_warning_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    producer = FakeProducer()
    sink = DeadLetterSink(load_settings({}), producer=producer)
    sink.send(rejection())
    producer.sent[0][3].success("metadata")

    assert sink.flush_counts(FakeConnection(fail_execute=True)) == 0
    assert "could not record the dead-letter counts" in caplog.text and "server closed" in caplog.text
    assert "This probably means" not in caplog.text  # one line in the log, not the driver's essay
    conn = FakeConnection()
    assert sink.flush_counts(conn) == 1 and [r["count"] for r in conn.rows()] == [1]
