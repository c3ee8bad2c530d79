"""ProgressPoller: every finished micro-batch reaches the recorder once, idle queries are touched."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from candlelake.stream.progress import ProgressPoller, ProgressRow

pytestmark = pytest.mark.unit


def progress(batch_id: int, rows: int = 10, dropped: int = 0, run: str = "run-1") -> dict[str, Any]:
    return {
        "name": "live_candles",
        "runId": run,
        "batchId": batch_id,
        "timestamp": "2026-12-01T09:00:00.000Z",
        "numInputRows": rows,
        "stateOperators": [{"numRowsDroppedByWatermark": dropped}],
        "durationMs": {"triggerExecution": 500},
    }


@dataclass
class FakeQuery:
    name: str = "live_candles"
    runId: str = "run-1"
    isActive: bool = True
    status: dict[str, Any] = field(default_factory=lambda: {"isTriggerActive": False})
    finished: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lastProgress(self) -> dict[str, Any] | None:
        return self.finished[-1] if self.finished else None

    @property
    def recentProgress(self) -> list[dict[str, Any]]:
        return self.finished[-100:]


class FakeRecorder:
    def __init__(self) -> None:
        self.rows: list[ProgressRow] = []
        self.touches: list[tuple[str, str]] = []

    def record(self, row: ProgressRow) -> bool:
        self.rows.append(row)
        return True

    def touch(self, query_name: str, run_id: str, at: datetime | None = None) -> bool:
        self.touches.append((query_name, run_id))
        return True


def test_each_batch_is_recorded_once_even_when_several_finish_between_polls() -> None:
    recorder = FakeRecorder()
    poller = ProgressPoller(recorder, idle_every_s=3600)  # type: ignore[arg-type]
    query = FakeQuery()
    query.finished.append(progress(0))
    poller.poll([query])
    poller.poll([query])  # nothing new
    query.finished += [progress(1, dropped=2), progress(2, dropped=5), progress(3)]
    poller.poll([query])
    assert [r.batch_id for r in recorder.rows] == [0, 1, 2, 3]
    assert sum(r.rows_dropped_by_watermark for r in recorder.rows) == 7  # no late trade goes uncounted


def test_a_new_run_starts_its_own_sequence() -> None:
    recorder = FakeRecorder()
    poller = ProgressPoller(recorder, idle_every_s=3600)  # type: ignore[arg-type]
    query = FakeQuery(finished=[progress(7)])
    poller.poll([query])
    query.finished = [progress(7, run="run-2")]  # a restart that resumed at the same batch id
    poller.poll([query])
    assert [(r.run_id, r.batch_id) for r in recorder.rows] == [("run-1", 7), ("run-2", 7)]


def test_an_idle_query_is_touched_but_a_stuck_trigger_is_not() -> None:
    recorder = FakeRecorder()
    poller = ProgressPoller(recorder, idle_every_s=0)  # type: ignore[arg-type]
    waiting = FakeQuery(name="lake_trades")
    stuck = FakeQuery(status={"isTriggerActive": True})  # e.g. Kafka not answering
    stopped = FakeQuery(name="gone", isActive=False)
    poller.poll([waiting, stuck, stopped])
    assert recorder.touches == [("lake_trades", "run-1")]


def test_a_query_that_cannot_be_read_does_not_stop_the_others() -> None:
    class Broken(FakeQuery):
        @property
        def lastProgress(self) -> dict[str, Any] | None:
            raise RuntimeError("py4j went away")

    recorder = FakeRecorder()
    poller = ProgressPoller(recorder, idle_every_s=3600)  # type: ignore[arg-type]
    poller.poll([Broken(), FakeQuery(finished=[progress(0)])])
    assert [r.batch_id for r in recorder.rows] == [0]
