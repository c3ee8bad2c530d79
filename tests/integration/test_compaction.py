"""Lake compaction with real Spark and the real PostgreSQL record (lake_compactions).

Bronze is written through the stream sink's own publish (candlelake.stream.parquet_lake), with the
stream's columns, into a lake folder of each test's own; the "checkpoint" is a folder with Spark's
`commits/` log layout. Every row is checked against a plain-Python truth: each distinct
(exchange, symbol, trade_id) once, the copy ingested first. Exchanges carry a random suffix and their
rows are deleted afterwards. PostgreSQL, the Spark session and the exchange names are the tier's
(tests/integration/conftest.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from candlelake.config import Settings
from candlelake.lake import catalog
from candlelake.nightly import compaction
from candlelake.nightly import recompute as batch
from candlelake.spark import transforms
from candlelake.stream import parquet_lake
from tests.support.spark import FAST_JVM
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 20)
DAY_START_US = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp()) * 1_000_000
DAY_US = 86_400_000_000
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
# Small files in tests: several curated files from a few thousand rows.
TARGET_BYTES = 40_000
Trade = dict[str, Any]


# ---------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def base_settings(services: Settings) -> Settings:
    return services  # PostgreSQL up, schema applied (tests/integration/conftest.py)


@pytest.fixture
def settings(base_settings: Settings, tmp_path: Path) -> Settings:
    return dataclasses.replace(
        base_settings,
        lake_dir=tmp_path / "lake",
        curated_dir=tmp_path / "curated",
        checkpoint_dir=tmp_path / "checkpoints",
    )


@pytest.fixture
def journal(base_settings: Settings) -> compaction.PgJournal:
    return compaction.PgJournal(base_settings.pg_dsn())


# ---------------------------------------------------------------------------------------------------
# Bronze like the stream writes it, and the truth


def make_trades(n: int, seed: int, first_id: int = 1) -> list[Trade]:
    rng = random.Random(seed)
    trades = []
    for i in range(n):
        t_us = DAY_START_US + rng.randrange(DAY_US)
        trades.append(
            {
                "symbol": rng.choice(SYMBOLS),
                "trade_id": first_id + i,
                "price": D(rng.randrange(10_000, 90_000)) / 100,
                "qty": D(rng.randrange(1, 10**6)) / 10**4,
                "trade_time": t_us,
                "is_buyer_maker": rng.random() < 0.5,
                "ingest_time": t_us + rng.randrange(1_000, 500_000),
                "source": "ws",
            }
        )
    return trades


def copy_of(trade: Trade, ingest_shift_us: int) -> Trade:
    """A second copy of a trade, as a reconnect or a replay delivers it (same exchange fields)."""
    return {**trade, "ingest_time": trade["ingest_time"] + ingest_shift_us, "source": "replay"}


STREAM_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("trade_id", pa.int64()),
        ("price", pa.decimal128(28, 10)),
        ("qty", pa.decimal128(28, 10)),
        ("trade_time", pa.timestamp("us", tz="UTC")),
        ("is_buyer_maker", pa.bool_()),
        ("ingest_time", pa.timestamp("us", tz="UTC")),
        ("source", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
    ]
)


def write_bronze(settings: Settings, exchange: str, batch_id: int, *files: list[Trade]) -> None:
    """One micro-batch of the stream: its files staged, then published (names, record) by the real sink."""
    staging = settings.lake_dir / parquet_lake.STAGING_DIR / "trades" / f"batch={batch_id}"
    folder = staging / f"exchange={exchange}" / f"trade_date={DAY.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    for n, trades in enumerate(files):
        columns: dict[str, list[Any]] = {name: [t[name] for t in trades] for name in STREAM_SCHEMA.names[:8]}
        columns["kafka_partition"] = [0] * len(trades)
        columns["kafka_offset"] = list(range(len(trades)))
        pq.write_table(pa.table(columns, schema=STREAM_SCHEMA), folder / f"part-{n:05d}.parquet")
    parquet_lake.publish(staging, settings.lake_dir / "trades", batch_id)


def commit(settings: Settings, *batch_ids: int) -> None:
    """Spark's commit log of the lake query, as the stream leaves it."""
    commits = catalog.lake_checkpoint(settings) / "commits"
    commits.mkdir(parents=True, exist_ok=True)
    for batch_id in batch_ids:
        (commits / str(batch_id)).write_text('v1\n{"nextBatchWatermarkMs":0}')


def truth(*groups: list[Trade]) -> list[tuple[Any, ...]]:
    """Each distinct trade once, the copy ingested first, as comparable tuples, in the curated order."""
    best: dict[tuple[str, int], Trade] = {}
    for trade in (t for group in groups for t in group):
        key = (trade["symbol"], trade["trade_id"])
        if key not in best or trade["ingest_time"] < best[key]["ingest_time"]:
            best[key] = trade
    return sorted((as_tuple(t) for t in best.values()), key=lambda r: (r[0], r[4], r[1]))


def as_tuple(t: Trade) -> tuple[Any, ...]:
    return (
        t["symbol"],
        t["trade_id"],
        t["price"],
        t["qty"],
        t["trade_time"],
        t["is_buyer_maker"],
        t["ingest_time"],
        t["source"],
    )


def curated_rows(settings: Settings, exchange: str) -> list[tuple[Any, ...]]:
    """Rows of the manifest's files, in file order, read with pyarrow (not Spark)."""
    partition = catalog.partition_dir(settings.curated_dir, exchange, DAY)
    manifest = catalog.read_manifest(partition)
    assert manifest is not None
    rows: list[tuple[Any, ...]] = []
    for entry in manifest.files:
        table = pq.read_table(partition / entry.path, coerce_int96_timestamp_unit="us")
        for name in ("trade_time", "ingest_time"):
            table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(pa.int64()))
        rows += [as_tuple(r) for r in table.to_pylist()]
    return rows


def expected_checksum(spark: Any, exchange: str, rows: list[tuple[Any, ...]]) -> str:
    """The checksum of the truth, computed by Spark from Python values (not from any file)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    data = [
        (exchange, s, i, p, q, epoch + timedelta(microseconds=t), m, epoch + timedelta(microseconds=g), src)
        for s, i, p, q, t, m, g, src in rows
    ]
    return compaction.checksum(spark.createDataFrame(data, transforms.TRADE_SCHEMA))[1]


def assert_consistent(settings: Settings, exchange: str, expected: list[tuple[Any, ...]]) -> catalog.Manifest:
    """The current manifest is valid, names every file in its folder, and holds every expected row once."""
    partition = catalog.partition_dir(settings.curated_dir, exchange, DAY)
    manifest = catalog.read_manifest(partition)
    assert manifest is not None
    assert catalog.manifest_problems(partition, manifest) == []
    assert sorted(p.name for p in partition.iterdir()) == sorted(
        [catalog.MANIFEST_NAME, *(f.path for f in manifest.files)]
    )
    staging = settings.curated_dir / compaction.STAGING_DIR
    assert not staging.exists(), list(staging.rglob("*"))
    rows = curated_rows(settings, exchange)
    assert rows == expected  # every row once, in (symbol, trade_time, trade_id) order across the files
    assert manifest.rows == len(expected)
    return manifest


def recorded(settings: Settings, exchange: str) -> list[dict[str, Any]]:
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT status, files_before, bytes_before, rows_before, duplicates_dropped, files_after, bytes_after, "
            "rows_after, checksum, covered_batch, note, run_id FROM lake_compactions WHERE exchange = %s "
            "ORDER BY compaction_id",
            (exchange,),
        )
        names = [c.name for c in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    conn.close()
    return rows


def compact(spark: Any, settings: Settings, exchange: str, journal: Any, **kwargs: Any) -> compaction.CompactionResult:
    return compaction.compact_day(
        spark,
        settings,
        exchange,
        DAY,
        f"test-{uuid.uuid4().hex[:6]}",
        journal=journal,
        target_bytes=TARGET_BYTES,
        **kwargs,
    )


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# ---------------------------------------------------------------------------------------------------
# Tests


def test_compaction_cuts_the_file_count_and_keeps_every_distinct_row(spark, settings, exchange, journal) -> None:
    trades = make_trades(3000, seed=1)
    copies = [copy_of(t, 30_000_000) for t in trades[::25]]  # 120 late copies
    batches = [trades[i : i + 250] for i in range(0, 3000, 250)]
    for batch_id, rows in enumerate(batches):
        write_bronze(settings, exchange, batch_id, rows[:125], rows[125:] + copies[batch_id * 10 : batch_id * 10 + 10])
    commit(settings, *range(len(batches)))
    bronze_before = tree(settings.lake_dir)
    checkpoint_before = tree(settings.checkpoint_dir)

    result = compact(spark, settings, exchange, journal)

    assert result.status == "switched", result.note
    expected = truth(trades, copies)
    manifest = assert_consistent(settings, exchange, expected)
    assert (result.files_before, result.rows_before) == (24, 3120)
    assert 1 < result.files_after < result.files_before
    assert result.rows_after == 3000 and result.duplicates_dropped == 120
    assert result.checksum == manifest.checksum == expected_checksum(spark, exchange, expected)
    assert manifest.covered_batch == 11 and manifest.input_files == 24
    # Bronze and the streaming checkpoint are untouched; only the curated area changed.
    assert tree(settings.lake_dir) == bronze_before
    assert tree(settings.checkpoint_dir) == checkpoint_before
    [row] = recorded(settings, exchange)
    assert row["status"] == "switched"
    assert (row["files_before"], row["rows_before"], row["files_after"], row["rows_after"]) == (
        24,
        3120,
        result.files_after,
        3000,
    )
    assert row["bytes_before"] == sum(
        r.bytes for r in catalog.read_batch_records(catalog.partition_dir(settings.lake_dir, exchange, DAY))
    )
    assert row["bytes_after"] == manifest.bytes and row["duplicates_dropped"] == 120
    assert row["checksum"] == manifest.checksum and row["covered_batch"] == 11

    # A second run with nothing new: skipped, nothing written (no Spark needed).
    def no_spark() -> Any:
        raise AssertionError("a skipped compaction must not start Spark")

    again = compaction.compact_day(no_spark, settings, exchange, DAY, "rerun", journal=journal)
    assert again.status == "skipped" and "nothing new" in again.note
    assert catalog.read_manifest(catalog.partition_dir(settings.curated_dir, exchange, DAY)) == manifest
    assert [r["status"] for r in recorded(settings, exchange)] == ["switched", "skipped"]


def test_late_and_uncommitted_batches(spark, settings, exchange, journal) -> None:
    """Uncommitted bronze is ignored; once committed it is late data and the day is recompacted with it."""
    first = make_trades(1200, seed=2)
    write_bronze(settings, exchange, 0, first[:600])
    write_bronze(settings, exchange, 1, first[600:])
    late = make_trades(300, seed=3, first_id=5000)
    # Copies of curated trades: one ingested later (dropped), one ingested earlier (replaces the curated copy).
    again = [copy_of(first[0], 60_000_000), copy_of(first[1], -1)]
    write_bronze(settings, exchange, 2, late + again)
    commit(settings, 0, 1)  # batch 2 written, not committed: the stream was killed before its commit

    result = compact(spark, settings, exchange, journal)
    assert result.status == "switched" and result.covered_batch == 1
    old = assert_consistent(settings, exchange, truth(first))

    commit(settings, 2)
    files = catalog.day_files(
        settings.lake_dir, exchange, DAY, curated=settings.curated_dir, checkpoint=catalog.lake_checkpoint(settings)
    )
    assert [r.batch_id for r in files.batches] == [2]  # late: above the covered batch

    result = compact(spark, settings, exchange, journal)
    assert result.status == "switched", result.note
    assert result.files_before == len(old.files) + 1 and result.rows_before == 1200 + 302
    assert result.duplicates_dropped == 2 and result.covered_batch == 2
    expected = truth(first, late, again)
    new = assert_consistent(settings, exchange, expected)  # the old files are gone
    assert new.token != old.token and new.checksum == expected_checksum(spark, exchange, expected)
    assert [r["status"] for r in recorded(settings, exchange)] == ["switched", "switched"]

    # The batch recompute reads the day through the catalog: curated files + late bronze.
    start = datetime(2026, 11, 20, tzinfo=UTC)
    where = {"curated": settings.curated_dir, "checkpoint": catalog.lake_checkpoint(settings)}
    write_bronze(settings, exchange, 3, make_trades(5, seed=4, first_id=9000))  # not committed: not read
    read = batch.read_lake_trades(spark, settings.lake_dir, exchange, None, start, start + timedelta(days=1), **where)
    assert read.count() == len(expected)
    commit(settings, 3)
    read = batch.read_lake_trades(spark, settings.lake_dir, exchange, None, start, start + timedelta(days=1), **where)
    assert read.count() == len(expected) + 5


def test_a_failed_check_switches_nothing(spark, settings, exchange, journal) -> None:
    trades = make_trades(400, seed=5)
    write_bronze(settings, exchange, 0, trades[:200])
    write_bronze(settings, exchange, 1, trades[200:])
    result = compact(spark, settings, exchange, journal)
    assert result.status == "switched"
    before = catalog.read_manifest(catalog.partition_dir(settings.curated_dir, exchange, DAY))
    # A late batch whose record claims more rows than its file holds (a file truncated or replaced).
    write_bronze(settings, exchange, 2, make_trades(10, seed=6, first_id=7000))
    record_path = catalog.batch_record_path(catalog.partition_dir(settings.lake_dir, exchange, DAY), 2)
    record_path.write_text(record_path.read_text().replace('"rows": 10', '"rows": 11'))

    result = compact(spark, settings, exchange, journal)

    assert result.status == "failed"
    assert "read 410 rows, but the records and the manifest name 411" in result.note
    assert catalog.read_manifest(catalog.partition_dir(settings.curated_dir, exchange, DAY)) == before
    assert_consistent(settings, exchange, truth(trades))  # no staging, no stray files
    rows = recorded(settings, exchange)
    assert [r["status"] for r in rows] == ["switched", "failed"] and "411" in rows[1]["note"]


class Killed(BaseException):
    """Stops a compaction the way kill -9 does: no except clause of the code under test sees it."""


def test_a_run_stopped_at_any_step_keeps_the_old_manifest_and_the_rerun_cleans_up(
    spark, settings, exchange, journal
) -> None:
    first = make_trades(800, seed=7)
    write_bronze(settings, exchange, 0, first[:400])
    write_bronze(settings, exchange, 1, first[400:])
    assert compact(spark, settings, exchange, journal).status == "switched"
    old = assert_consistent(settings, exchange, truth(first))
    late = make_trades(200, seed=8, first_id=4000)
    write_bronze(settings, exchange, 2, late)

    def stop_at(step: str) -> Any:
        def hook(reached: str) -> None:
            if reached == step:
                raise Killed(step)

        return hook

    for step in ("staged", "verified", "moved"):
        with pytest.raises(Killed):
            compact(spark, settings, exchange, journal, on_step=stop_at(step))
        assert assert_consistent_but_for_leftovers(settings, exchange, truth(first)) == old
    with pytest.raises(Killed):
        compact(spark, settings, exchange, journal, on_step=stop_at("switched"))
    # Switched but not cleaned: the new manifest is current; the old files lie beside it.
    partition = catalog.partition_dir(settings.curated_dir, exchange, DAY)
    assert catalog.read_manifest(partition) != old
    assert all((partition / f.path).exists() for f in old.files)

    rerun = compact(spark, settings, exchange, journal)
    assert rerun.status == "skipped", rerun.note
    assert any(name.endswith(old.files[0].path) for name in rerun.cleaned)
    assert_consistent(settings, exchange, truth(first, late))
    statuses = [(r["status"], r["note"] or "") for r in recorded(settings, exchange)]
    assert [s for s, _ in statuses] == ["switched", "running", "running", "running", "running", "skipped"]
    assert all(note.startswith("interrupted") for _, note in statuses[1:5])


def assert_consistent_but_for_leftovers(
    settings: Settings, exchange: str, expected: list[tuple[Any, ...]]
) -> catalog.Manifest:
    """What a reader sees after a run cut short: the old manifest, all its files, exactly the old rows."""
    partition = catalog.partition_dir(settings.curated_dir, exchange, DAY)
    manifest = catalog.read_manifest(partition)
    assert manifest is not None and catalog.manifest_problems(partition, manifest) == []
    assert curated_rows(settings, exchange) == expected
    return manifest


def test_a_busy_day_is_refused_and_recorded(settings, exchange, journal) -> None:
    write_bronze(settings, exchange, 0, make_trades(10, seed=9))
    with compaction.day_lock(settings.curated_dir, exchange, DAY):
        result = compaction.compact_day(lambda: None, settings, exchange, DAY, "busy", journal=journal)
    assert result.status == "failed" and "is running" in result.note
    [row] = recorded(settings, exchange)
    assert row["status"] == "failed" and "is running" in row["note"]


# ---------------------------------------------------------------------------------------------------
# The job, killed with -9 at random moments


def job_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "CANDLELAKE_LAKE_DIR": str(settings.lake_dir),
        "CANDLELAKE_CURATED_DIR": str(settings.curated_dir),
        "CANDLELAKE_CHECKPOINT_DIR": str(settings.checkpoint_dir),
        "CANDLELAKE_COMPACTION_TARGET_MB": "1",
        "JAVA_TOOL_OPTIONS": FAST_JVM,
    }


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (the JVM that pyspark started)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_and_kill(settings: Settings, exchange: str, log: Path, wait_for: str | None, delay_s: float) -> None:
    """Start the job; once its log shows `wait_for` (None: at once), wait `delay_s` and kill it with -9."""
    args = [sys.executable, str(ROOT / "jobs" / "compact_lake.py"), "--date", DAY.isoformat(), "--exchange", exchange]
    with log.open("w") as err:
        proc = subprocess.Popen(
            args, env=job_env(settings), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )
    try:
        if wait_for is not None:
            wait_until(
                lambda: wait_for in log.read_text() or proc.poll() is not None,
                timeout=240,
                interval=0.05,
                what=lambda: f"{wait_for!r} in the job's log:\n{log.read_text()[-3000:]}",
            )
        # Deliberate: the kill lands a random moment later, wherever the job then is.
        time.sleep(delay_s)
        below = descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # The JVM notices its driver is gone (its stdin closes) and exits; a rerun must not race it.
        wait_until(
            lambda: not any(Path(f"/proc/{pid}").exists() for pid in below),
            timeout=60,
            what=f"the killed job's processes {below} to exit",
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_the_job_killed_at_random_moments_then_rerun_ends_consistent(settings, exchange, tmp_path) -> None:
    trades = make_trades(4000, seed=10)
    copies = [copy_of(t, 5_000_000) for t in trades[::40]]
    for batch_id in range(8):
        write_bronze(
            settings,
            exchange,
            batch_id,
            trades[batch_id * 500 : (batch_id + 1) * 500] + copies[batch_id * 12 : (batch_id + 1) * 12],
        )
    commit(settings, *range(8))
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    # One kill anywhere in the job's first seconds (starting, cleaning up, planning, building Spark), one
    # once it writes (writing, checking, moving, switching, or done already). The steps in between are
    # stopped one by one in test_a_run_stopped_at_any_step_...; each run here costs a JVM start.
    moments = [(None, rng.uniform(1.0, 20.0)), ("writing", rng.uniform(0.0, 10.0))]
    for n, (wait_for, delay) in enumerate(moments):
        run_and_kill(settings, exchange, tmp_path / f"kill-{n}.log", wait_for, delay)

    done = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "compact_lake.py"), "--date", DAY.isoformat()],
        env=job_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (seed, moments, done.stderr[-3000:])
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"] and [c["exchange"] for c in summary["compactions"]] == [exchange]
    assert summary["compactions"][0]["status"] in ("switched", "skipped")
    assert_consistent(settings, exchange, truth(trades, copies))
    rows = recorded(settings, exchange)
    assert rows and rows[-1]["status"] in ("switched", "skipped")
    assert all(r["note"].startswith("interrupted") for r in rows if r["status"] == "running"), rows
    assert sum(r["status"] == "switched" for r in rows) >= 1, (seed, rows)


def test_the_job_says_what_is_wrong_with_its_arguments(settings) -> None:
    job = [sys.executable, str(ROOT / "jobs" / "compact_lake.py")]
    bad_date = subprocess.run(
        [*job, "--date", "2026-13-01"], env=job_env(settings), capture_output=True, text=True, check=False
    )
    assert bad_date.returncode == 2 and "not a date (YYYY-MM-DD): '2026-13-01'" in bad_date.stderr
    bad_exchange = subprocess.run(
        [*job, "--date", "2026-11-20", "--exchange", "../x"],
        env=job_env(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad_exchange.returncode == 2 and "not an exchange name" in bad_exchange.stderr
    assert "Traceback" not in bad_date.stderr + bad_exchange.stderr
    nothing = subprocess.run(
        [*job, "--date", "2026-11-20"], env=job_env(settings), capture_output=True, text=True, check=False
    )
    assert nothing.returncode == 0 and '"compactions": []' in nothing.stdout
