"""A small typed client of Airflow 3's public REST API v2, for the CLI and the tests.

Authentication: `POST /auth/token` with the Simple auth manager's user and password returns a JWT,
sent as `Authorization: Bearer ...`; when it expires (a 401), the client logs in again once.
Only what candlelake needs is wrapped: health, DAGs, import errors, DAG runs and their task instances.

    with AirflowClient.from_settings(load_settings()) as client:
        run = client.trigger_dag("platform_health", conf={"producer_max_age_s": 60})
        final = client.wait_for_run("platform_health", run.run_id, timeout=300)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from candlelake.config import Settings

# DAG run states after which nothing changes any more (Airflow's DagRunState.finished_dr_states).
FINISHED_RUN_STATES = frozenset({"success", "failed"})
PAGE_SIZE = 100  # the API's default [api] maximum_page_limit


class AirflowApiError(RuntimeError):
    """The API refused or failed a request; carries the HTTP status and Airflow's own explanation."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"Airflow API {method} {path} answered {status}: {detail}")


@dataclass(frozen=True)
class DagInfo:
    dag_id: str
    is_paused: bool
    is_stale: bool
    fileloc: str
    tags: list[str] = field(default_factory=list)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> DagInfo:
        return cls(
            dag_id=data["dag_id"],
            is_paused=bool(data.get("is_paused")),
            is_stale=bool(data.get("is_stale")),
            fileloc=str(data.get("fileloc") or ""),
            tags=sorted(t["name"] if isinstance(t, Mapping) else str(t) for t in data.get("tags") or []),
        )


@dataclass(frozen=True)
class ImportErrorInfo:
    filename: str
    stack_trace: str
    bundle_name: str | None = None


@dataclass(frozen=True)
class DagRunInfo:
    dag_id: str
    run_id: str
    state: str
    run_type: str = ""
    conf: dict[str, Any] = field(default_factory=dict)
    start_date: str | None = None
    end_date: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_RUN_STATES

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> DagRunInfo:
        return cls(
            dag_id=data["dag_id"],
            run_id=data["dag_run_id"],
            state=str(data.get("state")),
            run_type=str(data.get("run_type") or ""),
            conf=dict(data.get("conf") or {}),
            start_date=data.get("start_date"),
            end_date=data.get("end_date"),
        )


@dataclass(frozen=True)
class TaskInstanceInfo:
    task_id: str
    state: str | None
    try_number: int


class AirflowClient:
    """Talks to one Airflow API server as one user. Use as a context manager (it holds a connection pool)."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._token: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, timeout: float = 10.0) -> AirflowClient:
        return cls(settings.airflow_url, settings.airflow_admin_user, settings.airflow_admin_password, timeout)

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- plumbing ------------------------------------------------------------------------------------

    def login(self) -> str:
        """Get a fresh JWT for our user (`POST /auth/token`) and use it from now on."""
        resp = self._http.post("/auth/token", json={"username": self._username, "password": self._password})
        if resp.status_code not in (200, 201):
            raise AirflowApiError("POST", "/auth/token", resp.status_code, _detail(resp))
        token = resp.json()["access_token"]
        self._token = str(token)
        return self._token

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._token is None:
            self.login()
        for attempt in (1, 2):
            resp = self._http.request(method, path, headers={"Authorization": f"Bearer {self._token}"}, **kwargs)
            if resp.status_code == 401 and attempt == 1:
                self.login()  # the token expired (or the server's secret changed): once more, freshly
                continue
            if resp.status_code >= 400:
                raise AirflowApiError(method, path, resp.status_code, _detail(resp))
            return resp.json() if resp.content else None
        raise AssertionError("unreachable")

    def _pages(self, path: str, key: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self._request("GET", path, params={**(params or {}), "limit": PAGE_SIZE, "offset": offset})
            items: list[dict[str, Any]] = page.get(key) or []
            yield from items
            offset += len(items)
            if not items or offset >= int(page.get("total_entries", 0)):
                return

    # --- API -----------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """`GET /api/v2/monitor/health` (no login needed): metadatabase, scheduler, triggerer, dag_processor."""
        resp = self._http.get("/api/v2/monitor/health")
        if resp.status_code != 200:
            raise AirflowApiError("GET", "/api/v2/monitor/health", resp.status_code, _detail(resp))
        report: dict[str, Any] = resp.json()
        return report

    def list_dags(self, dag_id_pattern: str | None = None) -> list[DagInfo]:
        """Every DAG the DAG processor has stored (optionally whose id contains `dag_id_pattern`)."""
        params = {"dag_id_pattern": dag_id_pattern} if dag_id_pattern else {}
        return [DagInfo.from_api(d) for d in self._pages("/api/v2/dags", "dags", params)]

    def get_dag(self, dag_id: str) -> DagInfo | None:
        try:
            return DagInfo.from_api(self._request("GET", f"/api/v2/dags/{quote(dag_id, safe='')}"))
        except AirflowApiError as exc:
            if exc.status == 404:
                return None
            raise

    def import_errors(self) -> list[ImportErrorInfo]:
        """DAG files that failed to import, with Airflow's traceback."""
        return [
            ImportErrorInfo(
                filename=e.get("filename", ""), stack_trace=e.get("stack_trace", ""), bundle_name=e.get("bundle_name")
            )
            for e in self._pages("/api/v2/importErrors", "import_errors")
        ]

    def set_paused(self, dag_id: str, paused: bool) -> DagInfo:
        data = self._request("PATCH", f"/api/v2/dags/{quote(dag_id, safe='')}", json={"is_paused": paused})
        return DagInfo.from_api(data)

    def trigger_dag(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        logical_date: str | None = None,
        note: str | None = None,
    ) -> DagRunInfo:
        """Create a manual DAG run. `conf` fills the DAG's params; Airflow validates it against them."""
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        if note:
            body["note"] = note
        data = self._request("POST", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns", json=body)
        return DagRunInfo.from_api(data)

    def get_dag_run(self, dag_id: str, run_id: str) -> DagRunInfo:
        path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
        return DagRunInfo.from_api(self._request("GET", path))

    def set_run_state(self, dag_id: str, run_id: str, state: str) -> DagRunInfo:
        """Mark a run `success`, `failed` or `queued` (a run whose worker died: the scheduler sees no zombie
        in a run it does not schedule, e.g. one of `airflow dags test`)."""
        path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
        return DagRunInfo.from_api(self._request("PATCH", path, json={"state": state}))

    def dag_runs(self, dag_id: str, run_type: str | None = None) -> list[DagRunInfo]:
        """Every run of a DAG, oldest first (optionally only one run type: manual, scheduled, asset_triggered)."""
        params = {"order_by": "start_date"}
        if run_type:
            params["run_type"] = run_type
        path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns"
        return [DagRunInfo.from_api(d) for d in self._pages(path, "dag_runs", params)]

    def upstream_asset_events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The asset events that triggered an asset-triggered run (each with its `extra`); [] for others."""
        path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/upstreamAssetEvents"
        return list((self._request("GET", path) or {}).get("asset_events") or [])

    def task_instances(self, dag_id: str, run_id: str) -> list[TaskInstanceInfo]:
        path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        return [
            TaskInstanceInfo(task_id=t["task_id"], state=t.get("state"), try_number=int(t.get("try_number") or 0))
            for t in self._pages(path, "task_instances")
        ]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """A task try's log as plain text (for error messages and tests)."""
        path = (
            f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances/"
            f"{quote(task_id, safe='')}/logs/{try_number}"
        )
        data = self._request("GET", path, params={"full_content": "true"})
        content = (data or {}).get("content", "")
        if isinstance(content, list):  # Airflow 3 answers structured lines: keep the message and the error
            return "\n".join(_log_line(line) for line in content)
        return str(content)

    def wait_for_dag(self, dag_id: str, timeout: float = 90.0, poll: float = 2.0) -> DagInfo:
        """Wait until the DAG processor has stored `dag_id`; fail naming any import error instead."""
        deadline = time.monotonic() + timeout
        while True:
            dag = self.get_dag(dag_id)
            if dag is not None and not dag.is_stale:
                return dag
            if time.monotonic() > deadline:
                errors = "; ".join(
                    f"{e.filename}: {e.stack_trace.strip().splitlines()[-1:]}" for e in self.import_errors()
                )
                raise TimeoutError(
                    f"DAG {dag_id} not listed after {timeout:.0f}s" + (f" (import errors: {errors})" if errors else "")
                )
            time.sleep(poll)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300.0, poll: float = 2.0) -> DagRunInfo:
        """Poll a DAG run until it succeeds or fails; TimeoutError (with its last state) otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_dag_run(dag_id, run_id)
            if run.finished:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAG run {dag_id}/{run_id} still {run.state} after {timeout:.0f}s")
            time.sleep(poll)


def _log_line(line: Any) -> str:
    if not isinstance(line, Mapping):
        return str(line)
    text = f"{line.get('level', '')} {line.get('event', '')}".strip()
    for error in line.get("error_detail") or []:
        if isinstance(error, Mapping):
            text += f"\n  {error.get('exc_type')}: {error.get('exc_value')}"
    return text


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500]
    if isinstance(body, Mapping) and "detail" in body:
        return str(body["detail"])[:500]
    return str(body)[:500]
