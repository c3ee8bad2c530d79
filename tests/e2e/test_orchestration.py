"""The supervisor, compaction under kill -9 and the backfill DAG, run by Airflow against the platform.

- `stream_supervisor` finds the streaming job and the producer killed with -9, relaunches both (the
  stream through the apache-spark provider's hook, detached) and records what it saw and did.
- `lake_compaction` killed with -9 (Airflow's process, spark-submit and the JVM at once) in the middle of
  compacting a day, then run again, ends with every trade exactly once and no stray file.
- `backfill` fills a gap recorded in the ledger from a fake Binance USD-M REST API, waits until the lake
  holds every backfilled trade and plans the compaction of the day (the chain after it is
  test_nightly_chain.py's).
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from candlelake.config import Settings
from candlelake.nightly import compaction
from candlelake.platform.airflow import airflow_bin, airflow_env
from candlelake.platform.producer import ProducerComponent
from candlelake.platform.runtime import pid_alive
from candlelake.platform.stream import StreamComponent
from candlelake.sources.simulator import Simulator
from candlelake.trade import Trade
from tests.e2e.airflow_support import ARTIFACTS, client, dags_test
from tests.e2e.conftest import run_cli
from tests.e2e.test_pipeline import lake_rows, produce
from tests.fakes.recording import BINANCE_USDM, LiveReplay, Recording
from tests.support.postgres import rows
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def test_supervisor_restarts_a_killed_streaming_job_and_producer(platform: Settings) -> None:
    # The scheduled runs are paused for the whole tier (conftest.py): this test's own runs do the restart.
    _kill_and_supervise(platform)


def _kill_and_supervise(platform: Settings) -> None:
    stream, producer = StreamComponent(platform), ProducerComponent(platform)
    stream_pid, producer_pid = stream.pid(), producer.pid()
    assert stream_pid and producer_pid, "the platform's stream and producer should be running"
    since = datetime.now(UTC)
    os.killpg(stream_pid, signal.SIGKILL)
    os.kill(producer_pid, signal.SIGKILL)
    wait_until(
        lambda: not pid_alive(stream_pid) and not pid_alive(producer_pid),
        timeout=30,
        interval=2.0,
        what="both processes gone",
    )

    result = dags_test(platform, "stream_supervisor", {})
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    checks = rows(
        platform,
        "SELECT component, state, action, detail FROM supervisor_checks WHERE checked_at >= %s ORDER BY component",
        (since,),
    )
    assert [(c, s, a) for c, s, a, _ in checks] == [("producer", "dead", "restarted"), ("stream", "dead", "restarted")]
    # The next run finds both healthy and measures how far the restarted job trails the topic.
    again = dags_test(platform, "stream_supervisor", {})
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    latest = rows(
        platform,
        "SELECT DISTINCT ON (component) component, state, action, metrics FROM supervisor_checks "
        "ORDER BY component, checked_at DESC",
    )
    assert [(c, s, a) for c, s, a, _ in latest] == [("producer", "healthy", "none"), ("stream", "healthy", "none")]
    assert "lake_trades" in json.dumps(latest[1][3]), latest[1][3]
    assert stream.pid() not in (None, stream_pid) and producer.pid() not in (None, producer_pid)
    assert stream.healthy() and producer.healthy()


def _landed(settings: Settings, exchange: str, count: int) -> bool:
    return len(lake_rows(settings, exchange)) == count


def _compacting(settings: Settings, exchange: str) -> bool:
    return bool(
        rows(settings, "SELECT 1 FROM lake_compactions WHERE exchange = %s AND status = 'running'", (exchange,))
    )


def test_compaction_killed_mid_run_and_rerun_ends_consistent(platform: Settings) -> None:
    exchange = f"kill{uuid.uuid4().hex[:8]}"
    day = date(2026, 1, 5)
    start_us = int(datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp() * 1e6)
    trades: list[Trade] = []
    for wave in range(3):  # three micro-batches of the lake query: three small files to compact
        batch = Simulator(
            ["KILLUSDT", "KILLETH"],
            rate=5,
            seed=wave,
            start_time_us=start_us + wave * 3_600_000_000,
            exchange=exchange,
            first_trade_id=1 + wave * 10_000,
        ).take(400)
        produce(platform, batch)
        trades += batch
        wait_until(
            functools.partial(_landed, platform, exchange, len(trades)),
            timeout=120,
            interval=2.0,
            what=f"wave {wave} in the lake",
        )
    conf = {"trade_date": day.isoformat(), "exchanges": [exchange], "wait_for_lake": False}

    argv = [str(airflow_bin()), "dags", "test", "lake_compaction", "--conf", json.dumps(conf)]
    log = ARTIFACTS / f"dags-test-lake_compaction-killed-{exchange}.log"
    ARTIFACTS.mkdir(exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=airflow_env(platform, os.environ),
            cwd=str(platform.project_root),
            start_new_session=True,
        )
        try:
            wait_until(
                lambda: _compacting(platform, exchange), timeout=300, interval=2.0, what="the compaction to start"
            )
            time.sleep(random.uniform(0.0, 4.0))  # somewhere in reading, writing, checking or switching
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    # What the scheduler does with a run whose worker died (its zombie detection); a `dags test` run it
    # does not schedule, so the test does it: left running, the run would block every later one.
    with client(platform) as api:
        for run in api.dag_runs("lake_compaction"):
            if run.state == "running" and run.conf.get("exchanges") == [exchange]:
                api.set_run_state("lake_compaction", run.run_id, "failed")

    # `record_compaction` only emits the asset event, which would start the rest of the chain for this
    # made-up day (minutes of Spark jobs that check nothing here, and the next test's chain run would
    # take its day along); the job itself records the compaction.
    rerun = dags_test(platform, "lake_compaction", conf, mark_success="record_compaction")
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    attempts = rows(
        platform, "SELECT status FROM lake_compactions WHERE exchange = %s ORDER BY started_at", (exchange,)
    )
    assert attempts[0][0] == "running" and attempts[-1][0] in ("switched", "skipped"), attempts

    partition = platform.curated_dir / "trades" / f"exchange={exchange}" / f"trade_date={day.isoformat()}"
    manifest = json.loads((partition / "_manifest.json").read_text())
    named = {Path(f["path"]).name for f in manifest["files"]}
    bronze = platform.lake_dir / "trades" / f"exchange={exchange}" / f"trade_date={day.isoformat()}"
    assert len(named) == 1 < len(list(bronze.glob("*.parquet"))), "three waves' files compacted into one"
    on_disk = {p.name for p in partition.glob("*.parquet")}
    assert on_disk == named, f"files no manifest names: {sorted(on_disk - named)}; missing: {sorted(named - on_disk)}"
    curated = [r for name in sorted(named) for r in pq.read_table(partition / name).to_pylist()]
    ids = sorted((r["symbol"], r["trade_id"]) for r in curated)
    assert ids == sorted((t.symbol, t.trade_id) for t in trades), "a trade lost or doubled by the kill"
    staging = compaction.staging_dir(platform.curated_dir, exchange, day)
    assert not staging.exists() or not any(staging.iterdir()), f"the killed run's staging is left: {staging}"


def test_backfill_dag_fills_a_recorded_gap_and_brings_the_day_up_to_date(platform: Settings) -> None:
    from candlelake.ingest.gaps import GapLedger
    from candlelake.sources import binance
    from tests.fakes.binance_rest import FakeBinanceRest

    exchange, symbol = "binance-usdm", "CHRUSDT"
    lines = [line for line in BINANCE_USDM.read_text().splitlines() if f'"{symbol.lower()}@aggTrade"' in line]
    trades = [binance.parse_trade(json.loads(line)["data"], exchange=exchange, source="test") for line in lines]
    ids = [t.trade_id for t in trades]
    gap = ids[20:30]
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        handle.write("\n".join(line for line, t in zip(lines, trades, strict=True) if t.trade_id not in gap) + "\n")
    replay = run_cli("replay", handle.name, "--exchange", exchange, "--no-chain")
    os.unlink(handle.name)
    assert replay.returncode == 0, replay.stdout + replay.stderr

    def landed() -> set[int]:
        return {r["trade_id"] for r in lake_rows(platform, exchange) if r["symbol"] == symbol}

    wait_until(
        lambda: landed() >= set(ids) - set(gap), timeout=120, interval=2.0, what="the trades around the gap in the lake"
    )
    assert not landed() & set(gap)
    rows(platform, "DELETE FROM trade_gaps WHERE exchange = %s AND symbol = %s RETURNING 1", (exchange, symbol))
    ledger = GapLedger(platform.pg_dsn())
    gap_id = ledger.record_ids(exchange, symbol, gap[0], gap[-1], "test: ten ids never received", "e2e")
    ledger.close_connection()

    recording = Recording.load(BINANCE_USDM)
    # Start the market at its recorded time: every trade has happened, and none is moved in time.
    market = LiveReplay(recording, start=datetime.fromtimestamp(recording.first_time_us / 1e6, UTC))
    # `recompute_days` triggers the nightly chain (lake_compaction, then the assets) for the day: the
    # same chain test_nightly_chain.py follows to the curated candles, minutes of Spark jobs for a day
    # it would not check any further. Here: the gap filled, the lake complete, the chain planned.
    with FakeBinanceRest(market, exchange) as rest:
        result = dags_test(
            platform,
            "backfill",
            {"exchange": exchange, "symbols": [symbol], "source": "rest"},
            mark_success="recompute_days",
            env={"CANDLELAKE_BINANCE_USDM_REST_URL": rest.url},
        )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "10 sent, 0 not found" in log
    [(status, filled)] = rows(platform, "SELECT status, filled FROM trade_gaps WHERE gap_id = %s", (gap_id,))
    assert (status, filled) == ("filled", 10)
    # Every trade from the one before the gap to the one after it is known now: that time is covered.
    # (The capture's ids are contiguous, so those two are the trades around the removed ones.)
    assert ids[19] == gap[0] - 1 and ids[30] == gap[-1] + 1
    gap_times = [trades[19].trade_time_us, trades[30].trade_time_us]
    spans = rows(
        platform,
        "SELECT (extract(epoch FROM started_at) * 1e6)::bigint, (extract(epoch FROM ended_at) * 1e6)::bigint "
        "FROM coverage WHERE exchange = %s AND symbol = %s AND kind = 'backfill'",
        (exchange, symbol),
    )
    assert (gap_times[0], gap_times[-1] + 1) in spans
    assert landed() == set(ids)
    day = datetime.fromtimestamp(trades[0].trade_time_us / 1e6, UTC).date().isoformat()
    assert f"next: lake_compaction of {exchange} {day} .. {day}" in log, log[-4000:]
