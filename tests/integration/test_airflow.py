"""Airflow 3 for real: PostgreSQL and the four Airflow processes started by the platform's own code.

The fixture brings up PostgreSQL, the API server, scheduler, DAG processor and triggerer with
`orchestrator.up` (reusing any that already run), and stops at the end only what it started. The tests
talk to Airflow as a user would: the REST API v2 with the admin's login. The `platform_health` run
passes or fails depending on whether Kafka, the producer and the stream are up; either way it must
record one health_checks row per component, and its final state must agree with those rows.

Figures (start-up times, time until the DAG is listed, memory) go to test-artifacts/airflow.json.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from psycopg2.extras import Json

from candlelake.config import Settings, load_settings
from candlelake.platform.airflow import airflow_components
from candlelake.platform.airflow_client import AirflowApiError, AirflowClient
from candlelake.platform.base import Component
from candlelake.platform.orchestrator import down, up
from candlelake.platform.postgres import PostgresComponent
from candlelake.platform.stream_control import COMPONENTS as COMPONENTS_CONTROLLED
from candlelake.platform.stream_control import STOPPED, set_desired

pytestmark = pytest.mark.integration

DAG_ID = "platform_health"
COMPONENTS = {"postgres", "kafka", "producer", "stream"}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Airflow:
    settings: Settings
    parts: list[Component]
    started_at: float  # monotonic time `up` began
    figures: dict[str, Any] = field(default_factory=dict)


@contextmanager
def streaming_parts_left_alone(settings: Settings) -> Iterator[None]:
    """Desired state `stopped` for the stream and the producer while this module's Airflow runs.

    Its scheduler runs the platform's DAGs, `stream_supervisor` among them, which would otherwise start
    the streaming job and the producer (no row means "running"): a stream left behind closes every
    live candle that later tests write. The rows that were there before are put back.
    """
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT component, desired, options, changed_by, changed_at FROM stream_control")
        saved = cur.fetchall()
        for component in COMPONENTS_CONTROLLED:
            set_desired(conn, component, STOPPED, changed_by="integration test: test_airflow")
    conn.close()
    try:
        yield
    finally:
        with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM stream_control")
            for row in saved:
                cur.execute(
                    "INSERT INTO stream_control (component, desired, options, changed_by, changed_at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (row[0], row[1], Json(row[2]), row[3], row[4]),
                )
        conn.close()


@pytest.fixture(scope="module")
def airflow() -> Iterator[Airflow]:
    settings = load_settings()
    with streaming_parts_left_alone(settings):
        yield from _airflow(settings)


def _airflow(settings: Settings) -> Iterator[Airflow]:
    parts: list[Component] = [PostgresComponent(settings), *airflow_components(settings)]
    already = {p.name for p in parts if p.pid()}
    lines: list[str] = []
    started = time.monotonic()
    statuses = up(parts, lines.append)
    env = Airflow(settings, parts, started)
    env.figures = {
        "up_seconds": round(time.monotonic() - started, 1),
        "up_log": lines,
        "already_running": sorted(already),
        "rss_kib_after_up": {s.name: s.rss_kib for s in statuses},
    }
    try:
        yield env
    finally:
        env.figures["rss_kib_at_end"] = {p.name: p.status().rss_kib for p in parts}
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "airflow.json").write_text(json.dumps(env.figures, indent=2) + "\n")
        down([p for p in parts if p.name not in already], lambda _: None)


@pytest.fixture(scope="module")
def client(airflow: Airflow) -> Iterator[AirflowClient]:
    with AirflowClient.from_settings(airflow.settings, timeout=30) as api:
        yield api


def test_api_server_reports_every_airflow_component_healthy(client: AirflowClient) -> None:
    report = client.health()
    for key in ("metadatabase", "scheduler", "dag_processor", "triggerer"):
        assert report[key]["status"] == "healthy", f"{key} is not healthy: {report}"


def test_every_airflow_component_is_healthy_by_its_own_check(airflow: Airflow) -> None:
    unhealthy = [p.name for p in airflow.parts if not p.healthy()]
    assert not unhealthy, f"not healthy: {unhealthy}"


def test_admin_login_gives_a_token_that_the_api_accepts(airflow: Airflow) -> None:
    s = airflow.settings
    resp = httpx.post(
        f"{s.airflow_url}/auth/token",
        timeout=30,
        json={"username": s.airflow_admin_user, "password": s.airflow_admin_password},
    )
    assert resp.status_code == 201, resp.text
    token = resp.json()["access_token"]
    dags = httpx.get(f"{s.airflow_url}/api/v2/dags", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert dags.status_code == 200, dags.text


def test_wrong_password_is_refused(airflow: Airflow) -> None:
    s = airflow.settings
    bad = AirflowClient(s.airflow_url, s.airflow_admin_user, s.airflow_admin_password + "-wrong")
    with bad, pytest.raises(AirflowApiError) as refused:
        bad.login()
    assert refused.value.status == 401


def test_api_refuses_requests_without_a_token(airflow: Airflow) -> None:
    resp = httpx.get(f"{airflow.settings.airflow_url}/api/v2/dags", timeout=30)
    assert resp.status_code in (401, 403)


def test_platform_health_is_listed_without_import_errors(airflow: Airflow, client: AirflowClient) -> None:
    dag = client.wait_for_dag(DAG_ID, timeout=90)
    airflow.figures["seconds_from_up_to_dag_listed"] = round(time.monotonic() - airflow.started_at, 1)
    assert {"candlelake", "health"} <= set(dag.tags)
    assert dag.fileloc.endswith("dags/platform_health.py")
    errors = client.import_errors()
    assert errors == [], "import errors: " + "; ".join(f"{e.filename}: {e.stack_trace[-300:]}" for e in errors)


def _health_rows(settings: Settings, run_id: str) -> list[tuple[str, bool, str]]:
    with psycopg2.connect(settings.pg_dsn(), connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT component, healthy, detail FROM health_checks WHERE run_id = %s ORDER BY component", (run_id,)
        )
        rows = [(str(c), bool(h), str(d)) for c, h, d in cur.fetchall()]
    conn.close()
    return rows


def test_triggered_platform_health_run_records_every_component(airflow: Airflow, client: AirflowClient) -> None:
    dag = client.wait_for_dag(DAG_ID, timeout=90)
    was_paused = dag.is_paused
    if was_paused:  # someone paused it in the UI; a paused DAG's runs never start
        client.set_paused(DAG_ID, False)
    try:
        run_id = f"test__{uuid.uuid4().hex[:12]}"
        triggered = time.monotonic()
        client.trigger_dag(DAG_ID, run_id=run_id, conf={"producer_max_age_s": 60, "stream_max_age_s": 180})
        # max_active_runs=1: a scheduled run in progress goes first, hence the generous timeout.
        run = client.wait_for_run(DAG_ID, run_id, timeout=420)
        airflow.figures["platform_health_run_seconds"] = round(time.monotonic() - triggered, 1)
    finally:
        if was_paused:
            client.set_paused(DAG_ID, True)

    rows = _health_rows(airflow.settings, run_id)
    airflow.figures["platform_health_result"] = {"state": run.state, "rows": rows}
    assert sorted(c for c, _, _ in rows) == sorted(COMPONENTS), f"one row per component expected: {rows}"
    all_healthy = all(healthy for _, healthy, _ in rows)
    assert run.state == ("success" if all_healthy else "failed"), f"run {run.state} but checks say {rows}"

    tasks = {t.task_id: t for t in client.task_instances(DAG_ID, run_id)}
    assert all(tasks[f"check_{c}"].state == "success" for c in COMPONENTS), tasks
    if not all_healthy:
        # Failed on purpose, not by a crash: no retry, and the message names what is down.
        assert tasks["record_checks"].state == "failed" and tasks["record_checks"].try_number == 1, tasks
        log = client.task_log(DAG_ID, run_id, "record_checks", 1)
        assert "AirflowFailException" in log, log[-2000:]
        for component, healthy, _ in rows:
            if not healthy:
                assert f"{component}:" in log, f"{component} is down but not named in:\n{log[-2000:]}"
