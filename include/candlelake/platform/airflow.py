"""Apache Airflow 3 as four platform parts: api-server, scheduler, dag-processor and triggerer.

Airflow 3 has no single "webserver + scheduler" process any more: the API server serves the UI, the
public REST API and the Execution API that task processes talk to; the scheduler (with LocalExecutor)
runs tasks; the DAG processor parses `dags/`; the triggerer runs deferred tasks. All four read the same
configuration, which we give them as `AIRFLOW__SECTION__KEY` environment variables built by one
function, `airflow_env()`, so that nothing depends on an `airflow.cfg` someone may have edited.

Files under `<runtime>/airflow/` (AIRFLOW_HOME):
- `secrets.json`: the Fernet key, the JWT secret and the API secret key, generated once (mode 0600).
  Every process must share them: the scheduler signs each task's Execution API token with the JWT
  secret and the API server checks it; a per-process random secret (Airflow's default when none is
  configured) makes every task fail with 403.
- `airflow.cfg`: the same settings as the environment, for running the `airflow` CLI by hand.
- `simple_auth_manager_passwords.json`: `{user: password}` for the Simple auth manager, rewritten on
  every start from CANDLELAKE_AIRFLOW_ADMIN_USER/_PASSWORD, so the login is known instead of generated.
- `migrated.json`: the Airflow version and Alembic revision of the last `airflow db migrate`, so a warm
  start skips the migration command (several seconds of CLI start-up) after one quick SQL query.
- `logs/`: task logs (read directly by the API server: same machine, same folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import urlsafe_b64encode
from collections.abc import Iterator, Mapping
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg2

from candlelake.config import Settings
from candlelake.platform import runtime
from candlelake.platform.base import Component, Port
from candlelake.platform.runtime import ComponentError
from candlelake.platform.stream import SPARK_CONN_ID

# How long one `airflow db migrate` may take: the first run creates ~60 tables on a 2-core machine.
MIGRATE_TIMEOUT_S = 900.0
# A health request must be quick: `healthy()` is polled every half second by `up` and by `status`.
HEALTH_TIMEOUT_S = 3.0

# Small-machine sizing (2 cores, a few GB shared with Kafka, Spark and PostgreSQL).
PARALLELISM = 4  # task slots for the whole installation (LocalExecutor worker processes)
API_WORKERS = 1  # one uvicorn process; the UI and a handful of tasks do not need more
PARSING_PROCESSES = 2  # one per core; our DAG files are small and cheap to parse
# A new file in dags/ is found at the next bundle refresh, then parsed; 10 s keeps "new DAG visible"
# well under 30 s. Known files are re-parsed every 30 s (Airflow's default), which is cheap here.
DAG_REFRESH_INTERVAL_S = 10
MIN_FILE_PROCESS_INTERVAL_S = 30

AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def airflow_bin() -> Path:
    """The venv's `airflow` launcher: the same interpreter and packages as candlelake itself."""
    return Path(sys.executable).parent / "airflow"


def airflow_home(settings: Settings) -> Path:
    return settings.runtime_dir / "airflow"


def dags_folder(settings: Settings) -> Path:
    return settings.project_root / "dags"


def passwords_file(settings: Settings) -> Path:
    return airflow_home(settings) / "simple_auth_manager_passwords.json"


def _write_private(path: Path, text: str) -> None:
    """Write a file only we can read, atomically (a reader never sees half of it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def shared_secrets(settings: Settings) -> dict[str, str]:
    """The installation's secrets, generated on first use and then read back, identical for every process."""
    home = airflow_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "secrets.json"
    if not path.is_file():
        generated = {
            # A Fernet key is 32 random bytes, url-safe base64 (what cryptography's Fernet.generate_key does).
            "fernet_key": urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "jwt_secret": secrets.token_urlsafe(48),
            "api_secret_key": secrets.token_urlsafe(32),
        }
        tmp = home / f".secrets.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(generated, handle)
        try:
            # link() fails if another process won the race; then everyone uses the winner's secrets.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    values: dict[str, str] = json.loads(path.read_text())
    return values


def write_passwords_file(settings: Settings) -> Path:
    """Fix the admin's password: the Simple auth manager only generates passwords for users missing here."""
    path = passwords_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, json.dumps({settings.airflow_admin_user: settings.airflow_admin_password}) + "\n")
    return path


def spark_connection(settings: Settings) -> dict[str, str]:
    """The Airflow connection the streaming job is submitted with, as its `AIRFLOW_CONN_<ID>` variable.

    JSON form: the master is the connection's host (local[2], spark://host:7077, ...); the provider's
    SparkSubmitHook only runs a binary of its allowed names, found on PATH (airflow_env puts ours first).
    """
    connection = {
        "conn_type": "spark",
        "host": settings.spark_master,
        "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"},
    }
    return {f"AIRFLOW_CONN_{SPARK_CONN_ID.upper()}": json.dumps(connection)}


def airflow_config(settings: Settings) -> dict[str, str]:
    """Every Airflow setting we choose, as `AIRFLOW__SECTION__KEY` variables (secrets included)."""
    s = settings
    keys = shared_secrets(s)
    api_url = s.airflow_url
    return {
        "AIRFLOW_HOME": str(airflow_home(s)),
        **spark_connection(s),
        # --- core
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder(s)),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(PARALLELISM),
        # The platform runs its DAGs (health checks, nightly compaction) as soon as it is up; a user
        # who wants a DAG off pauses it in the UI, and the pause is kept across restarts.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        # Task processes report to the Execution API; it is served by our API server on our port.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{s.airflow_admin_user}:ADMIN",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(s)),
        # --- database
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": s.airflow_sqlalchemy_url,
        # --- api server
        "AIRFLOW__API__HOST": s.host,
        "AIRFLOW__API__PORT": str(s.airflow_port),
        "AIRFLOW__API__WORKERS": str(API_WORKERS),
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        # Named issuer: tokens of another local Airflow signed with a leaked key are still refused.
        "AIRFLOW__API_AUTH__JWT_ISSUER": "candlelake",
        # --- DAG processor: a new DAG file is visible within ~20 s
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(DAG_REFRESH_INTERVAL_S),
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(MIN_FILE_PROCESS_INTERVAL_S),
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": str(PARSING_PROCESSES),
        # --- logging: our logs are files, ANSI colour codes would only clutter them
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
    }


def airflow_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every Airflow process: ours (CANDLELAKE_* included) plus Airflow's settings.

    Task processes inherit it, so a DAG's `load_settings()` sees the same configuration as `up` did.
    """
    env = dict(os.environ if base is None else base)
    env.update(airflow_config(settings))
    # candlelake is installed editable in the venv; the source folder on the path as well keeps DAG
    # imports working from a plain (non-editable) checkout too.
    include = str(settings.project_root / "include")
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if include not in paths:
        env["PYTHONPATH"] = os.pathsep.join([include, *paths])
    # The runtime folder decides where secrets, logs and pids live: tasks must see the one we use.
    env["CANDLELAKE_RUNTIME_DIR"] = str(settings.runtime_dir)
    # The venv's bin first: a task's SparkSubmitHook runs `spark-submit` from PATH, and it must be pyspark's.
    venv_bin = str(airflow_bin().parent)
    env["PATH"] = os.pathsep.join([venv_bin, *(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)])
    return env


def render_airflow_cfg(settings: Settings) -> str:
    """The same settings as `airflow_config()`, as an airflow.cfg.

    The processes we start get them from the environment (which wins over the file); the file is for a
    person running `AIRFLOW_HOME=.runtime/airflow .venv/bin/airflow ...` by hand, who then talks to the
    same database with the same secrets. Without it Airflow would write its own, with other secrets.
    """
    sections: dict[str, list[str]] = {}
    for name, value in airflow_config(settings).items():
        if not name.startswith("AIRFLOW__"):
            continue
        section, _, key = name.removeprefix("AIRFLOW__").partition("__")
        # Airflow reads the file with ConfigParser interpolation: a literal % must be doubled.
        sections.setdefault(section.lower(), []).append(f"{key.lower()} = {value.replace('%', '%%')}")
    body = "\n\n".join(f"[{section}]\n" + "\n".join(lines) for section, lines in sections.items())
    return (
        "# Written by candlelake (include/candlelake/platform/airflow.py) on every start; edits are lost.\n"
        "# Change CANDLELAKE_* settings in .env instead.\n\n" + body + "\n"
    )


def prepare_home(settings: Settings) -> None:
    """AIRFLOW_HOME with its secrets, airflow.cfg and the admin's password file; no database needed."""
    home = airflow_home(settings)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    shared_secrets(settings)
    write_passwords_file(settings)
    _write_private(home / "airflow.cfg", render_airflow_cfg(settings))


# --- metadata database --------------------------------------------------------------------------


def _airflow_version() -> str:
    return metadata.version("apache-airflow-core")


def _db_revision(settings: Settings) -> str | None:
    """The Alembic revision the Airflow database is at (None when not migrated or unreachable)."""
    s = settings
    try:
        conn = psycopg2.connect(
            host=s.host,
            port=s.pg_port,
            dbname=s.airflow_db,
            user=s.airflow_db_user,
            password=s.airflow_db_password,
            connect_timeout=5,
        )
    except psycopg2.Error:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL")
            row = cur.fetchone()
            if not row or not row[0]:
                return None
            cur.execute("SELECT version_num FROM alembic_version LIMIT 1")
            found = cur.fetchone()
            return str(found[0]) if found else None
    finally:
        conn.close()


@contextlib.contextmanager
def _migrate_lock(settings: Settings) -> Iterator[None]:
    # Two parts may be started by two shells at once; one migration at a time is enough.
    path = airflow_home(settings) / ".migrate.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_migrated(settings: Settings, log: Path, part: str = "airflow") -> float:
    """Run `airflow db migrate` unless the database is known to be at this Airflow's revision.

    Returns the seconds the migration took (0.0 when skipped). Needs PostgreSQL up.
    """
    marker = airflow_home(settings) / "migrated.json"
    version = _airflow_version()
    with _migrate_lock(settings):
        try:
            done = json.loads(marker.read_text())
        except (FileNotFoundError, ValueError):
            done = {}
        # The marker alone could lie (database dropped or restored); the live revision must agree.
        if done.get("airflow") == version and done.get("revision") and _db_revision(settings) == done["revision"]:
            return 0.0
        started = time.monotonic()
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} airflow db migrate\n".encode())
            out.flush()
            try:
                result = subprocess.run(  # argv is fixed, never user text
                    [str(airflow_bin()), "db", "migrate"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=airflow_env(settings),
                    cwd=str(settings.project_root),
                    timeout=MIGRATE_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ComponentError(
                    part, f"`airflow db migrate` took longer than {MIGRATE_TIMEOUT_S:.0f}s", log
                ) from None
        if result.returncode != 0:
            raise ComponentError(
                part,
                "`airflow db migrate` failed (is PostgreSQL up, with the airflow role and database?); "
                f"its last log lines:\n{runtime.tail(log)}",
                log,
            )
        took = time.monotonic() - started
        revision = _db_revision(settings)
        if revision:
            _write_private(marker, json.dumps({"airflow": version, "revision": revision, "seconds": round(took, 1)}))
        return took


# --- health ---------------------------------------------------------------------------------------


def fetch_health(settings: Settings, timeout: float = HEALTH_TIMEOUT_S) -> dict[str, Any] | None:
    """Airflow's own health report (`GET /api/v2/monitor/health`, no login needed), or None."""
    try:
        with urllib.request.urlopen(f"{settings.airflow_url}/api/v2/monitor/health", timeout=timeout) as resp:
            if resp.status != 200:
                return None
            report: dict[str, Any] = json.loads(resp.read())
            return report
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _started_at(settings: Settings, name: str) -> float | None:
    # runtime.spawn writes the pid file right after the process starts: its mtime is the start time.
    try:
        return runtime.pid_path(settings, name).stat().st_mtime
    except FileNotFoundError:
        return None


class AirflowComponent(Component):
    """What the four Airflow processes share: the environment, the launcher, the log, the stop."""

    command: tuple[str, ...] = ()
    start_timeout = 240.0  # Airflow's CLI alone takes seconds to import on 2 cores

    def ports(self) -> list[Port]:
        return []

    def install(self) -> None:
        runtime.require_executable(
            self.name,
            str(airflow_bin()),
            "Airflow is installed into the project's venv by `make setup` (requirements.txt).",
        )
        prepare_home(self.settings)

    def start(self) -> int:
        prepare_home(self.settings)
        # Cheap when already done; it lets any one part be started on its own (`up --only ...`).
        ensure_migrated(self.settings, self.log, self.name)
        argv = [str(airflow_bin()), *self.arguments()]
        return runtime.spawn(self.settings, self.name, argv, env=airflow_env(self.settings))

    def arguments(self) -> list[str]:
        """The `airflow` sub-command and its options."""
        return list(self.command)

    def urls(self) -> list[str]:
        return []


class ApiServerComponent(AirflowComponent):
    """The UI, the public REST API v2 and the Execution API, in one uvicorn process."""

    name = "airflow-api-server"
    stage = 1

    def arguments(self) -> list[str]:
        s = self.settings
        return ["api-server", "--host", s.host, "--port", str(s.airflow_port), "--workers", str(API_WORKERS)]

    def ports(self) -> list[Port]:
        return [Port(self.settings.airflow_port, "CANDLELAKE_AIRFLOW_PORT")]

    def healthy(self) -> bool:
        """The public API reports a healthy metadata database and the Execution API answers."""
        if not self.pid():
            return False
        report = fetch_health(self.settings)
        if not report or report.get("metadatabase", {}).get("status") != "healthy":
            return False
        try:
            url = f"{self.settings.airflow_url}/execution/health"
            with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def urls(self) -> list[str]:
        return [self.settings.airflow_url]

    def login_hint(self) -> str:
        s = self.settings
        return f"log in as {s.airflow_admin_user} / {s.airflow_admin_password}"


class _HeartbeatComponent(AirflowComponent):
    """A process that Airflow's health report tracks by its job heartbeat."""

    health_key = ""  # the component's key in /api/v2/monitor/health

    def healthy(self) -> bool:
        """Alive, and Airflow reports a fresh heartbeat from a job started by this very process.

        The heartbeat must be newer than our process: a job left by a killed predecessor may look
        healthy for up to 30 s, which would let `up` move on before this process has even connected.
        """
        if not self.pid():
            return False
        report = fetch_health(self.settings)
        entry = (report or {}).get(self.health_key) or {}
        if entry.get("status") != "healthy":
            return False
        started = _started_at(self.settings, self.name)
        beat = next((v for k, v in entry.items() if k.startswith("latest_") and v), None)
        if started is None or beat is None:
            return False
        try:
            return datetime.fromisoformat(beat).timestamp() >= started - 1.0
        except ValueError:
            return False


class SchedulerComponent(_HeartbeatComponent):
    """Schedules DAG runs and runs their tasks with the LocalExecutor (its worker processes)."""

    name = "airflow-scheduler"
    health_key = "scheduler"
    # Task logs are files under AIRFLOW_HOME/logs that the API server reads directly, so the log
    # server (another process and port 8793) is not needed.
    command = ("scheduler", "--skip-serve-logs")


class DagProcessorComponent(_HeartbeatComponent):
    """Parses the files in dags/ and stores the serialized DAGs for the scheduler and the UI."""

    name = "airflow-dag-processor"
    health_key = "dag_processor"
    command = ("dag-processor",)


class TriggererComponent(_HeartbeatComponent):
    """Runs deferred tasks' triggers (sensors waiting on time or external events)."""

    name = "airflow-triggerer"
    health_key = "triggerer"
    command = ("triggerer", "--skip-serve-logs")  # same reason as the scheduler: local log files


def airflow_components(settings: Settings) -> list[Component]:
    """The four Airflow processes, in start order: the API server first (it runs the migration and the
    others' health is read from it), then the scheduler, the DAG processor and the triggerer."""
    return [
        ApiServerComponent(settings),
        SchedulerComponent(settings),
        DagProcessorComponent(settings),
        TriggererComponent(settings),
    ]
