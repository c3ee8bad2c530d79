"""What should run, and starting and stopping it: the table `stream_control` and the start/stop of the
producer and the streaming job.

The `start_stream` and `stop_stream` DAGs call `start_stream()` and `stop_stream()`; the
`stream_supervisor` reads `desired_state()` and restarts only what should run, with the options kept
here. A component without a row should run with the settings' defaults: that is what `candlelake up`
starts, so a fresh platform is supervised without anyone pressing "start" first. `stop_stream` is the
way to keep a part down: the supervisor never restarts a part whose row says `stopped`.

Every change (and every supervisor run, see candlelake.platform.supervisor) holds one PostgreSQL advisory lock
while it works, so a stop pressed during a supervisor's restart waits for it and then wins, instead of
the two racing over the same processes.

The processes are found through their pid files (candlelake.platform.runtime), so this code runs on
the machine that runs them: Airflow's LocalExecutor on the platform's host.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2.extras import Json

from candlelake.config import PRODUCER_SOURCES, Settings
from candlelake.platform import runtime
from candlelake.platform.producer import ProducerComponent
from candlelake.platform.stream import SPARK_CONN_ID, StreamComponent

COMPONENTS: tuple[str, ...] = ("producer", "stream")
RUNNING = "running"
STOPPED = "stopped"
# Exchange symbols and product ids as people type them: BTCUSDT, btcusdt, BTC-USD, bitcoin, usd-coin.
_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
MAX_SYMBOLS = 200
# One key for the whole platform database (the text "candle" in hex); session-level, released when the
# connection closes, so a killed task never leaves it held.
LOCK_KEY = 0x63616E646C65
LOCK_WAIT_S = 900.0
CONNECT_TIMEOUT_S = 5


class StreamControlError(ValueError):
    """A request a person must fix (unknown source, malformed symbol) or a state we cannot reach."""


@dataclass(frozen=True)
class ProducerOptions:
    """What the producer runs on. No symbols: the source's own defaults (or the settings')."""

    source: str
    symbols: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, "symbols": list(self.symbols)}

    def describe(self) -> str:
        return f"{self.source} {','.join(self.symbols)}" if self.symbols else f"{self.source} (default symbols)"


@dataclass(frozen=True)
class Desired:
    """One row of `stream_control` (or the default when there is none)."""

    component: str
    desired: str
    options: Mapping[str, Any] = field(default_factory=dict)
    changed_by: str | None = None
    changed_at: datetime | None = None

    @property
    def running(self) -> bool:
        return self.desired == RUNNING


@dataclass(frozen=True)
class ControlResult:
    """What start_stream / stop_stream did, per component, in words (for the task log and XCom)."""

    desired: str
    actions: dict[str, str]
    pids: dict[str, int | None]

    def summary(self) -> str:
        return "; ".join(f"{name}: {action}" for name, action in self.actions.items())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_options(settings: Settings, source: str | None, symbols: str | Sequence[str] | None) -> ProducerOptions:
    """Check a start request: a known source and well-formed symbols; clear errors otherwise.

    `symbols` is a comma (or space) separated text or a list; empty means the source's defaults.
    Whether an exchange lists a symbol is the producer's own check when it connects.
    """
    chosen = (source or "").strip().lower() or settings.producer_source
    if chosen not in PRODUCER_SOURCES:
        raise StreamControlError(f"unknown source {source!r}; choose one of: {', '.join(PRODUCER_SOURCES)}")
    if symbols is None:
        items: list[str] = []
    elif isinstance(symbols, str):
        items = [s for s in re.split(r"[,\s]+", symbols) if s]
    else:
        items = []
        for item in symbols:
            if not isinstance(item, str):
                raise StreamControlError(f"symbol {item!r} is not text; give symbols like BTCUSDT or BTC-USD")
            items.extend(s for s in re.split(r"[,\s]+", item) if s)
    unique = list(dict.fromkeys(items))
    bad = [s for s in unique if not _SYMBOL.match(s)]
    if bad:
        raise StreamControlError(
            f"malformed symbol(s) {', '.join(repr(s) for s in bad)}: a symbol is letters and digits, "
            "optionally with '-', '_' or '.' (e.g. BTCUSDT, BTC-USD, bitcoin)"
        )
    if len(unique) > MAX_SYMBOLS:
        raise StreamControlError(f"{len(unique)} symbols given; at most {MAX_SYMBOLS} per producer")
    return ProducerOptions(chosen, tuple(unique))


def producer_options(settings: Settings, desired: Desired | None) -> ProducerOptions:
    """The options the producer should run with: those stored by start_stream, else the settings'."""
    options = dict(desired.options) if desired else {}
    return parse_options(settings, options.get("source"), options.get("symbols"))


# --- the table -------------------------------------------------------------------------------------


def connect(settings: Settings) -> psycopg2.extensions.connection:
    """An autocommit connection to the platform database, with a message a person can act on."""
    try:
        conn = psycopg2.connect(
            settings.pg_dsn(), connect_timeout=CONNECT_TIMEOUT_S, application_name="candlelake-stream-control"
        )
    except psycopg2.Error as exc:
        raise StreamControlError(
            f"cannot reach PostgreSQL at {settings.host}:{settings.pg_port}/{settings.pg_database}: "
            f"{' '.join(str(exc).split())}"
        ) from None
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def control_lock(settings: Settings, wait_s: float = LOCK_WAIT_S) -> Iterator[psycopg2.extensions.connection]:
    """Hold the stream-control lock; yields the (autocommit) connection that holds it."""
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            # lock_timeout bounds the wait for an advisory lock too; reset once we hold it.
            cur.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(wait_s * 1000)}ms",))
            try:
                cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            except psycopg2.errors.LockNotAvailable:
                raise StreamControlError(
                    f"another start_stream, stop_stream or supervisor run held the stream control lock for more "
                    f"than {wait_s:.0f}s; try again when it has finished"
                ) from None
            cur.execute("SET lock_timeout = 0")
        yield conn
    finally:
        conn.close()  # also releases the lock


def desired_state(conn: psycopg2.extensions.connection) -> dict[str, Desired]:
    """Each component's desired state; `running` with no options when it has no row."""
    with conn.cursor() as cur:
        cur.execute("SELECT component, desired, options, changed_by, changed_at FROM stream_control")
        rows = {str(r[0]): Desired(str(r[0]), str(r[1]), dict(r[2] or {}), r[3], r[4]) for r in cur.fetchall()}
    return {name: rows.get(name, Desired(name, RUNNING)) for name in COMPONENTS}


def set_desired(
    conn: psycopg2.extensions.connection,
    component: str,
    desired: str,
    options: Mapping[str, Any] | None = None,
    changed_by: str | None = None,
) -> None:
    """Upsert one component's desired state (options replace the old ones)."""
    if component not in COMPONENTS or desired not in (RUNNING, STOPPED):
        raise StreamControlError(f"cannot set {component!r} to {desired!r}")
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO stream_control (component, desired, options, changed_by, changed_at) "
            "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (component) DO UPDATE SET desired = EXCLUDED.desired, "
            "options = EXCLUDED.options, changed_by = EXCLUDED.changed_by, changed_at = EXCLUDED.changed_at",
            (component, desired, Json(dict(options or {})), changed_by),
        )


# --- the processes ---------------------------------------------------------------------------------


def start_producer(settings: Settings, options: ProducerOptions) -> int:
    """Spawn the producer detached on `options` (pid file and log of the platform's producer part)."""
    return ProducerComponent(settings).start_with(options.source, list(options.symbols) or None)


def producer_matches(settings: Settings, options: ProducerOptions) -> bool:
    """Whether the running producer was started with exactly these options (compared on its command line)."""
    component = ProducerComponent(settings)
    running = component.running_argv()
    # The interpreter may be named differently (python vs python3.11); the arguments decide.
    return running is not None and running[1:] == component.argv(options.source, list(options.symbols) or None)[1:]


def start_stream_job(settings: Settings, conn_id: str = SPARK_CONN_ID) -> int:
    """Spawn the streaming job detached with the hook-built spark-submit (pid file and log of `stream`)."""
    component = StreamComponent(settings)
    for port in component.ports():
        runtime.ensure_port_free(component.name, settings.host, port.number, port.setting)
    return component.start_from_airflow(conn_id)


def reap_leftovers(settings: Settings, name: str) -> list[int]:
    """Kill what a dead part's process group left behind; returns their pids.

    runtime.stop signals a group only while its leader lives. When the leader was killed on its own
    (spark-submit's JVM), its children (the Python driver, holding the checkpoint's state store and the
    Spark UI port) can outlive it and would block the next start. The leader's pid is dead, so no new
    group can have that id: every member left is one of these orphans.
    """
    leader = runtime.read_pid(settings, name)
    if not leader or runtime.pid_alive(leader):
        return []
    reaped = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pgrp = int(stat.read_text().rsplit(")", 1)[1].split()[2])
        except (OSError, IndexError, ValueError):  # exited while we read /proc
            continue
        if pgrp == leader:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(stat.parent.name), signal.SIGKILL)
                reaped.append(int(stat.parent.name))
    return reaped


def wait_healthy(component: ProducerComponent | StreamComponent, pid: int, timeout_s: float) -> str | None:
    """Wait until the part started as `pid` is healthy (its own check, as `candlelake up` uses);
    None when it is, else why not, in one line (its log tail is in the part's log)."""
    started = time.monotonic()
    while True:
        if component.healthy():
            return None
        if not runtime.pid_alive(pid):
            return f"pid {pid} exited {time.monotonic() - started:.0f}s after the start (see {component.log})"
        if time.monotonic() - started > timeout_s:
            return f"pid {pid} did not become healthy within {timeout_s:.0f}s (see {component.log})"
        time.sleep(0.5)


def start_stream(
    settings: Settings,
    source: str | None = None,
    symbols: str | Sequence[str] | None = None,
    changed_by: str | None = None,
    wait: bool = True,
    conn_id: str = SPARK_CONN_ID,
) -> ControlResult:
    """Set both parts to run (the producer on `source`/`symbols`) and start what is not running.

    A producer running with other options is restarted with the new ones; a running streaming job is
    left alone. With `wait`, returns once what it started is healthy, and fails saying why otherwise.
    """
    options = parse_options(settings, source, symbols)  # before touching anything
    producer, stream = ProducerComponent(settings), StreamComponent(settings)
    actions: dict[str, str] = {}
    started: list[tuple[ProducerComponent | StreamComponent, int, float]] = []
    with control_lock(settings) as conn:
        set_desired(conn, "producer", RUNNING, options.as_json(), changed_by)
        set_desired(conn, "stream", RUNNING, {}, changed_by)
        if producer.pid() and producer_matches(settings, options):
            actions["producer"] = f"already running with {options.describe()} (pid {producer.pid()})"
        else:
            was = producer.pid()
            if was:
                producer.stop()
            pid = start_producer(settings, options)
            started.append((producer, pid, producer.start_timeout))
            verb = f"restarted with new options (was pid {was})" if was else "started"
            actions["producer"] = f"{verb}: {options.describe()}, pid {pid}"
        if stream.pid():
            actions["stream"] = f"already running (pid {stream.pid()})"
        else:
            reap_leftovers(settings, stream.name)  # what a killed job's group left behind
            stream.stop()  # removes the dead job's pid file
            pid = start_stream_job(settings, conn_id)
            started.append((stream, pid, stream.start_timeout))
            actions["stream"] = f"started with the hook-built spark-submit, pid {pid}"
        if wait:
            for component, pid, timeout in started:
                failure = wait_healthy(component, pid, timeout)
                if failure:
                    raise StreamControlError(f"{component.name}: {failure}")
                actions[component.name] += " (healthy)"
    return ControlResult(RUNNING, actions, {"producer": producer.pid(), "stream": stream.pid()})


def stop_stream(settings: Settings, changed_by: str | None = None) -> ControlResult:
    """Set both parts to stopped (the supervisor then leaves them down) and stop them."""
    actions: dict[str, str] = {}
    with control_lock(settings) as conn:
        for name in COMPONENTS:
            set_desired(conn, name, STOPPED, _kept_options(conn, name), changed_by)
        # The producer first: trades it sends while the job stops wait in Kafka for the next start.
        for component in (ProducerComponent(settings), StreamComponent(settings)):
            pid = component.pid()
            actions[component.name] = f"stopped (was pid {pid})" if component.stop() and pid else "was not running"
    return ControlResult(STOPPED, actions, {"producer": None, "stream": None})


def _kept_options(conn: psycopg2.extensions.connection, component: str) -> dict[str, Any]:
    # A stop keeps the last options, so the row still says what ran (and a later start can show it).
    return dict(desired_state(conn)[component].options)
