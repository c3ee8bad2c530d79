"""Health checks of the platform's parts, as plain functions the `platform_health` DAG (and the CLI) call.

Each check answers quickly (short timeouts), never raises, and returns a `CheckResult`: which part,
whether it is healthy, and a sentence a person can act on. `record_checks` stores a run's results in
the `health_checks` table.

Freshness is judged by PostgreSQL's clock (`now() - heartbeat_at`), the same clock that stamped the
rows, so a skewed clock on the Airflow worker cannot make a dead producer look alive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg2

from candlelake.config import Settings
from candlelake.stream.progress import STREAM_QUERIES
from candlelake.util import one_line

CONNECT_TIMEOUT_S = 3
KAFKA_TIMEOUT_MS = 5_000


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check; `component` matches the platform part's name where there is one."""

    component: str
    healthy: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (for XCom)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        return cls(component=str(data["component"]), healthy=bool(data["healthy"]), detail=str(data["detail"]))


def _connect(settings: Settings) -> Any:
    return psycopg2.connect(settings.pg_dsn(), connect_timeout=CONNECT_TIMEOUT_S, application_name="candlelake-health")


def _where(settings: Settings) -> str:
    return f"{settings.host}:{settings.pg_port}/{settings.pg_database}"


def check_postgres(settings: Settings) -> CheckResult:
    """The platform database accepts our role and answers a query."""
    try:
        conn = _connect(settings)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('server_version')")
                row = cur.fetchone()
        finally:
            conn.close()
    except Exception as exc:  # a check reports, it never raises
        return CheckResult("postgres", False, f"cannot query {_where(settings)}: {one_line(exc)}")
    version = row[0] if row else "?"
    return CheckResult("postgres", True, f"PostgreSQL {version} answers at {_where(settings)}")


def check_kafka(settings: Settings) -> CheckResult:
    """The broker answers and the trades topic exists (with its partition count in the detail)."""
    # The platform's own admin-client helper: it closes the client (and kafka-python 3's IO thread)
    # even when the bootstrap fails, which a check run every few minutes must not leak.
    from candlelake.platform.kafka import admin_client

    topic = settings.trades_topic
    if not any(_listening(server) for server in settings.kafka_bootstrap.split(",")):
        # Spares the client its bootstrap timeout when nothing listens at all.
        return CheckResult("kafka", False, f"nothing listens at {settings.kafka_bootstrap}: the broker is down")
    try:
        with admin_client(settings.kafka_bootstrap, KAFKA_TIMEOUT_MS, "candlelake-health-check") as admin:
            topics = set(admin.list_topics())
            if topic not in topics:
                return CheckResult(
                    "kafka", False, f"broker {settings.kafka_bootstrap} answers, but topic {topic!r} does not exist"
                )
            described = admin.describe_topics([topic])
    except Exception as exc:  # a check reports, it never raises
        return CheckResult("kafka", False, f"broker {settings.kafka_bootstrap} does not answer: {one_line(exc)}")
    partitions = len((described[0] if described else {}).get("partitions") or [])
    return CheckResult(
        "kafka", True, f"broker {settings.kafka_bootstrap} answers; topic {topic!r} has {partitions} partition(s)"
    )


def check_producer(settings: Settings, max_age_s: float) -> CheckResult:
    """Some producer has written its heartbeat to producer_health within the last `max_age_s` seconds."""
    try:
        conn = _connect(settings)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT producer, source, produced, EXTRACT(EPOCH FROM now() - heartbeat_at) AS age_s "
                    "FROM producer_health ORDER BY heartbeat_at DESC LIMIT 1"
                )
                row = cur.fetchone()
        finally:
            conn.close()
    except Exception as exc:  # a check reports, it never raises
        return CheckResult("producer", False, f"cannot read producer_health: {one_line(exc)}")
    if row is None:
        return CheckResult("producer", False, "no producer has ever reported (producer_health is empty)")
    producer, source, produced, age = row[0], row[1], row[2], float(row[3])
    if age > max_age_s:
        return CheckResult(
            "producer",
            False,
            f"producer {producer} ({source}) last reported {age:.0f}s ago "
            f"(more than {max_age_s:.0f}s): it is down or stuck",
        )
    return CheckResult(
        "producer", True, f"producer {producer} ({source}) reported {age:.0f}s ago; {produced} trades produced"
    )


def check_stream(settings: Settings, max_age_s: float, queries: Sequence[str] = STREAM_QUERIES) -> CheckResult:
    """Every streaming query (by default the streaming job's own) recorded progress within `max_age_s` s.

    The job refreshes its latest row on Spark's idle reports too, so a quiet market is not a dead stream.
    """
    try:
        conn = _connect(settings)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT query_name, EXTRACT(EPOCH FROM now() - max(recorded_at)) AS age_s "
                    "FROM stream_progress WHERE query_name = ANY(%s) GROUP BY query_name",
                    (list(queries),),
                )
                ages = {str(name): float(age) for name, age in cur.fetchall()}
        finally:
            conn.close()
    except Exception as exc:  # a check reports, it never raises
        return CheckResult("stream", False, f"cannot read stream_progress: {one_line(exc)}")
    stale = {q: ages.get(q) for q in queries if ages.get(q) is None or ages[q] > max_age_s}
    if stale:
        parts = ", ".join(f"{q} ({'never' if a is None else f'{a:.0f}s ago'})" for q, a in stale.items())
        return CheckResult("stream", False, f"no progress within {max_age_s:.0f}s from: {parts}")
    fresh = ", ".join(f"{q} ({ages[q]:.0f}s ago)" for q in queries)
    return CheckResult("stream", True, f"every streaming query reported: {fresh}")


def record_checks(settings: Settings, run_id: str, results: Iterable[CheckResult]) -> int:
    """Store one row per result for `run_id`, replacing that run's earlier rows (a retried task
    must not count a component twice). Returns the number of rows written."""
    rows = [(run_id, r.component, r.healthy, r.detail) for r in results]
    conn = _connect(settings)
    try:
        with conn, conn.cursor() as cur:  # one transaction: all of a run's results, or none
            cur.execute("DELETE FROM health_checks WHERE run_id = %s", (run_id,))
            cur.executemany(
                "INSERT INTO health_checks (run_id, component, healthy, detail) VALUES (%s, %s, %s, %s)", rows
            )
    finally:
        conn.close()
    return len(rows)


def summarize(results: Iterable[CheckResult]) -> str:
    """One line naming what is down (or saying all is well), for a task's failure message."""
    results = list(results)
    down = [r for r in results if not r.healthy]
    if not down:
        return "all healthy: " + ", ".join(r.component for r in results)
    return "down: " + "; ".join(f"{r.component}: {r.detail}" for r in down)


def _listening(server: str) -> bool:
    from candlelake.platform.runtime import port_open

    host, _, port = server.strip().rpartition(":")
    try:
        return port_open(host.strip("[]") or "localhost", int(port), timeout=1.0)
    except (ValueError, OSError):
        return True  # unparsable: let the client try and report its own error
