"""A Spark standalone cluster on this machine: one master and one worker, from the installed pyspark.

The jobs run unchanged on any `CANDLELAKE_SPARK_MASTER`; this is the smallest real cluster to run them
on (the tests' and bench/spark_standalone.py's), not a platform part `candlelake up` starts. pyspark's
wheel has no `sbin/` start scripts, so each daemon is its main class run by this environment's
`spark-class`, which execs the JVM:

    spark-class org.apache.spark.deploy.master.Master --host 127.0.0.1 --port 7077 --webui-port 8090
    spark-class org.apache.spark.deploy.worker.Worker spark://127.0.0.1:7077 --cores 1 --memory 1g \
        --webui-port 8091 --work-dir <runtime>/spark-work

Each daemon runs detached in a process group of its own (candlelake.platform.runtime.spawn), with its
log in `<runtime>/logs/spark-master.log` and `spark-worker.log`; the executors the worker launches
(and their Python workers) are in the worker's group, so stopping the group stops them too. The
applications' own executor logs are under the work dir, `app-*/<executor id>/stderr`.

Started means what a job needs, not just a JVM: the master's web UI reports it ALIVE (`/json/`) and
lists our worker (by its web UI port) as ALIVE with its cores. Everything binds to `host` only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from candlelake.config import Settings
from candlelake.platform import runtime

MASTER = "spark-master"
WORKER = "spark-worker"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# Heap of each daemon (not of the executors: the worker's --memory is theirs). They only keep
# bookkeeping; Spark's default is 1g each.
DAEMON_MEMORY = "512m"
# JVM start and registration take 5-15 s each on two busy cores.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0

# The daemons are ours and local: a user's HTTP(S)_PROXY must not swallow the probe.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class StandaloneSpec:
    """Where the master listens and what its one worker offers to applications."""

    host: str = "127.0.0.1"
    port: int = 7077
    webui_port: int = 8090  # not Spark's 8080: that is Airflow's
    worker_webui_port: int = 8091
    cores: int = 1
    memory: str = "1g"  # for the worker's executors; an application asks 1g each by default
    work_dir: Path | None = None  # default <runtime>/spark-work

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    @property
    def webui_url(self) -> str:
        return f"http://{self.host}:{self.webui_port}"


class StandaloneCluster:
    """Start, check and stop one master and one worker (see the module's docstring)."""

    def __init__(self, settings: Settings, spec: StandaloneSpec, worker_env: Mapping[str, str] | None = None) -> None:
        """`worker_env` adds to the worker's environment, which its executors inherit."""
        self.settings = settings
        self.spec = spec
        self.worker_env = dict(worker_env or {})
        self.startup_s = 0.0  # how long the last start() took, master and worker

    @property
    def master_url(self) -> str:
        return self.spec.master_url

    @property
    def work_dir(self) -> Path:
        return self.spec.work_dir or self.settings.runtime_dir / "spark-work"

    @property
    def master_log(self) -> Path:
        return runtime.log_path(self.settings, MASTER)

    @property
    def worker_log(self) -> Path:
        return runtime.log_path(self.settings, WORKER)

    def _spark_home(self) -> Path:
        """The installed pyspark package: its bin/spark-class and jars/ are a Spark distribution's."""
        found = importlib.util.find_spec("pyspark")
        if found is None or not found.submodule_search_locations:
            raise runtime.ComponentError(
                MASTER,
                "pyspark is not installed; install the project's requirements into this environment (make setup)",
            )
        return Path(next(iter(found.submodule_search_locations)))

    def _spark_class(self) -> str:
        return runtime.require_executable(
            MASTER,
            str(self._spark_home() / "bin" / "spark-class"),
            "Install the project's requirements into this environment (make setup).",
        )

    def _env(self, name: str, extra: Mapping[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        # Given, not searched: spark-class's own search runs whichever `python3` PATH finds first.
        env["SPARK_HOME"] = str(self._spark_home())
        # Binds the daemons' RPC and web UIs to `host` (Spark's default is every interface).
        env["SPARK_LOCAL_IP"] = self.spec.host
        env["SPARK_DAEMON_MEMORY"] = DAEMON_MEMORY
        # The master's REST submission server (port 6066) is for cluster deploy mode, which we do not use.
        env["SPARK_MASTER_OPTS"] = " ".join(
            filter(None, [env.get("SPARK_MASTER_OPTS"), "-Dspark.master.rest.enabled=false"])
        )
        env.update(extra)
        if not env.get("JAVA_HOME") and not shutil.which("java", path=env.get("PATH")):
            raise runtime.ComponentError(
                name, "Java is not installed; install a JDK 17 or newer (Debian: openjdk-17-jdk)"
            )
        return env

    def _check_free(self, name: str, port: int, field: str) -> None:
        if runtime.port_open(self.spec.host, port):
            raise runtime.ComponentError(
                name, f"port {port} on {self.spec.host} ({field}) is already in use; choose another {field}"
            )

    def master_state(self) -> dict[str, Any] | None:
        """The master's status JSON (workers, cores, applications), None when it does not answer."""
        try:
            with _DIRECT.open(f"{self.spec.webui_url}/json/", timeout=2) as response:
                state: dict[str, Any] = json.loads(response.read())
                return state
        except Exception:  # a probe reports, it never raises
            return None

    def master_alive(self) -> bool:
        state = self.master_state()
        return bool(state and state.get("status") == "ALIVE")

    def worker_registered(self) -> bool:
        """Our worker (found by its web UI port) is ALIVE at the master with all its cores."""
        state = self.master_state() or {}
        for worker in state.get("workers", []):
            address = str(worker.get("webuiaddress", ""))
            if (
                address.endswith(f":{self.spec.worker_webui_port}")
                and worker.get("state") == "ALIVE"
                and worker.get("cores") == self.spec.cores
            ):
                return True
        return False

    def running(self) -> bool:
        return bool(runtime.running_pid(self.settings, MASTER) or runtime.running_pid(self.settings, WORKER))

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the master, wait until it is ALIVE, start the worker, wait until it registered.

        Fails (ComponentError naming the daemon, with its last log lines) when a port is taken, the
        cluster of this runtime folder already runs, or a daemon exits or does not come up in time;
        whatever did start is stopped again then.
        """
        s = self.spec
        for name in (MASTER, WORKER):
            pid = runtime.running_pid(self.settings, name)
            if pid:
                raise runtime.ComponentError(
                    name, f"already running (pid {pid}); stop it first", runtime.log_path(self.settings, name)
                )
        self._check_free(MASTER, s.port, "port")
        self._check_free(MASTER, s.webui_port, "webui_port")
        self._check_free(WORKER, s.worker_webui_port, "worker_webui_port")
        spark_class = self._spark_class()
        began = time.monotonic()
        try:
            argv = [
                spark_class,
                MASTER_CLASS,
                "--host",
                s.host,
                "--port",
                str(s.port),
                "--webui-port",
                str(s.webui_port),
            ]
            pid = runtime.spawn(self.settings, MASTER, argv, env=self._env(MASTER, {}))
            runtime.wait_until(MASTER, self.master_alive, timeout, self.master_log, pid, "report ALIVE")
            self.work_dir.mkdir(parents=True, exist_ok=True)
            argv = [
                spark_class,
                WORKER_CLASS,
                s.master_url,
                "--host",
                s.host,
                "--cores",
                str(s.cores),
                "--memory",
                s.memory,
                "--webui-port",
                str(s.worker_webui_port),
                "--work-dir",
                str(self.work_dir),
            ]
            pid = runtime.spawn(self.settings, WORKER, argv, env=self._env(WORKER, self.worker_env))
            runtime.wait_until(
                WORKER, self.worker_registered, timeout, self.worker_log, pid, f"register with {s.master_url}"
            )
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began

    def stop(self) -> bool:
        """Stop the worker (and its executors), then the master; True if either was running."""
        stopped = [runtime.stop(self.settings, name, timeout=STOP_TIMEOUT_S) for name in (WORKER, MASTER)]
        return any(stopped)


@contextmanager
def standalone_cluster(
    settings: Settings,
    spec: StandaloneSpec | None = None,
    *,
    worker_env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT_S,
) -> Iterator[StandaloneCluster]:
    """A started cluster for the block (its master URL is `.master_url`), stopped afterwards."""
    cluster = StandaloneCluster(settings, spec or StandaloneSpec(), worker_env)
    cluster.start(timeout)
    try:
        yield cluster
    finally:
        cluster.stop()
