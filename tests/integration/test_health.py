"""The health checks against real PostgreSQL, and against ports where nothing listens.

PostgreSQL is started through the platform's component when it is not running (and then stopped
again). Rows written here use a run id of their own and are deleted afterwards, so a live platform's
health history is not disturbed.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator

import psycopg2
import pytest

from candlelake.config import Settings, load_settings
from candlelake.platform import health
from candlelake.platform.orchestrator import up
from candlelake.platform.postgres import PostgresComponent
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings() -> Iterator[Settings]:
    settings = load_settings()
    postgres = PostgresComponent(settings)
    started_here = not (postgres.pid() and postgres.healthy())
    if started_here:
        up([postgres], lambda _: None)
    yield settings
    if started_here:
        postgres.stop()


def test_check_postgres_is_healthy_when_the_database_answers(settings: Settings) -> None:
    result = health.check_postgres(settings)
    assert result.healthy, result.detail
    assert result.component == "postgres"


def test_check_postgres_names_the_address_it_cannot_reach(settings: Settings) -> None:
    closed = dataclasses.replace(settings, pg_port=free_port())
    started = time.monotonic()
    result = health.check_postgres(closed)
    assert not result.healthy
    assert f"{settings.host}:{closed.pg_port}" in result.detail
    assert time.monotonic() - started < 5


def test_check_kafka_reports_a_down_broker_quickly(settings: Settings) -> None:
    port = free_port()
    closed = dataclasses.replace(settings, kafka_bootstrap=f"127.0.0.1:{port}")
    started = time.monotonic()
    result = health.check_kafka(closed)
    assert not result.healthy
    assert str(port) in result.detail
    assert time.monotonic() - started < 3


def test_producer_and_stream_checks_fail_cleanly_without_a_database(settings: Settings) -> None:
    closed = dataclasses.replace(settings, pg_port=free_port())
    for result in (health.check_producer(closed, 60), health.check_stream(closed, 60)):
        assert not result.healthy
        assert "cannot read" in result.detail


def test_check_stream_names_an_expected_query_that_never_reported(settings: Settings) -> None:
    query = f"no-such-query-{uuid.uuid4().hex[:8]}"
    result = health.check_stream(settings, 60, queries=[query])
    assert not result.healthy
    assert f"{query} (never)" in result.detail


def test_record_checks_replaces_a_runs_rows_instead_of_adding(settings: Settings) -> None:
    run_id = f"test__{uuid.uuid4().hex}"
    first = [health.CheckResult("postgres", True, "ok"), health.CheckResult("kafka", False, "down")]
    second = [health.CheckResult("postgres", True, "ok"), health.CheckResult("kafka", True, "back")]
    try:
        assert health.record_checks(settings, run_id, first) == 2
        assert health.record_checks(settings, run_id, second) == 2  # a retried task writes again
        with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT component, healthy, detail FROM health_checks WHERE run_id = %s ORDER BY component", (run_id,)
            )
            rows = cur.fetchall()
        conn.close()
        assert rows == [("kafka", True, "back"), ("postgres", True, "ok")]
    finally:
        with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM health_checks WHERE run_id = %s", (run_id,))
        conn.close()


def test_summary_names_what_is_down() -> None:
    results = [health.CheckResult("postgres", True, "ok"), health.CheckResult("producer", False, "silent 90s")]
    assert health.summarize(results) == "down: producer: silent 90s"
    assert health.summarize(results[:1]) == "all healthy: postgres"


def test_results_survive_the_trip_through_xcom() -> None:
    result = health.CheckResult("stream", False, "stale")
    assert health.CheckResult.from_dict(result.as_dict()) == result
