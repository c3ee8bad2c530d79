"""The stream supervisor: observe the producer and the streaming job, decide, act, record.

The `stream_supervisor` DAG calls `supervise()` every two minutes, one run at a time. For each part:

observe   what the process and its records say: for the producer its pid, uptime and latest heartbeat
          in `producer_health` (from this very process) with its counters; for the streaming job its
          pid, uptime and, per query, the time of its last batch or idle report in `stream_progress`,
          input vs processing rate and rows dropped by the watermark over its recent batches, and how
          many records its Kafka offsets trail the topic's end (stream_progress.end_offsets against
          the topic's end offsets, summed over partitions).
decide    a pure function of the observation (`decide_producer`, `decide_stream`), so every rule is
          unit-tested: `stopped` (stream_control says so: never restarted), `dead` (no process),
          `stuck` (alive, but no heartbeat or no progress for longer than the max age), or `healthy`.
          A query that falls behind (processing slower than input while it trails the topic) is
          reported in the detail, not restarted: a restart would only make it further behind.
act       restart a dead or stuck part: stop it first with the platform's own stop logic (the stream's
          driver gets to stop its queries), start it (the producer with the options in stream_control;
          the streaming job with the spark-submit the apache-spark provider's hook builds), and wait
          until it is healthy; otherwise the action is `restart_failed`, with the reason.
record    one `supervisor_checks` row per part per run: state, action, a detail in plain words and the
          metrics as JSON. A retried task replaces its run's rows instead of adding to them.

Ages are measured on PostgreSQL's clock (the clock that stamped the rows); the uptime from the pid
file, which runtime.spawn writes as the process starts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg2.extensions
from psycopg2.extras import Json

from candlelake.config import Settings
from candlelake.platform import runtime
from candlelake.platform.kafka import topic_end_offsets
from candlelake.platform.producer import ProducerComponent
from candlelake.platform.stream import SPARK_CONN_ID, StreamComponent
from candlelake.platform.stream_control import (
    Desired,
    StreamControlError,
    control_lock,
    desired_state,
    producer_options,
    reap_leftovers,
    start_producer,
    start_stream_job,
    wait_healthy,
)
from candlelake.stream.progress import STREAM_QUERIES, fresh_queries
from candlelake.util import one_line

log = logging.getLogger(__name__)

HEALTHY, DEAD, STUCK, STOPPED = "healthy", "dead", "stuck", "stopped"
NONE, RESTARTED, RESTART_FAILED = "none", "restarted", "restart_failed"
# How many of a query's latest batches the rates and the watermark drops are taken over.
RECENT_BATCHES = 10
# A row written just before the pid file (clock granularity) still counts as this process's.
_START_SLACK_S = 2.0
KAFKA_TIMEOUT_MS = 5_000
_COUNTERS = ("received", "produced", "rejected", "duplicates", "delivery_failures", "gaps", "reconnects", "prices")


# --- observations (what was seen) ------------------------------------------------------------------


@dataclass(frozen=True)
class ProducerObservation:
    pid: int | None
    uptime_s: float | None
    # This process's latest heartbeat; None when it has not reported since it started.
    heartbeat_age_s: float | None = None
    producer: str | None = None
    source: str | None = None
    counters: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryObservation:
    name: str
    # Since the query's last batch or idle report in this run of the job; None: none since it started.
    report_age_s: float | None
    batches: int = 0  # how many recent batches the figures below cover
    last_batch_id: int | None = None
    input_rate: float | None = None  # rows/s arriving (mean of Spark's inputRowsPerSecond)
    processing_rate: float | None = None  # rows/s processed (mean of processedRowsPerSecond)
    rows_dropped: int = 0  # by the watermark, over the recent batches
    lag: int | None = None  # records between its last batch's end offsets and the topic's end

    @property
    def falling_behind(self) -> bool:
        """It trails the topic and processes slower than trades arrive: the gap grows."""
        return bool(
            self.lag
            and self.input_rate is not None
            and self.processing_rate is not None
            and self.processing_rate < self.input_rate
        )


@dataclass(frozen=True)
class StreamObservation:
    pid: int | None
    uptime_s: float | None
    queries: tuple[QueryObservation, ...] = ()
    # Why the lag is unknown (Kafka not answering), when it is.
    lag_error: str | None = None


@dataclass(frozen=True)
class Decision:
    component: str
    state: str
    restart: bool
    detail: str
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Check:
    """One recorded check: what `supervisor_checks` holds for a part in a run."""

    component: str
    state: str
    action: str
    detail: str
    metrics: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- decide (pure) ---------------------------------------------------------------------------------


def _secs(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}s"


def decide_producer(obs: ProducerObservation, desired: Desired, max_age_s: float) -> Decision:
    """The producer's state from what was observed; restart when dead or stuck and meant to run."""
    metrics: dict[str, Any] = {
        "desired": desired.desired,
        "pid": obs.pid,
        "uptime_s": _round(obs.uptime_s),
        "heartbeat_age_s": _round(obs.heartbeat_age_s),
        "max_age_s": max_age_s,
        "producer": obs.producer,
        "source": obs.source,
        **dict(obs.counters),
    }
    if not desired.running:
        return Decision("producer", STOPPED, False, _stopped_detail("producer", desired, obs.pid), metrics)
    if obs.pid is None:
        return Decision("producer", DEAD, True, "no producer process is running", metrics)
    if obs.heartbeat_age_s is None:
        if obs.uptime_s is not None and obs.uptime_s > max_age_s:
            detail = (
                f"producer pid {obs.pid} has run for {_secs(obs.uptime_s)} without a heartbeat in producer_health "
                f"(limit {max_age_s:.0f}s)"
            )
            return Decision("producer", STUCK, True, detail, metrics)
        detail = f"producer pid {obs.pid} is starting (up {_secs(obs.uptime_s)}, no heartbeat yet)"
        return Decision("producer", HEALTHY, False, detail, metrics)
    if obs.heartbeat_age_s > max_age_s:
        detail = f"producer pid {obs.pid} last reported {_secs(obs.heartbeat_age_s)} ago (limit {max_age_s:.0f}s)"
        return Decision("producer", STUCK, True, detail, metrics)
    counters = obs.counters
    detail = (
        f"producer pid {obs.pid} ({obs.source or '?'}) reported {_secs(obs.heartbeat_age_s)} ago; "
        f"{counters.get('produced', 0)} trades produced, {counters.get('rejected', 0)} rejected, "
        f"{counters.get('delivery_failures', 0)} delivery failures"
    )
    return Decision("producer", HEALTHY, False, detail, metrics)


def decide_stream(
    obs: StreamObservation, desired: Desired, max_age_s: float, queries: Sequence[str] = STREAM_QUERIES
) -> Decision:
    """The streaming job's state: stuck when any query has not reported for longer than `max_age_s`."""
    seen = {q.name: q for q in obs.queries}
    metrics: dict[str, Any] = {
        "desired": desired.desired,
        "pid": obs.pid,
        "uptime_s": _round(obs.uptime_s),
        "max_age_s": max_age_s,
        "queries": {name: _query_metrics(seen.get(name)) for name in queries},
    }
    if obs.lag_error:
        metrics["lag_error"] = obs.lag_error
    if not desired.running:
        return Decision("stream", STOPPED, False, _stopped_detail("streaming job", desired, obs.pid), metrics)
    if obs.pid is None:
        return Decision("stream", DEAD, True, "no streaming job process is running", metrics)
    stale, starting = [], []
    for name in queries:
        q = seen.get(name)
        age = q.report_age_s if q else None
        if age is None:
            if obs.uptime_s is not None and obs.uptime_s > max_age_s:
                stale.append(f"{name} (no report since the job started {_secs(obs.uptime_s)} ago)")
            else:
                starting.append(name)
        elif age > max_age_s:
            stale.append(f"{name} (last report {_secs(age)} ago)")
    if stale:
        detail = f"streaming job pid {obs.pid} made no progress for more than {max_age_s:.0f}s: {', '.join(stale)}"
        return Decision("stream", STUCK, True, detail, metrics)
    parts = [_query_detail(seen[name]) for name in queries if name in seen and name not in starting]
    if starting:
        parts.append(f"starting (up {_secs(obs.uptime_s)}), no report yet from {', '.join(starting)}")
    behind = [name for name in queries if name in seen and seen[name].falling_behind]
    metrics["falling_behind"] = behind
    prefix = f"streaming job pid {obs.pid}"
    if behind:
        prefix += f" is falling behind in {', '.join(behind)} (reported, not restarted)"
    if obs.lag_error:
        parts.append(f"lag unknown: {obs.lag_error}")
    return Decision("stream", HEALTHY, False, f"{prefix}; " + "; ".join(parts), metrics)


def _stopped_detail(what: str, desired: Desired, pid: int | None) -> str:
    by = f" by {desired.changed_by}" if desired.changed_by else ""
    at = f" at {desired.changed_at:%Y-%m-%d %H:%M:%S %Z}" if desired.changed_at else ""
    running = f"; pid {pid} still runs (started outside the supervisor), left alone" if pid else ""
    return f"{what} is set to stopped{by}{at} (stop_stream): not restarted{running}"


def _query_detail(q: QueryObservation) -> str:
    words = [f"{q.name}: last report {_secs(q.report_age_s)} ago"]
    if q.last_batch_id is not None:
        words.append(f"batch {q.last_batch_id}")
    if q.input_rate is not None and q.processing_rate is not None:
        words.append(f"{q.input_rate:.1f} rows/s in, {q.processing_rate:.1f} rows/s processed")
    if q.rows_dropped:
        words.append(f"{q.rows_dropped} rows dropped by the watermark in the last {q.batches} batches")
    words.append("lag unknown" if q.lag is None else f"{q.lag} records behind the topic's end")
    return ", ".join(words)


def _query_metrics(q: QueryObservation | None) -> dict[str, Any] | None:
    if q is None:
        return None
    out = asdict(q)
    out["report_age_s"] = _round(q.report_age_s)
    out["input_rate"] = _round(q.input_rate)
    out["processing_rate"] = _round(q.processing_rate)
    out["falling_behind"] = q.falling_behind
    del out["name"]
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def lag(query_offsets: Mapping[str, int], topic_end: Mapping[int, int]) -> int:
    """Records between a query's end offsets and the topic's end, summed over the topic's partitions.

    A partition the query has no offset for (added since its last batch) counts from 0, and a query
    ahead of the end (the topic was recreated) counts 0 for that partition.
    """
    return sum(max(0, end - int(query_offsets.get(str(p), 0))) for p, end in topic_end.items())


# --- observe ---------------------------------------------------------------------------------------


def _started_at(settings: Settings, name: str) -> float | None:
    try:
        return runtime.pid_path(settings, name).stat().st_mtime
    except FileNotFoundError:
        return None


def observe_producer(settings: Settings, conn: psycopg2.extensions.connection) -> ProducerObservation:
    """The producer's pid, uptime and its own latest heartbeat with counters."""
    pid = runtime.running_pid(settings, "producer")
    started = _started_at(settings, "producer")
    if pid is None or started is None:
        return ProducerObservation(pid=None, uptime_s=None)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT producer, source, EXTRACT(EPOCH FROM now() - heartbeat_at), "
            + ", ".join(_COUNTERS)
            + " FROM producer_health WHERE pid = %s AND heartbeat_at >= to_timestamp(%s) "
            "ORDER BY heartbeat_at DESC LIMIT 1",
            (pid, started - _START_SLACK_S),
        )
        row = cur.fetchone()
    uptime = max(0.0, time.time() - started)
    if row is None:
        return ProducerObservation(pid=pid, uptime_s=uptime)
    counters = {name: int(value or 0) for name, value in zip(_COUNTERS, row[3:], strict=True)}
    return ProducerObservation(pid, uptime, float(row[2]), str(row[0]), str(row[1]), counters)


RECENT_SQL = """
SELECT query_name, batch_id, num_input_rows, input_rows_per_second, processed_rows_per_second,
       rows_dropped_by_watermark, end_offsets
FROM (SELECT *, row_number() OVER (PARTITION BY query_name ORDER BY batch_time DESC, batch_id DESC) AS n
      FROM stream_progress WHERE query_name = ANY(%s) AND recorded_at >= %s AND batch_id >= 0) recent
WHERE n <= %s
ORDER BY query_name, batch_time DESC, batch_id DESC
"""


def observe_stream(
    settings: Settings,
    conn: psycopg2.extensions.connection,
    queries: Sequence[str] = STREAM_QUERIES,
    topic_end: Mapping[int, int] | None = None,
) -> StreamObservation:
    """The streaming job's pid and uptime and, per query, its reports since this process started.

    `topic_end` (the topic's end offsets) is read from Kafka when not given.
    """
    pid = runtime.running_pid(settings, "stream")
    started = _started_at(settings, "stream")
    if pid is None or started is None:
        return StreamObservation(pid=None, uptime_s=None)
    since = datetime.fromtimestamp(started - _START_SLACK_S, UTC)
    ages = fresh_queries(conn, queries, since)
    with conn.cursor() as cur:
        cur.execute(RECENT_SQL, (list(queries), since, RECENT_BATCHES))
        recent: dict[str, list[tuple[Any, ...]]] = {}
        for row in cur.fetchall():
            recent.setdefault(str(row[0]), []).append(row)
    lag_error = None
    if topic_end is None:
        try:
            topic_end = topic_end_offsets(
                settings.kafka_bootstrap, settings.trades_topic, KAFKA_TIMEOUT_MS, "candlelake-supervisor"
            )
        except Exception as exc:  # an observation reports, it never raises
            lag_error = f"cannot read the end offsets of topic {settings.trades_topic!r}: {one_line(exc)}"
    observed = []
    for name in queries:
        rows = recent.get(name, [])
        with_input = [r for r in rows if r[2]]
        inputs = [float(r[3]) for r in with_input if r[3] is not None]
        processed = [float(r[4]) for r in with_input if r[4] is not None]
        offsets = next((_topic_offsets(r[6], settings.trades_topic) for r in rows if r[6]), None)
        observed.append(
            QueryObservation(
                name=name,
                report_age_s=ages.get(name),
                batches=len(rows),
                last_batch_id=int(rows[0][1]) if rows else None,
                input_rate=sum(inputs) / len(inputs) if inputs else None,
                processing_rate=sum(processed) / len(processed) if processed else None,
                rows_dropped=sum(int(r[5] or 0) for r in rows),
                lag=lag(offsets, topic_end) if offsets is not None and topic_end is not None else None,
            )
        )
    return StreamObservation(pid, max(0.0, time.time() - started), tuple(observed), lag_error)


def _topic_offsets(end_offsets: Any, topic: str) -> dict[str, int] | None:
    data = json.loads(end_offsets) if isinstance(end_offsets, str) else end_offsets
    found = data.get(topic) if isinstance(data, Mapping) else None
    return {str(p): int(o) for p, o in found.items()} if isinstance(found, Mapping) else None


# --- act and record --------------------------------------------------------------------------------


def restart(
    settings: Settings,
    decision: Decision,
    desired: Desired,
    timeout_s: float | None = None,
    conn_id: str = SPARK_CONN_ID,
) -> tuple[str, str, dict[str, Any]]:
    """Stop (when stuck), start and wait for a dead or stuck part: (action, detail, restart metrics)."""
    component: ProducerComponent | StreamComponent = (
        ProducerComponent(settings) if decision.component == "producer" else StreamComponent(settings)
    )
    timeout = component.start_timeout if timeout_s is None else timeout_s
    began = time.monotonic()
    info: dict[str, Any] = {"old_pid": decision.metrics.get("pid")}
    try:
        info["reaped"] = reap_leftovers(settings, component.name)
        component.stop()  # the stuck process (graceful, then the whole group); a dead one's pid file
        if isinstance(component, ProducerComponent):
            options = producer_options(settings, desired)
            info["options"] = options.as_json()
            pid = start_producer(settings, options)
            how = f"with {options.describe()}"
        else:
            pid = start_stream_job(settings, conn_id)
            how = "with the hook-built spark-submit"
    except (runtime.ComponentError, StreamControlError) as exc:
        info["seconds"] = round(time.monotonic() - began, 1)
        info["reason"] = str(exc)
        return RESTART_FAILED, f"{decision.detail}; restart failed: {one_line(exc)}", info
    info["new_pid"] = pid
    failure = wait_healthy(component, pid, timeout)
    info["seconds"] = round(time.monotonic() - began, 1)
    if failure:
        info["reason"] = failure
        info["log_tail"] = runtime.tail(component.log)
        return RESTART_FAILED, f"{decision.detail}; restart {how} failed: {failure}", info
    return RESTARTED, f"{decision.detail}; restarted {how}: pid {pid} healthy after {info['seconds']:.0f}s", info


def record_check(conn: psycopg2.extensions.connection, run_id: str, check: Check) -> None:
    """Store one part's check for `run_id`, replacing an earlier one of the same run (a retried task)."""
    with conn.cursor() as cur:
        cur.execute(
            "WITH gone AS (DELETE FROM supervisor_checks WHERE run_id = %s AND component = %s) "
            "INSERT INTO supervisor_checks (run_id, component, state, action, detail, metrics) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (
                run_id,
                check.component,
                run_id,
                check.component,
                check.state,
                check.action,
                check.detail,
                Json(check.metrics),
            ),
        )


def supervise(
    settings: Settings,
    run_id: str,
    producer_timeout_s: float | None = None,
    stream_timeout_s: float | None = None,
    conn_id: str = SPARK_CONN_ID,
) -> list[Check]:
    """One supervisor run: observe, decide, act and record, the producer first, then the streaming job.

    Holds the stream-control lock throughout, so a start_stream / stop_stream waits for it. Raises
    StreamControlError only when PostgreSQL cannot be reached (nothing could be judged or recorded).
    """
    checks = []
    with control_lock(settings) as conn:
        desired = desired_state(conn)
        for name in ("producer", "stream"):
            if name == "producer":
                decision = decide_producer(
                    observe_producer(settings, conn), desired[name], settings.supervisor_producer_max_age_s
                )
                timeout = producer_timeout_s
            else:
                decision = decide_stream(
                    observe_stream(settings, conn), desired[name], settings.supervisor_batch_max_age_s
                )
                timeout = stream_timeout_s
            metrics = dict(decision.metrics)
            if decision.restart:
                log.warning("%s is %s: %s; restarting", name, decision.state, decision.detail)
                action, detail, metrics["restart"] = restart(settings, decision, desired[name], timeout, conn_id)
            else:
                action, detail = NONE, decision.detail
            check = Check(name, decision.state, action, detail, metrics)
            record_check(conn, run_id, check)
            log.info("%s: %s, action %s: %s", name, check.state, check.action, check.detail)
            checks.append(check)
    return checks


def summarize(checks: Sequence[Check]) -> str:
    """One line for the task log: each part's state and what was done."""
    return "; ".join(f"{c.component} {c.state}" + ("" if c.action == NONE else f" ({c.action})") for c in checks)
