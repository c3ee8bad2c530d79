"""MLflow's UI as a platform part: `mlflow server` over the store the training runs write, detached.

The models' store is a PostgreSQL database of the platform and a local artifacts folder
(candlelake.analytics.registry): training and the live scorer use it directly, so this server is only
for people, to browse runs, compare metrics and see which version is `champion`. It needs PostgreSQL
alone. One worker: a UI for a few people, not a serving endpoint (each worker is a Python process of
some 200 MB).
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from candlelake.platform import runtime
from candlelake.platform.base import Component, Port

# The server is ours and local: a user's HTTP(S)_PROXY must not swallow the health probe.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MlflowComponent(Component):
    name = "mlflow"
    stage = 1  # needs PostgreSQL only; its slow imports overlap Kafka's and Airflow's start
    # The first start migrates MLflow's tables into an empty database: some 30 s on two cores.
    start_timeout = 180.0

    def ports(self) -> list[Port]:
        return [Port(self.settings.mlflow_port, "CANDLELAKE_MLFLOW_PORT")]

    def argv(self) -> list[str]:
        s = self.settings
        mlflow = runtime.require_executable(
            self.name,
            str(Path(sys.executable).parent / "mlflow"),
            "Install the project's requirements into this environment (make setup).",
        )
        return [
            mlflow,
            "server",
            "--backend-store-uri",
            s.mlflow_tracking_uri,
            "--default-artifact-root",
            s.mlflow_artifacts_dir.as_uri(),
            "--host",
            s.host,
            "--port",
            str(s.mlflow_port),
            "--workers",
            "1",
        ]

    def start(self) -> int:
        self.settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
        return runtime.spawn(self.settings, self.name, self.argv(), env=env)

    def healthy(self) -> bool:
        """MLflow's own health endpoint answers `OK` once the server accepts requests."""
        try:
            with _DIRECT.open(f"{self.settings.mlflow_url}/health", timeout=2) as response:
                return bool(response.status == 200 and response.read(16).strip() == b"OK")
        except Exception:  # a health check reports, it never raises
            return False

    def urls(self) -> list[str]:
        return [self.settings.mlflow_url]
