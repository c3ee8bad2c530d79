"""The whole platform, started once for the e2e tier with the real `candlelake up`.

A platform that is already up is reused (`up` is idempotent); whatever this session started is
stopped at the end unless CANDLELAKE_KEEP_UP=1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from candlelake.config import Settings, load_settings

CLI = str(Path(sys.executable).parent / "candlelake")
# The platform's Binance REST base during the e2e tier: a fake exchange the tests serve there when
# they need it (reconcile_klines and the backfill DAG run inside Airflow, which takes its URL from `up`).
FAKE_BINANCE_REST_PORT = 18931
# Where the platform's scorer POSTs alerts during the e2e tier: a receiver the alert test serves there.
FAKE_WEBHOOK_PORT = 18932
# The platform's own simulator, slowed from its 20 trades/s: the tests send their own trades, and at
# 20/s the live candles query runs a micro-batch every second, about one of the machine's two cores
# (measured: 100-130 % CPU; 3 % with no input), which every Spark job of the tests then waits for.
PLATFORM_ENV = {
    "CANDLELAKE_BINANCE_REST_URL": f"http://127.0.0.1:{FAKE_BINANCE_REST_PORT}",
    "CANDLELAKE_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{FAKE_WEBHOOK_PORT}/hooks/candlelake",
    "CANDLELAKE_SIMULATOR_RATE": "0.2",
    # No scheduled nightly run: one that starts when the tier runs across midnight UTC compacts, checks
    # and loads every exchange of the day before (seen: a test's chain queued behind it until it timed
    # out, and curated candles replacing the live ones others compare). The tests trigger their own.
    "CANDLELAKE_NIGHTLY_AT": "off",
    # Nor a scheduled training: the tier triggers its own run on the replayed history.
    "CANDLELAKE_TRAINING_AT": "off",
}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def run_cli(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False
    )


# Package scope: the platform stops when the e2e tier ends, so the tiers after it get the machine
# (and its PostgreSQL) to themselves; a running stream closes every live candle it passes.
@pytest.fixture(scope="package")
def platform() -> Iterator[Settings]:
    # In this process's environment, so that every part started later inherits it: `up` in a test,
    # and the producer a supervisor run (`airflow dags test`) restarts.
    saved = {name: os.environ.get(name) for name in PLATFORM_ENV}
    os.environ.update(PLATFORM_ENV)
    was_up = run_cli("status").returncode == 0
    started = time.monotonic()
    result = run_cli("up")
    took = time.monotonic() - started
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "candlelake-up.txt").write_text(f"{result.stdout}\n{result.stderr}\ntook {took:.1f}s\n")
    assert result.returncode == 0, f"candlelake up failed:\n{result.stdout}\n{result.stderr}"
    settings = load_settings()
    # Tests here kill and restart parts on purpose; the scheduled supervisor would race them to it
    # (seen: a restarted stream twice). Its own test runs it when it wants it.
    from tests.e2e.airflow_support import paused

    tear_down = not was_up and os.environ.get("CANDLELAKE_KEEP_UP") != "1"
    try:
        with paused(settings, "stream_supervisor"):
            yield settings
            if tear_down:
                # The scheduler goes first, while the supervisor is still paused: unpaused with the
                # scheduler up, its next run restarted the producer `down` was stopping (seen: a producer
                # left running after the tier, heartbeating under the next platform's name).
                stopped = run_cli("down", "--only", "airflow-scheduler")
                assert stopped.returncode == 0, stopped.stderr
        if tear_down:
            down = run_cli("down")
            assert down.returncode == 0, down.stderr
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
