"""Running the platform's DAGs from tests: through the scheduler (REST API) or in-process (`airflow dags test`).

A triggered run goes through the real scheduler, executor and asset events, exactly as in production;
`airflow dags test` runs one DAG's tasks in a child process against the same metadata database and
configuration, with an environment the test can extend (a fake exchange's URL) and tasks it can mark
as done (`--mark-success-pattern`). Every child's output is kept in test-artifacts/.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from candlelake.config import Settings
from candlelake.platform.airflow import airflow_bin, airflow_env
from candlelake.platform.airflow_client import AirflowClient, DagRunInfo
from tests.support.waiting import wait_until

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def dags_test(
    settings: Settings,
    dag_id: str,
    conf: Mapping[str, Any],
    *,
    mark_success: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """`airflow dags test DAG --conf ...` in a child process; its output is saved as an artifact.

    The DAG is paused meanwhile: the scheduler also takes up a `dags test` run of an unpaused DAG and
    runs its tasks a second time, racing the child (seen: a deadlock on `dag_run`). A paused DAG's runs
    are left to the child alone; its earlier paused state is restored afterwards.
    """
    with paused(settings, dag_id):
        return _dags_test(settings, dag_id, conf, mark_success=mark_success, env=env, timeout=timeout)


@contextmanager
def paused(settings: Settings, *dag_ids: str) -> Iterator[None]:
    """Pause DAGs for the block, then unpause the ones this paused."""
    with client(settings) as api:
        api.wait_for_dag(dag_ids[0], timeout=120)
        paused_here = [d for d in dag_ids if not ((info := api.get_dag(d)) and info.is_paused)]
        for dag_id in paused_here:
            api.set_paused(dag_id, True)
    try:
        yield
    finally:
        with client(settings) as api:
            for dag_id in paused_here:
                api.set_paused(dag_id, False)


def _dags_test(
    settings: Settings,
    dag_id: str,
    conf: Mapping[str, Any],
    *,
    mark_success: str | None,
    env: Mapping[str, str] | None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    argv = [str(airflow_bin()), "dags", "test", dag_id, "--conf", json.dumps(dict(conf))]
    if mark_success:
        argv += ["--mark-success-pattern", mark_success]
    started = time.monotonic()
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**airflow_env(settings, os.environ), **(env or {})},
        cwd=str(settings.project_root),
        check=False,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    stamp = time.strftime("%H%M%S")
    (ARTIFACTS / f"dags-test-{dag_id}-{stamp}.log").write_text(
        f"$ {' '.join(argv)}\n# exit {result.returncode} after {time.monotonic() - started:.1f}s\n"
        f"{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
    return result


def client(settings: Settings) -> AirflowClient:
    return AirflowClient.from_settings(settings, timeout=30)


def trigger(settings: Settings, dag_id: str, conf: Mapping[str, Any], timeout: float = 900) -> DagRunInfo:
    """Trigger a run through the API server and wait until it finishes."""
    with client(settings) as api:
        api.wait_for_dag(dag_id, timeout=120)
        run = api.trigger_dag(dag_id, conf=conf)
        return api.wait_for_run(dag_id, run.run_id, timeout=timeout, poll=3)


def next_run(
    settings: Settings, dag_id: str, after: datetime, exchange: str | None = None, timeout: float = 900
) -> DagRunInfo:
    """Wait for the first run of `dag_id` started after `after` (an asset-triggered one) to finish.

    With `exchange`, only a run whose triggering asset events name a day of that exchange counts: other
    tests' chains may run meanwhile.
    """
    deadline = time.monotonic() + timeout
    with client(settings) as api:

        def started() -> DagRunInfo | None:
            for run in api.dag_runs(dag_id):
                if not run.start_date or datetime.fromisoformat(run.start_date) <= after:
                    continue
                if exchange is None or exchange in _event_exchanges(api, run):
                    return run
            return None

        what = f"a run of {dag_id} for {exchange or 'any exchange'} started after {after.isoformat()}"
        run = wait_until(started, timeout=timeout, interval=3, what=what)
        return api.wait_for_run(dag_id, run.run_id, timeout=max(1.0, deadline - time.monotonic()), poll=3)


def _event_exchanges(api: AirflowClient, run: DagRunInfo) -> set[str]:
    events = api.upstream_asset_events(run.dag_id, run.run_id)
    return {d.get("exchange") for e in events for d in (e.get("extra") or {}).get("days", [])}


def failed_task_logs(settings: Settings, run: DagRunInfo) -> str:
    """The logs of a run's failed tasks, for an assertion message."""
    with client(settings) as api:
        parts = []
        for ti in api.task_instances(run.dag_id, run.run_id):
            if ti.state in ("failed", "upstream_failed"):
                try:
                    parts.append(f"--- {ti.task_id}\n{api.task_log(run.dag_id, run.run_id, ti.task_id, ti.try_number)}")
                except Exception as exc:  # a log is a help, not the test
                    parts.append(f"--- {ti.task_id}: log unavailable ({exc})")
        return "\n".join(parts)[-6000:]
