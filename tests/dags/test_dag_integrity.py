"""DAG integrity: every file in dags/ imports cleanly, quickly, offline, and its DAGs follow our rules.

The DAG files are parsed with Airflow's own DagBag in a child process with its own throwaway
AIRFLOW_HOME and SQLite URL (nothing here needs a metadata database), so the test neither depends on
nor disturbs a running platform, and an `airflow` imported earlier in this pytest process cannot leak
its configuration in. In that child, every candlelake setting that leads to a server points at a
closed port and Python-level network connections raise: a DAG file that talks to PostgreSQL, Kafka or
anything else at import time shows up as an import error (or as a slow import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_port

pytestmark = pytest.mark.dags

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = PROJECT_ROOT / "dags"
# Parsing one small DAG file (with airflow.sdk already imported) takes well under a second; more
# than this means top-level work: a heavy import (pyspark, great_expectations, pandas) or I/O.
MAX_IMPORT_SECONDS = 3.0

# Runs in the child process. Prints one JSON document describing what DagBag found.
PARSE_SCRIPT = r"""
import json, socket, sys, time

def _guard(real):
    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"network access while importing a DAG file: {address!r}")
        return real(self, address)
    return guarded

socket.socket.connect = _guard(socket.socket.connect)
socket.socket.connect_ex = _guard(socket.socket.connect_ex)

import airflow.sdk  # noqa: F401 - paid once here, so per-file timings measure the file's own work
from airflow.dag_processing.dagbag import DagBag

files = sys.argv[1:]
bag = DagBag(dag_folder=files[0] if files else ".", collect_dags=False)
seconds, found = {}, {}
for path in files:
    started = time.monotonic()
    dags = bag.process_file(path, only_if_updated=False, safe_mode=False)
    seconds[path] = time.monotonic() - started
    found[path] = [d.dag_id for d in dags]

def operator(task):
    kwargs = getattr(task, "partial_kwargs", None) or {}
    return {
        "class": getattr(task, "operator_name", None) or type(task).__name__,
        "conn_id": kwargs.get("conn_id") or getattr(task, "_conn_id", None),
        "outlets": sorted(getattr(a, "name", str(a)) for a in (task.outlets or [])),
        "upstream": sorted(task.upstream_task_ids),
    }

def describe(dag):
    condition = getattr(dag.timetable, "asset_condition", None)
    return {
        "fileloc": dag.fileloc,
        "tags": sorted(dag.tags or []),
        "doc_md": dag.doc_md or "",
        "retries": {t.task_id: t.retries for t in dag.tasks},
        "tasks": len(dag.tasks),
        "operators": {t.task_id: operator(t) for t in dag.tasks},
        "timetable": type(dag.timetable).__name__,
        "schedule_assets": sorted(getattr(a, "name", str(a)) for a in getattr(condition, "objects", ())),
        "max_active_runs": dag.max_active_runs,
        "params": {k: dag.params[k] for k in dag.params},
    }

print(json.dumps({
    "import_errors": bag.import_errors,
    "seconds": seconds,
    "found": found,
    "dags": {dag_id: describe(dag) for dag_id, dag in bag.dags.items()},
}))
"""


def dag_files() -> list[Path]:
    """Every Python file Airflow would look at in dags/, helpers (`_name.py`) included."""
    return sorted(p for p in DAGS_DIR.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("airflow-home")
    closed = str(free_port())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CANDLELAKE_"))},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'unused.db'}",
        "CANDLELAKE_RUNTIME_DIR": str(home / "runtime"),
        "CANDLELAKE_PG_PORT": closed,
        "CANDLELAKE_KAFKA_PORT": closed,
        "CANDLELAKE_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed}",
        "CANDLELAKE_AIRFLOW_PORT": closed,
        "PYTHONPATH": str(PROJECT_ROOT / "include"),
    }
    files = [str(p) for p in dag_files()]
    result = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, *files],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(home),
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"parsing dags/ crashed:\n{result.stderr[-4000:]}"
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    data["home"] = str(home)
    return data


def test_dags_folder_has_dag_files() -> None:
    assert any(p.name == "platform_health.py" for p in dag_files()), "dags/platform_health.py is missing"


def test_every_dag_file_imports_without_errors(parsed: dict[str, Any]) -> None:
    assert parsed["import_errors"] == {}, "DAG import errors:\n" + "\n".join(
        f"{path}:\n{err}" for path, err in parsed["import_errors"].items()
    )


def test_every_dag_file_defines_a_dag(parsed: dict[str, Any]) -> None:
    # A DAG file whose decorated function is never called defines nothing, silently.
    empty = [path for path, ids in parsed["found"].items() if not ids and not Path(path).name.startswith("_")]
    assert not empty, f"files in dags/ that define no DAG (name helpers `_name.py`): {empty}"


def test_importing_a_dag_file_is_quick(parsed: dict[str, Any]) -> None:
    slow = {Path(p).name: round(s, 2) for p, s in parsed["seconds"].items() if s > MAX_IMPORT_SECONDS}
    assert not slow, (
        f"DAG files taking more than {MAX_IMPORT_SECONDS}s to import (move heavy imports and I/O into "
        f"the task bodies): {slow}"
    )


def test_importing_dag_files_touches_no_database(parsed: dict[str, Any]) -> None:
    # The only database configured in the child is this SQLite file; parsing must not even create it.
    assert not (Path(parsed["home"]) / "unused.db").exists()


def test_every_task_retries_at_least_once(parsed: dict[str, Any]) -> None:
    no_retry = {
        dag_id: [task for task, retries in info["retries"].items() if (retries or 0) < 1]
        for dag_id, info in parsed["dags"].items()
    }
    no_retry = {dag_id: tasks for dag_id, tasks in no_retry.items() if tasks}
    assert not no_retry, f"tasks without retries (set default_args={{'retries': 1, ...}}): {no_retry}"


def test_every_dag_has_tags(parsed: dict[str, Any]) -> None:
    untagged = [dag_id for dag_id, info in parsed["dags"].items() if not info["tags"]]
    assert not untagged, f"DAGs without tags: {untagged}"


def test_every_dag_has_documentation(parsed: dict[str, Any]) -> None:
    undocumented = [dag_id for dag_id, info in parsed["dags"].items() if len(info["doc_md"].strip()) < 20]
    assert not undocumented, f"DAGs without doc_md (use the module docstring: doc_md=__doc__): {undocumented}"


def test_platform_health_dag_shape(parsed: dict[str, Any]) -> None:
    info = parsed["dags"].get("platform_health")
    assert info is not None, f"platform_health not found; DAGs: {sorted(parsed['dags'])}"
    assert set(info["retries"]) == {"check_postgres", "check_kafka", "check_producer", "check_stream", "record_checks"}
    assert {"candlelake", "health"} <= set(info["tags"])


NIGHTLY_CHAIN = {
    # dag_id: (assets it is scheduled on, the asset its last task emits)
    "data_quality": (["candlelake.curated_trades"], "candlelake.validated_candles"),
    "load_curated_candles": (["candlelake.validated_candles"], "candlelake.curated_candles"),
    "reconcile_klines": (["candlelake.curated_candles"], None),
}


def test_nightly_chain_is_linked_by_assets(parsed: dict[str, Any]) -> None:
    dags = parsed["dags"]
    compaction = dags["lake_compaction"]
    assert compaction["timetable"] == "CronDataIntervalTimetable"
    assert compaction["operators"]["record_compaction"]["outlets"] == ["candlelake.curated_trades"]
    for dag_id, (scheduled_on, emits) in NIGHTLY_CHAIN.items():
        info = dags[dag_id]
        assert info["schedule_assets"] == scheduled_on, dag_id
        emitted = sorted(a for op in info["operators"].values() for a in op["outlets"])
        assert emitted == ([emits] if emits else []), dag_id


def test_spark_tasks_submit_through_the_platform_connection(parsed: dict[str, Any]) -> None:
    spark = {
        (dag_id, task_id): op
        for dag_id, info in parsed["dags"].items()
        for task_id, op in info["operators"].items()
        if op["class"] == "SparkSubmitOperator"
    }
    assert {key[1] for key in spark} == {"compact_partition", "recompute_candles"}
    assert all(op["conn_id"] == "candlelake_spark" for op in spark.values()), spark


def test_validation_gates_the_load(parsed: dict[str, Any]) -> None:
    # write -> audit -> publish: the asset that starts the load comes after validation, never beside it.
    ops = parsed["dags"]["data_quality"]["operators"]
    assert "recompute_candles" in ops["validate_day"]["upstream"]
    assert "validate_day" in ops["publish_report"]["upstream"]


def test_supervision_and_manual_dags(parsed: dict[str, Any]) -> None:
    dags = parsed["dags"]
    assert dags["stream_supervisor"]["max_active_runs"] == 1
    assert set(dags["stream_supervisor"]["retries"]) == {"supervise_components"}
    for dag_id in ("start_stream", "stop_stream", "backfill"):
        assert dags[dag_id]["timetable"] == "NullTimetable", f"{dag_id} must be manual only"
    assert dags["start_stream"]["params"] == {"source": "simulator", "symbols": []}
    assert set(dags["backfill"]["params"]) == {"exchange", "symbols", "start", "end", "source", "files"}
    assert {"exchange", "trade_date", "source", "files_dir", "max_mismatch_rate"} <= set(
        dags["reconcile_klines"]["params"]
    )


def test_train_models_trains_both_models_nightly(parsed: dict[str, Any]) -> None:
    info = parsed["dags"]["train_models"]
    assert info["timetable"] == "CronDataIntervalTimetable"  # CANDLELAKE_TRAINING_AT, 03:00 UTC by default
    assert set(info["operators"]) == {"train_anomaly_detector", "train_trend_classifier"}
    assert info["params"] == {"exchanges": [], "end": "", "days": 0} and info["max_active_runs"] == 1
    assert {"candlelake", "analytics"} <= set(info["tags"])
