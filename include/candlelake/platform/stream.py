"""The Spark streaming job as a platform part: `spark-submit jobs/stream_candles.py`, detached.

`install()` resolves Spark's Kafka connector (build/maven/spark-kafka/pom.xml) into
`.cache/jars/spark-kafka/`; `start()` runs this environment's spark-submit with those jars on the
configured master. The job's log (Spark's and ours) is `<runtime>/logs/stream.log`.

Healthy means the whole path works, not just that a JVM is up: the process is alive and each of its
streaming queries recorded progress (a batch, or an idle report while no trades arrive) in
`stream_progress` within the last HEALTH_MAX_AGE_S seconds, after this process started. The Spark UI
answers long before that and keeps answering while a query is stuck on an unreachable Kafka or
PostgreSQL, so it is shown as the part's URL but not used as its health.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

from candlelake.platform import maven, runtime
from candlelake.platform.base import Component, Port
from candlelake.sinks.stream_progress import STREAM_QUERIES, fresh_queries

HEALTH_MAX_AGE_S = 30.0
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

    def start(self) -> int:
        s = self.settings
        argv = [
            self._spark_submit(),
            "--master",
            s.spark_master,
            "--name",
            "candlelake-stream",
            "--driver-memory",
            s.spark_driver_memory,
            "--jars",
            ",".join(str(j) for j in self.jars()),
            "--conf",
            f"spark.ui.port={s.spark_ui_port}",
            # Fail instead of quietly moving the UI to the next free port, where nobody would look.
            "--conf",
            "spark.port.maxRetries=0",
            str(self.job_path),
        ]
        env = dict(os.environ)
        # Driver and workers run this very interpreter, with candlelake and its dependencies installed.
        env["PYSPARK_PYTHON"] = sys.executable
        env["PYSPARK_DRIVER_PYTHON"] = sys.executable
        if s.spark_master.startswith("local"):
            # Everything stays on this machine: bind the driver and its UI to the platform's host only.
            env.setdefault("SPARK_LOCAL_IP", s.host)
        return runtime.spawn(s, self.name, argv, env=env)

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
