"""The jobs, unchanged, on a Spark standalone cluster (one master, one worker of 1 core and 1g) give the
candles local mode gives, and the plain-Python reference.

The cluster (candlelake.platform.spark_standalone) is this module's, on free ports, with its logs under a
folder of its own. Its worker finds a `python3` on its PATH that is not this venv's and fails: a worker
host without our interpreter, so any Python an executor runs must be the one the driver names
(candlelake.spark.session). The driver binds to the loopback address (SPARK_LOCAL_IP), as the cluster does.

- the nightly recompute: `jobs/batch_candles.py --output` run as a plain `python` process on the cluster,
  from a small lake (two UTC days, late copies, covered quiet minutes), against the same recompute in the
  tier's local session and the reference;
- the streaming job: `spark-submit jobs/stream_candles.py` launched by the platform's stream part on the
  cluster, in a database, topics and folders of its own (its checkpoint guard and watermark-driven close
  must not meet the platform's candles), until its live candles and lake equal local mode and the reference.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from candlelake import coverage
from candlelake.candle import KLINE_VALUES
from candlelake.config import Settings, load_settings
from candlelake.ingest.counters import Counters
from candlelake.ingest.kafka_sinks import KafkaTradeSink
from candlelake.lake import catalog
from candlelake.nightly import recompute as batch
from candlelake.platform import runtime
from candlelake.platform.spark_standalone import StandaloneCluster, StandaloneSpec, standalone_cluster
from candlelake.platform.stream import StreamComponent
from candlelake.sources.simulator import Simulator
from candlelake.spark import transforms
from candlelake.stream import parquet_lake
from candlelake.trade import Trade
from candlelake.util import from_us, now_us, to_us
from tests.support.own_platform import own_database_and_topics, topic_env
from tests.support.ports import free_port
from tests.support.reference_candles import reference_candles
from tests.support.spark import FAST_JVM
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ["AAAUSDT", "BBBUSDT"]
MINUTE_US = 60_000_000
# Ten minutes before a UTC midnight: the recompute reads two trade_date partitions.
BATCH_T0_US = to_us(datetime.fromisoformat("2026-11-20T23:50:00+00:00"))


@pytest.fixture(scope="module")
def cluster(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    home = tmp_path_factory.mktemp("standalone")
    stub = home / "not-our-python"
    stub.mkdir()
    for name in ("python3", "python"):
        (stub / name).write_text("#!/bin/sh\necho 'not the interpreter the driver named' >&2\nexit 3\n")
        (stub / name).chmod(0o755)
    spec = StandaloneSpec(
        host="127.0.0.1",
        port=free_port(),
        webui_port=free_port(),
        worker_webui_port=free_port(),
        cores=1,
        memory="1g",
        work_dir=home / "work",
    )
    settings = dataclasses.replace(services, runtime_dir=home / "runtime")
    with standalone_cluster(settings, spec, worker_env={"PATH": f"{stub}{os.pathsep}{os.environ['PATH']}"}) as c:
        yield c


def app_names(cluster: StandaloneCluster, which: str) -> list[str]:
    """The names of the master's `activeapps` or `completedapps`: the applications that ran on the cluster."""
    return [app["name"] for app in (cluster.master_state() or {}).get(which, [])]


def trade_rows(trades: list[Trade]) -> list[tuple[Any, ...]]:
    """Trades as TRADE_SCHEMA rows."""
    return [
        (
            t.exchange,
            t.symbol,
            t.trade_id,
            t.price,
            t.qty,
            from_us(t.trade_time_us),
            t.is_buyer_maker,
            from_us(t.ingest_time_us),
            t.source,
        )
        for t in trades
    ]


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(r["exchange"], r["symbol"], r["open_us"]): r for r in rows}


def spark_candles(df: Any) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Candles of a DataFrame by (exchange, symbol, open time in epoch us)."""
    rows = df.select("exchange", "symbol", F.unix_micros("open_time").alias("open_us"), *KLINE_VALUES).collect()
    return by_key([r.asDict() for r in rows])


def reference(trades: list[Trade]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {
        (e, s, to_us(t)): {name: getattr(c, name) for name in KLINE_VALUES}
        for (e, s, t), c in reference_candles(trades).items()
    }


def values(candles: dict[tuple[str, str, int], dict[str, Any]]) -> dict[tuple[str, str, int], tuple[Any, ...]]:
    return {key: tuple(c[name] for name in KLINE_VALUES) for key, c in candles.items()}


def test_the_batch_recompute_on_the_cluster_equals_local_mode_and_the_reference(
    services: Settings, cluster: StandaloneCluster, exchange: str, spark: Any, tmp_path: Path
) -> None:
    trades = Simulator(SYMBOLS, rate=1.0, seed=18, start_time_us=BATCH_T0_US, exchange=exchange).take(3000)
    late = trades[::10]  # copies that came after the stream's dedupe window, in a later batch's files
    lake = tmp_path / "lake"
    table = lake / batch.TRADES_TABLE
    partitions = list(batch.LAKE_PARTITIONS)
    for batch_id, part in enumerate((trades, late)):
        frame = transforms.with_trade_date(spark.createDataFrame(trade_rows(part), transforms.TRADE_SCHEMA))
        parquet_lake.write_batch(frame.coalesce(1), batch_id, table, partitions)
    start_us = BATCH_T0_US - 5 * MINUTE_US
    end_us = (trades[-1].trade_time_us // MINUTE_US + 10) * MINUTE_US  # covered quiet minutes after the last trade
    coverage.record_dsn(
        services.pg_dsn(),
        [coverage.Interval(exchange, s, "test", "simulator", start_us, end_us) for s in SYMBOLS],
    )
    start, end = from_us(start_us), from_us(end_us)

    out = tmp_path / "cluster-candles"
    env = {
        **os.environ,
        "CANDLELAKE_SPARK_MASTER": cluster.master_url,
        "CANDLELAKE_LAKE_DIR": str(lake),
        "CANDLELAKE_CURATED_DIR": str(lake / "curated"),
        "CANDLELAKE_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "SPARK_LOCAL_IP": cluster.spec.host,
        # The tests' JVM flags for seconds-long JVMs, on the driver and the executor: 21 s for the job, not 40.
        "PYSPARK_SUBMIT_ARGS": f'--conf "spark.driver.extraJavaOptions={FAST_JVM}" '
        f'--conf "spark.executor.extraJavaOptions={FAST_JVM}" pyspark-shell',
    }
    # As a person runs it (`python jobs/batch_candles.py`): nothing names the executors' Python.
    env.pop("PYSPARK_PYTHON", None)
    env.pop("PYSPARK_DRIVER_PYTHON", None)
    argv = [sys.executable, str(ROOT / "jobs" / "batch_candles.py"), "--exchange", exchange]
    argv += ["--start", start.isoformat(), "--end", end.isoformat(), "--output", str(out)]
    job = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert job.returncode == 0, job.stderr[-4000:]
    summary = json.loads(job.stdout.strip().splitlines()[-1])
    assert (summary["trades_read"], summary["duplicates_dropped"]) == (len(trades) + len(late), len(late))
    assert "candlelake-batch" in app_names(cluster, "completedapps")

    local = batch.recompute(
        spark,
        lake,
        exchange,
        None,
        start,
        end,
        covered=batch.load_coverage(services.pg_dsn(), exchange, start, end),
        curated=lake / "curated",
        checkpoint=catalog.lake_checkpoint(dataclasses.replace(services, checkpoint_dir=tmp_path / "checkpoints")),
    )
    on_cluster = spark.read.parquet(str(out))
    assertDataFrameEqual(on_cluster, local)

    got = spark_candles(on_cluster)
    traded = {k: c for k, c in got.items() if c["trades"] > 0}
    assert values(traded) == values(reference(trades))
    quiet = sorted(k for k, c in got.items() if c["trades"] == 0)
    assert quiet, "the covered minutes after the last trade are quiet candles"
    for exchange_, symbol, open_us in quiet:
        before = max(k for k in traded if k[:2] == (exchange_, symbol) and k[2] < open_us)
        candle = got[(exchange_, symbol, open_us)]
        assert {candle[p] for p in ("open", "high", "low", "close")} == {traded[before]["close"]}


@pytest.fixture
def stream_settings(services: Settings, cluster: StandaloneCluster, tmp_path: Path) -> Iterator[Settings]:
    """Settings of a streaming job of its own on the cluster: database, topics, folders, UI port."""
    tag = uuid.uuid4().hex[:8]
    database = f"candlelake_satest_{tag}"
    env = {
        "CANDLELAKE_SPARK_MASTER": cluster.master_url,
        "CANDLELAKE_RUNTIME_DIR": str(tmp_path / "runtime"),
        "CANDLELAKE_LAKE_DIR": str(tmp_path / "lake"),
        "CANDLELAKE_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "CANDLELAKE_PG_DATABASE": database,
        **topic_env(f"satest-{tag}"),
        "CANDLELAKE_SPARK_UI_PORT": str(free_port()),
        "SPARK_LOCAL_IP": cluster.spec.host,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        settings = load_settings()
        with own_database_and_topics(services, settings, "standalone-test"):
            try:
                yield settings
            finally:
                StreamComponent(settings).stop()


def pg_candles(settings: Settings, exchange: str) -> dict[tuple[str, str, int], dict[str, Any]]:
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT exchange, symbol, (extract(epoch FROM open_time) * 1e6)::bigint AS open_us, "
            f"{', '.join(KLINE_VALUES)} FROM candles WHERE exchange = %s",
            (exchange,),
        )
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    conn.close()
    return by_key(rows)


def lake_trade_ids(settings: Settings, exchange: str) -> list[tuple[str, int]]:
    table = settings.lake_dir / batch.TRADES_TABLE
    if not table.is_dir():
        return []
    dataset = ds.dataset(str(table), format="parquet", partitioning="hive", exclude_invalid_files=True)
    rows = dataset.to_table(columns=["symbol", "trade_id"], filter=pc.field("exchange") == exchange).to_pylist()
    return sorted((r["symbol"], r["trade_id"]) for r in rows)


def test_a_streaming_run_on_the_cluster_equals_local_mode_and_the_reference(
    stream_settings: Settings, cluster: StandaloneCluster, exchange: str, spark: Any
) -> None:
    settings = stream_settings
    trades = Simulator(SYMBOLS, rate=20.0, seed=1818, start_time_us=now_us() - 150_000_000, exchange=exchange).take(
        2000
    )
    counters = Counters()
    sink = KafkaTradeSink(settings, counters, client_id="standalone-test")
    for trade in trades + trades[::10]:  # a producer's resend: the stream must count each trade once
        sink.send(trade)
    sink.close()
    assert (counters.produced, counters.delivery_failures) == (len(trades) + len(trades[::10]), 0)

    frame = spark.createDataFrame(trade_rows(trades + trades[::10]), transforms.TRADE_SCHEMA)
    local = spark_candles(transforms.candles(transforms.dedupe_trades(frame)))
    expected = reference(trades)
    assert values(local) == values(expected)

    stream = StreamComponent(settings)
    stream.install()
    pid = stream.start()

    def seen(what: str, got: object) -> str:
        return f"{what} on the cluster (last seen: {got}); the stream's log:\n{runtime.tail(stream.log, 30)}"

    def candles_done() -> bool:
        assert runtime.pid_alive(pid), seen("the job exited", "")
        return values(pg_candles(settings, exchange)) == values(local)

    wait_until(
        candles_done,
        300,
        2.0,
        lambda: seen("the live candles to equal local mode", len(pg_candles(settings, exchange))),
    )
    unique = sorted((t.symbol, t.trade_id) for t in trades)
    wait_until(
        lambda: lake_trade_ids(settings, exchange) == unique,
        120,
        2.0,
        lambda: seen("the lake to hold every trade once", len(lake_trade_ids(settings, exchange))),
    )
    assert "candlelake-stream" in app_names(cluster, "activeapps")
    assert stream.stop()
