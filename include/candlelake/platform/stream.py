"""The Spark streaming job as a platform part: `spark-submit jobs/stream_candles.py`, detached.

`install()` resolves Spark's Kafka connector (build/maven/spark-kafka/pom.xml) into
`.cache/jars/spark-kafka/`; `start()` runs this environment's spark-submit with those jars on the
configured master. The job's log (Spark's and ours) is `<runtime>/logs/stream.log`.

Healthy means the whole path works, not just that a JVM is up: the process is alive and each of its
streaming queries recorded progress (a batch, or an idle report while no trades arrive) in
`stream_progress` within the last HEALTH_MAX_AGE_S seconds, after this process started. The Spark UI
answers long before that and keeps answering while a query is stuck on an unreachable Kafka or
PostgreSQL, so it is shown as the part's URL but not used as its health.

Two ways to launch it, one process: `start()` (what `candlelake up` runs, no Airflow needed) and
`start_from_airflow()` (the stream supervisor and the start_stream DAG), whose command line the
apache-spark provider's SparkSubmitHook builds from the Airflow connection `candlelake_spark`. Both
spawn it detached under the same pid file and log, so `candlelake status` and `down` see one part.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

from candlelake.platform import maven, runtime
from candlelake.platform.base import Component, Port
from candlelake.stream.progress import STREAM_QUERIES, fresh_queries

HEALTH_MAX_AGE_S = 30.0
# The Airflow connection the streaming job is submitted with (its master and deploy mode); the platform's
# Airflow defines it from the settings (candlelake.platform.airflow.spark_connection).
SPARK_CONN_ID = "candlelake_spark"
APP_NAME = "candlelake-stream"
# A progress row written just before the pid file (clock granularity) still counts as this run's.
_START_SLACK_S = 2.0
# How long the Python driver gets to stop its queries and Spark before the whole group is signalled.
_GRACEFUL_STOP_S = 30.0


class StreamComponent(Component):
    name = "stream"
    # JVM start, Kafka connector load and the first micro-batch of both queries take 30-60 s on two
    # cores; a first run on a long backlog reads up to 100k records per batch before reporting.
    start_timeout = 300.0

    @property
    def job_path(self) -> Path:
        return self.settings.project_root / "jobs" / "stream_candles.py"

    def install(self) -> None:
        maven.resolve(self.settings, "spark-kafka", self.name)

    def _spark_submit(self) -> str:
        # The spark-submit of the environment we run in (pyspark's), not whichever one PATH finds first.
        return runtime.require_executable(
            self.name,
            str(Path(sys.executable).parent / "spark-submit"),
            "Install the project's requirements into this environment (make setup).",
        )

    def jars(self) -> list[Path]:
        folder = maven.resolve(self.settings, "spark-kafka", self.name)
        return sorted(folder.glob("*.jar"))

    def ports(self) -> list[Port]:
        return [Port(self.settings.spark_ui_port, "CANDLELAKE_SPARK_UI_PORT")]

    def spark_conf(self) -> dict[str, str]:
        """The Spark settings both launch paths pass."""
        return {
            "spark.ui.port": str(self.settings.spark_ui_port),
            # Fail instead of quietly moving the UI to the next free port, where nobody would look.
            "spark.port.maxRetries": "0",
        }

    def submit_env(self) -> dict[str, str]:
        """spark-submit's environment: ours, with this interpreter for Spark's Python and the venv first on PATH."""
        env = dict(os.environ)
        # Driver and workers run this very interpreter, with candlelake and its dependencies installed.
        env["PYSPARK_PYTHON"] = sys.executable
        env["PYSPARK_DRIVER_PYTHON"] = sys.executable
        # The hook names the binary `spark-submit` and lets PATH find it: it must find pyspark's, ours.
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([venv_bin, *(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)])
        if self.settings.spark_master.startswith("local"):
            # Everything stays on this machine: bind the driver and its UI to the platform's host only.
            env.setdefault("SPARK_LOCAL_IP", self.settings.host)
        return env

    def start(self) -> int:
        s = self.settings
        argv = [
            self._spark_submit(),
            "--master",
            s.spark_master,
            "--name",
            APP_NAME,
            "--driver-memory",
            s.spark_driver_memory,
            "--jars",
            ",".join(str(j) for j in self.jars()),
        ]
        for key, value in self.spark_conf().items():
            argv += ["--conf", f"{key}={value}"]
        argv.append(str(self.job_path))
        return runtime.spawn(s, self.name, argv, env=self.submit_env())

    def submit_argv_from_airflow(self, conn_id: str = SPARK_CONN_ID) -> list[str]:
        """The spark-submit command line as the apache-spark provider's SparkSubmitHook builds it.

        The connection gives the master and deploy mode; jars, memory and conf come from our settings.
        The hook quietly falls back to YARN when the connection is missing, so that is checked first.
        """
        from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

        try:
            SparkSubmitHook.get_connection(conn_id)
        except Exception as exc:
            raise runtime.ComponentError(
                self.name,
                f"the Airflow connection {conn_id!r} is not defined ({' '.join(str(exc).split())}); the platform's "
                f"Airflow defines it as AIRFLOW_CONN_{conn_id.upper()} (candlelake up starts Airflow with it)",
            ) from None
        hook = SparkSubmitHook(
            conn_id=conn_id,
            conf=self.spark_conf(),
            jars=",".join(str(j) for j in self.jars()),
            driver_memory=self.settings.spark_driver_memory,
            name=APP_NAME,
        )
        return hook._build_spark_submit_command(str(self.job_path))

    def start_from_airflow(self, conn_id: str = SPARK_CONN_ID) -> int:
        """Spawn the job detached (it outlives the Airflow task) with the hook-built command; no wait."""
        argv = self.submit_argv_from_airflow(conn_id)
        env = self.submit_env()
        if not shutil.which(argv[0], path=env["PATH"]):
            raise runtime.ComponentError(
                self.name,
                f"{argv[0]} (the Airflow connection's spark binary) is not on PATH; install the project's "
                "requirements into this environment (make setup)",
            )
        return runtime.spawn(self.settings, self.name, argv, env=env)

    def _started_at(self) -> datetime | None:
        try:
            mtime = runtime.pid_path(self.settings, self.name).stat().st_mtime
        except FileNotFoundError:
            return None
        return datetime.fromtimestamp(mtime - _START_SLACK_S, UTC)

    def healthy(self) -> bool:
        """Alive, and every query reported within HEALTH_MAX_AGE_S seconds since this process started."""
        if not self.pid():
            return False
        since = self._started_at()
        if since is None:
            return False
        try:
            conn = psycopg2.connect(self.settings.pg_dsn(), connect_timeout=2, application_name="candlelake-status")
            try:
                ages = fresh_queries(conn, STREAM_QUERIES, since)
            finally:
                conn.close()
        except Exception:
            return False
        return all(q in ages and ages[q] <= HEALTH_MAX_AGE_S for q in STREAM_QUERIES)

    def stop(self) -> bool:
        """Ask the Python driver to stop its queries first, then stop the process group as usual.

        Signalling the whole group at once (runtime.stop) lets the JVM shut down under the driver's feet;
        the driver alone stops both queries and Spark, and spark-submit's JVM then exits by itself.
        Either way is safe for the data (checkpoints and idempotent sinks); this one is quieter and
        leaves the state stores closed cleanly.
        """
        pid = self.pid()
        driver = _child_running(pid, self.job_path.name) if pid else None
        if pid and driver:
            with contextlib.suppress(ProcessLookupError):
                os.kill(driver, signal.SIGTERM)
            deadline = time.monotonic() + _GRACEFUL_STOP_S
            while runtime.pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        # runtime.stop also removes the pid file; the part counts as "was running" even when the
        # driver's own shutdown already ended it.
        return runtime.stop(self.settings, self.name) or pid is not None

    def urls(self) -> list[str]:
        return [f"http://{self.settings.host}:{self.settings.spark_ui_port}"]


def _child_running(parent: int, script: str) -> int | None:
    """The pid of a child process of `parent` whose command line mentions `script`, if any."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and script in (entry / "cmdline").read_bytes().decode(errors="replace"):
                return int(entry.name)
        except (OSError, IndexError, ValueError):
            continue
    return None
