"""Faults a user meets on a fresh machine get one clear message naming the part and what to do.

Each test runs the real `candlelake` command with a runtime folder of its own, so it never touches a
platform that is already running.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from candlelake.config import load_settings
from candlelake.platform.orchestrator import components

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "candlelake")


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    # Under /tmp and world-traversable: the PostgreSQL server runs as the `postgres` user when we are root.
    path = Path(tempfile.mkdtemp(prefix="candlelake-fault-"))
    path.chmod(0o755)
    yield path
    subprocess.run(
        [CLI, "down"], env={**os.environ, "CANDLELAKE_RUNTIME_DIR": str(path)}, check=False, capture_output=True
    )
    shutil.rmtree(path, ignore_errors=True)


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=300, env={**os.environ, **env}, check=False
    )


def fake_tool(folder: Path, name: str, script: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / name
    tool.write_text("#!/bin/sh\n" + script + "\n")
    tool.chmod(0o755)


def test_a_port_already_taken_is_named_with_the_setting_to_change(runtime_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = cli("up", "--only", "postgres", CANDLELAKE_RUNTIME_DIR=str(runtime_dir), CANDLELAKE_PG_PORT=str(port))
    assert result.returncode == 2
    assert f"postgres: port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "CANDLELAKE_PG_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_postgresql_binaries_say_what_to_install(runtime_dir: Path) -> None:
    result = cli(
        "up",
        "--only",
        "postgres",
        CANDLELAKE_RUNTIME_DIR=str(runtime_dir),
        CANDLELAKE_PG_BIN_DIR=str(runtime_dir / "no-such-bin"),
    )
    assert result.returncode == 2
    assert "postgresql:" in result.stderr and "server binaries are needed" in result.stderr
    assert "CANDLELAKE_PG_BIN_DIR" in result.stderr and "Traceback" not in result.stderr


def test_a_maven_failure_names_the_part_and_its_log(runtime_dir: Path) -> None:
    fake_tool(runtime_dir / "bin", "mvn", "echo 'Could not transfer artifact' >&2; exit 1")
    result = cli(
        "install",
        "--only",
        "kafka",
        CANDLELAKE_RUNTIME_DIR=str(runtime_dir),
        CANDLELAKE_CACHE_DIR=str(runtime_dir / "cache"),
        PATH=f"{runtime_dir / 'bin'}:{os.environ['PATH']}",
    )
    assert result.returncode == 2
    assert "kafka: Maven could not resolve" in result.stderr
    assert "log:" in result.stderr and "Traceback" not in result.stderr


def test_missing_java_is_named(runtime_dir: Path) -> None:
    fake_tool(runtime_dir / "bin", "mvn", "exit 1")
    result = cli(
        "install",
        "--only",
        "kafka",
        CANDLELAKE_RUNTIME_DIR=str(runtime_dir),
        CANDLELAKE_CACHE_DIR=str(runtime_dir / "cache"),
        PATH=str(runtime_dir / "bin"),
    )
    assert result.returncode == 2
    assert "kafka: Java" in result.stderr and "not" in result.stderr and "Traceback" not in result.stderr


def test_down_when_nothing_runs_is_quiet_and_succeeds(runtime_dir: Path) -> None:
    result = cli("down", CANDLELAKE_RUNTIME_DIR=str(runtime_dir))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_status_when_nothing_runs_shows_every_part_stopped(runtime_dir: Path) -> None:
    result = cli("status", CANDLELAKE_RUNTIME_DIR=str(runtime_dir))
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines()[1:] if line.strip()]
    parts = [p.name for p in components(load_settings())]
    assert [line.split()[0] for line in lines] == parts
    # Every part of the platform, in the order `up` starts them: a new part is listed here on purpose.
    assert parts == [
        "postgres",
        "kafka",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "mlflow",
        "stream",
        "producer",
        "scorer",
        "reports",
        "dashboard",
    ]
    assert all("stopped" in line for line in lines)
