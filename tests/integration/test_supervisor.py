"""The stream supervisor and start/stop against real PostgreSQL, Kafka, Spark and processes.

Everything here is isolated from a platform that may be running on the same machine (the e2e tier's,
or a developer's): a runtime folder of its own (pid files, logs, lake, checkpoints), a PostgreSQL
database of its own with the platform's schema (so `stream_control`, `producer_health` and
`stream_progress` are ours alone), Kafka topics of their own and a Spark UI port of its own. Processes
we start inherit these settings through the environment, as Airflow's task processes do.

The tests run in file order and hand the running parts on: a producer killed and restarted, a
streaming job killed and restarted through the hook-built spark-submit, new symbols for the
producer, then stop_stream.
"""

from __future__ import annotations

import os
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from candlelake.config import Settings, load_settings
from candlelake.platform import runtime
from candlelake.platform.airflow import spark_connection
from candlelake.platform.kafka import admin_client, topic_end_offsets
from candlelake.platform.postgres import PostgresComponent
from candlelake.platform.producer import ProducerComponent
from candlelake.platform.stream import StreamComponent
from candlelake.platform.stream_control import (
    RUNNING,
    STOPPED,
    ProducerOptions,
    control_lock,
    desired_state,
    reap_leftovers,
    set_desired,
    start_producer,
    start_stream,
    stop_stream,
    wait_healthy,
)
from candlelake.platform.supervisor import Check, observe_stream, supervise
from candlelake.sources.simulator import Simulator
from candlelake.stream.progress import STREAM_QUERIES
from candlelake.util import now_us
from tests.support.own_platform import own_database_and_topics, topic_env
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FIRST, SECOND = "AAAUSDT", "BBBUSDT"
BACKLOG = "ZZZUSDT"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    base = load_settings()
    postgres = PostgresComponent(base)
    if not postgres.healthy():
        pytest.fail(f"PostgreSQL at {base.host}:{base.pg_port} does not answer; run `candlelake up` first")
    try:
        with admin_client(base.kafka_bootstrap, 3000, "supervisor-test") as admin:
            admin.list_topics()
    except Exception as exc:
        pytest.fail(f"Kafka at {base.kafka_bootstrap} does not answer ({exc}); run `candlelake up` first")

    tag = uuid.uuid4().hex[:8]
    database = f"candlelake_svtest_{tag}"
    home = tmp_path_factory.mktemp("supervisor")
    env = {
        "CANDLELAKE_RUNTIME_DIR": str(home / "runtime"),
        "CANDLELAKE_LAKE_DIR": str(home / "runtime" / "lake"),
        "CANDLELAKE_CHECKPOINT_DIR": str(home / "runtime" / "checkpoints"),
        "CANDLELAKE_CURATED_DIR": str(home / "runtime" / "curated"),
        "CANDLELAKE_PG_DATABASE": database,
        **topic_env(f"svtest-{tag}"),
        "CANDLELAKE_SPARK_UI_PORT": str(free_port()),
        "CANDLELAKE_PRODUCER_SOURCE": "simulator",
        "CANDLELAKE_SIMULATOR_RATE": "20",
        "CANDLELAKE_HEALTH_INTERVAL_S": "1",
        "CANDLELAKE_SUPERVISOR_PRODUCER_MAX_AGE_S": "15",
        "CANDLELAKE_SUPERVISOR_BATCH_MAX_AGE_S": "120",
        "AIRFLOW_HOME": str(home / "airflow"),
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        settings = load_settings()
        for key, value in spark_connection(settings).items():  # what Airflow's task processes get
            patch.setenv(key, value)
        with own_database_and_topics(base, settings, "supervisor-test"):
            try:
                yield settings
            finally:
                for component in (ProducerComponent(settings), StreamComponent(settings)):
                    reap_leftovers(settings, component.name)
                    component.stop()


def run_id() -> str:
    return f"test__{uuid.uuid4().hex}"


def recorded(settings: Settings, run: str) -> dict[str, tuple[str, str, str, dict[str, Any]]]:
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT component, state, action, detail, metrics FROM supervisor_checks WHERE run_id = %s", (run,))
        rows = cur.fetchall()
    conn.close()
    assert len(rows) == len({r[0] for r in rows}), "one row per component per run"
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def by_component(checks: list[Check]) -> dict[str, Check]:
    return {c.component: c for c in checks}


def kill_group(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not runtime.pid_alive(pid), timeout=30, interval=0.1, what=f"pid {pid} to be gone")


def test_a_missing_spark_connection_is_named_instead_of_the_hook_falling_back_to_yarn(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = StreamComponent(settings)
    argv = stream.submit_argv_from_airflow()
    assert argv[:3] == ["spark-submit", "--master", settings.spark_master] and argv[-1] == str(stream.job_path)
    monkeypatch.delenv("AIRFLOW_CONN_CANDLELAKE_SPARK")
    with pytest.raises(runtime.ComponentError, match="the Airflow connection 'candlelake_spark' is not defined"):
        stream.submit_argv_from_airflow()


def test_a_restart_that_cannot_start_is_recorded_as_restart_failed_with_the_reason(settings: Settings) -> None:
    with control_lock(settings) as conn:
        set_desired(conn, "producer", STOPPED, {}, "test")
        set_desired(conn, "stream", RUNNING, {}, "test")
    run = run_id()
    with socket.socket() as squatter:  # another program holds the Spark UI port
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((settings.host, settings.spark_ui_port))
        squatter.listen()
        checks = by_component(supervise(settings, run))
    stream = checks["stream"]
    assert (stream.state, stream.action) == ("dead", "restart_failed")
    assert f"port {settings.spark_ui_port}" in stream.detail and "CANDLELAKE_SPARK_UI_PORT" in stream.detail
    assert StreamComponent(settings).pid() is None
    assert (checks["producer"].state, checks["producer"].action) == ("stopped", "none")
    rows = recorded(settings, run)
    assert rows["stream"][:2] == ("dead", "restart_failed")
    assert rows["stream"][3]["restart"]["reason"].startswith("stream: port")
    assert rows["producer"][:2] == ("stopped", "none")


def test_a_killed_producer_is_seen_dead_and_restarted_with_its_stored_options(settings: Settings) -> None:
    options = ProducerOptions("simulator", (FIRST,))
    with control_lock(settings) as conn:
        set_desired(conn, "producer", RUNNING, options.as_json(), "test")
        set_desired(conn, "stream", STOPPED, {}, "test")
    producer = ProducerComponent(settings)
    first = start_producer(settings, options)
    assert wait_healthy(producer, first, 60) is None, runtime.tail(producer.log)
    kill_group(first)

    run = run_id()
    checks = by_component(supervise(settings, run, producer_timeout_s=60))
    check = checks["producer"]
    assert (check.state, check.action) == ("dead", "restarted"), check.detail
    second = producer.pid()
    assert second and second != first and check.metrics["restart"]["new_pid"] == second
    assert f"--symbols {FIRST} " in " ".join(producer.running_argv() or [])
    # A stopped part is left alone: the streaming job was not started.
    assert (checks["stream"].state, checks["stream"].action) == ("stopped", "none")
    assert StreamComponent(settings).pid() is None
    rows = recorded(settings, run)
    assert {name: row[:2] for name, row in rows.items()} == {
        "producer": ("dead", "restarted"),
        "stream": ("stopped", "none"),
    }
    assert "no producer process is running" in rows["producer"][2]

    # The next run sees it healthy, on its own heartbeat, and does nothing.
    again = run_id()
    after = by_component(supervise(settings, again))["producer"]
    assert (after.state, after.action) == ("healthy", "none"), after.detail
    assert after.metrics["pid"] == second and after.metrics["heartbeat_age_s"] < 5
    assert recorded(settings, again)["producer"][:2] == ("healthy", "none")


def test_a_killed_streaming_job_is_restarted_through_the_hook_built_spark_submit(settings: Settings) -> None:
    producer, stream = ProducerComponent(settings), StreamComponent(settings)
    running_producer = producer.pid()
    result = start_stream(settings, "simulator", [FIRST], changed_by="test", wait=False)
    # Same options as the running producer: it is left alone; the job is started.
    assert producer.pid() == running_producer, result.actions
    first = stream.pid()
    assert first and "hook-built spark-submit" in result.actions["stream"]
    # Killed once its Python driver runs (a real job, not just a launcher), with kill -9 on the group.
    wait_until(
        lambda: any(_is_driver(_cmdline(p)) for p in _group(first)),
        timeout=120,
        interval=0.5,
        what="the streaming job's Python driver",
    )
    # The producer set to stopped (left alone below) and stopped: the topic holds a fixed backlog that
    # the restarted job must read to its end.
    with control_lock(settings) as conn:
        set_desired(conn, "producer", STOPPED, {"source": "simulator", "symbols": [FIRST]}, "test")
    producer.stop()
    kill_group(first)
    # And trades sent after the kill, which the killed job cannot have read: without them a job that
    # had already committed the whole topic leaves a query with no batch of input, hence no rate.
    send_backlog(settings, 200)

    run = run_id()
    checks = by_component(supervise(settings, run, stream_timeout_s=240))
    check = checks["stream"]
    assert (check.state, check.action) == ("dead", "restarted"), f"{check.detail}\n{runtime.tail(stream.log, 40)}"
    second = stream.pid()
    assert second and second != first and stream.healthy()
    assert (checks["producer"].state, checks["producer"].action) == ("stopped", "none")
    # The command in the part's log is the hook's (`spark-submit` found on PATH, master and deploy mode
    # from the Airflow connection), not `candlelake up`'s absolute path.
    started = [line for line in stream.log.read_text().splitlines() if " starting: " in line]
    command = started[-1].split(" starting: ", 1)[1]
    assert command.startswith(f"spark-submit --master {settings.spark_master} ")
    assert "--deploy-mode client" in command and f"spark.ui.port={settings.spark_ui_port}" in command
    assert recorded(settings, run)["stream"][:2] == ("dead", "restarted")

    # A healthy check reports each query's batches and rates, and its lag: 0 once it read the backlog ...
    caught_up = wait_until(
        stream_check(settings, caught_up_query), timeout=120, interval=2, what="both queries to read the backlog"
    )
    assert (caught_up.state, caught_up.action) == ("healthy", "none"), caught_up.detail
    assert all(q["report_age_s"] < 30 and q["processing_rate"] > 0 for q in caught_up.metrics["queries"].values())
    # ... against the topic's real end (read independently), and a known distance is measured exactly.
    ends = topic_end_offsets(settings.kafka_bootstrap, settings.trades_topic)
    assert ends == independent_end_offsets(settings) and sum(ends.values()) > 0
    with control_lock(settings) as conn:
        observed = observe_stream(settings, conn, topic_end={p: o + 7 for p, o in ends.items()})
    assert [(q.name, q.lag) for q in observed.queries] == [(name, 7 * len(ends)) for name in STREAM_QUERIES]

    # start_stream starts only what is not running: the producer, not the job.
    result = start_stream(settings, "simulator", [FIRST], changed_by="test")
    assert result.actions["producer"].startswith("started") and stream.pid() == second, result.actions


def send_backlog(settings: Settings, n: int) -> None:
    """`n` simulated trades of a market of their own (BACKLOG) onto the trades topic, acknowledged."""
    trades = Simulator([BACKLOG], rate=100.0, seed=11, start_time_us=now_us()).take(n)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        sent = [producer.send(settings.trades_topic, key=t.key.encode(), value=t.to_json_bytes()) for t in trades]
        producer.flush(timeout=30)
        for future in sent:
            future.get(timeout=0)
    finally:
        producer.close(timeout=10)


def caught_up_query(query: dict[str, Any]) -> bool:
    return query["last_batch_id"] is not None and query["lag"] == 0


def stream_check(settings: Settings, want: Callable[[dict[str, Any]], bool]) -> Callable[[], Check | None]:
    """A supervisor run whose stream check has every query satisfying `want` (else None, to retry)."""

    def check() -> Check | None:
        found = by_component(supervise(settings, run_id()))["stream"]
        queries = found.metrics["queries"].values()
        return found if all(q is not None and want(q) for q in queries) else None

    return check


def independent_end_offsets(settings: Settings) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(settings.trades_topic, p) for p in consumer.partitions_for_topic(settings.trades_topic)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def test_new_symbols_restart_only_the_producer(settings: Settings) -> None:
    producer, stream = ProducerComponent(settings), StreamComponent(settings)
    old_producer, old_stream = producer.pid(), stream.pid()
    assert old_producer and old_stream, "the previous test leaves both running"
    result = start_stream(settings, "simulator", f"{SECOND}", changed_by="test")
    assert "restarted with new options" in result.actions["producer"]
    assert producer.pid() not in (None, old_producer) and stream.pid() == old_stream
    assert f"--symbols {SECOND} " in " ".join(producer.running_argv() or [])
    with control_lock(settings) as conn:
        stored = desired_state(conn)
    assert stored["producer"].options == {"source": "simulator", "symbols": [SECOND]}
    assert stored["producer"].running and stored["stream"].running


def test_stop_stream_stops_both_and_the_supervisor_leaves_them_stopped(settings: Settings) -> None:
    producer, stream = ProducerComponent(settings), StreamComponent(settings)
    result = stop_stream(settings, changed_by="test")
    assert result.actions["producer"].startswith("stopped") and result.actions["stream"].startswith("stopped")
    assert producer.pid() is None and stream.pid() is None

    run = run_id()
    checks = by_component(supervise(settings, run))
    for name in ("producer", "stream"):
        assert (checks[name].state, checks[name].action) == ("stopped", "none")
        assert "set to stopped by test" in checks[name].detail
    assert producer.pid() is None and stream.pid() is None
    assert {name: row[:2] for name, row in recorded(settings, run).items()} == {
        "producer": ("stopped", "none"),
        "stream": ("stopped", "none"),
    }
    with control_lock(settings) as conn:
        # The last options are kept, so a later start (or a person) sees what ran.
        assert desired_state(conn)["producer"].options == {"source": "simulator", "symbols": [SECOND]}


def _group(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                members.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return members


def _is_driver(cmdline: str) -> bool:
    # spark-submit's own command line names the script too; the driver is the Python process running it.
    program, _, rest = cmdline.partition(" ")
    return Path(program).name.startswith("python") and "stream_candles.py" in rest


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
