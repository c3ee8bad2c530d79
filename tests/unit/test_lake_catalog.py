"""The lake catalog (committed batches, manifests, a day's files), the sink's batch records, cleanup and expiry.

Small Parquet files written with pyarrow; no Spark. The folders look like the stream's and the
compaction's (docs/orchestration.md, "The lake").
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from candlelake.config import Settings, load_settings
from candlelake.lake import catalog
from candlelake.nightly import compaction
from candlelake.stream import parquet_lake

pytestmark = pytest.mark.unit

DAY = date(2026, 11, 20)


def parquet(path: Path, rows: int, first_id: int = 0) -> Path:
    """A small trade file (the columns matter only to Spark; here rows and bytes do)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"symbol": ["BTCUSDT"] * rows, "trade_id": list(range(first_id, first_id + rows))})
    pq.write_table(table, path)
    return path


def bronze(lake: Path, batch_id: int, rows: list[int], exchange: str = "binance", day: date = DAY) -> list[Path]:
    """Files of one batch in the stream's names plus its record, as parquet_lake.publish leaves them."""
    folder = catalog.partition_dir(lake, exchange, day)
    files = [
        parquet(folder / parquet_lake.batch_file_name(batch_id, n), r, 1000 * batch_id) for n, r in enumerate(rows)
    ]
    catalog.write_batch_record(folder, batch_id, files)
    return files


def commit(checkpoint: Path, *batch_ids: int) -> None:
    (checkpoint / "commits").mkdir(parents=True, exist_ok=True)
    for batch_id in batch_ids:
        (checkpoint / "commits" / str(batch_id)).write_text("v1\n{}")


def curate(
    curated: Path, covered: int, rows: list[int], exchange: str = "binance", day: date = DAY
) -> catalog.Manifest:
    """Curated files and their manifest, as a switched compaction leaves them."""
    folder = catalog.partition_dir(curated, exchange, day)
    entries = tuple(catalog.parquet_entry(parquet(folder / f"part-t1-{n:05d}.parquet", r)) for n, r in enumerate(rows))
    manifest = catalog.Manifest(
        exchange=exchange,
        trade_date=day.isoformat(),
        files=entries,
        rows=sum(rows),
        bytes=sum(e.bytes for e in entries),
        checksum=f"{sum(rows)}:1",
        covered_batch=covered,
        token="t1",
        run_id="run-1",
        written_at="2026-11-21T00:30:00+00:00",
        input_files=3,
        input_rows=sum(rows),
        input_bytes=1,
        duplicates_dropped=0,
    )
    catalog.write_manifest(folder, manifest)
    return manifest


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    base = load_settings({})
    return dataclasses.replace(
        base,
        lake_dir=tmp_path / "lake",
        curated_dir=tmp_path / "curated",
        checkpoint_dir=tmp_path / "checkpoints",
        bronze_retention_days=7,
    )


# ---------------------------------------------------------------------------------------------------
# Batch records and the commit log


def test_a_batch_record_lists_the_files_with_rows_from_the_footer_and_bytes(tmp_path: Path) -> None:
    files = bronze(tmp_path, 7, [3, 5])
    [record] = catalog.read_batch_records(files[0].parent)
    assert record.batch_id == 7
    assert [(f.path, f.rows, f.bytes) for f in record.files] == [
        (p.name, rows, p.stat().st_size) for p, rows in zip(files, [3, 5], strict=True)
    ]
    assert (record.rows, record.bytes) == (8, sum(p.stat().st_size for p in files))
    assert sorted(p.name for p in (files[0].parent / catalog.BATCHES_DIR).iterdir()) == ["000000000007.json"]


def test_publish_records_the_files_it_placed_and_a_replay_replaces_the_record(tmp_path: Path) -> None:
    table = tmp_path / "lake" / "trades"
    folder = catalog.partition_dir(tmp_path / "lake", "binance", DAY)
    staging = tmp_path / "lake" / "_staging" / "trades" / "batch=4"
    for n in range(3):
        parquet(staging / "exchange=binance" / f"trade_date={DAY}" / f"part-{n}.parquet", 2 + n)
    assert parquet_lake.publish(staging, table, 4) == 3
    [record] = catalog.read_batch_records(folder)
    assert [(f.path, f.rows) for f in record.files] == [(parquet_lake.batch_file_name(4, n), 2 + n) for n in range(3)]
    # The replay after a crash wrote one file: the record names only what is there now.
    parquet(staging / "exchange=binance" / f"trade_date={DAY}" / "part-0.parquet", 9)
    parquet_lake.publish(staging, table, 4)
    [record] = catalog.read_batch_records(folder)
    assert [(f.path, f.rows) for f in record.files] == [(parquet_lake.batch_file_name(4, 0), 9)]
    assert sorted(p.name for p in folder.glob("*.parquet")) == [parquet_lake.batch_file_name(4, 0)]


def test_commits_without_a_checkpoint_folder_count_every_recorded_batch(tmp_path: Path) -> None:
    commits = catalog.read_commits(tmp_path / "never-ran")
    assert not commits.exists and commits.committed(0) and commits.committed(10**9)
    assert catalog.read_commits(None).committed(5)


def test_commits_take_the_highest_committed_id_and_ignore_other_files(tmp_path: Path) -> None:
    checkpoint = tmp_path / "cp"
    (checkpoint / "offsets").mkdir(parents=True)
    assert catalog.read_commits(checkpoint).last_batch is None  # started, nothing committed yet
    assert not catalog.read_commits(checkpoint).committed(0)
    commit(checkpoint, 7, 8, 9)  # Spark purged 0..6
    (checkpoint / "commits" / ".10.tmp").write_text("")
    (checkpoint / "commits" / "10.tmp").write_text("")
    commits = catalog.read_commits(checkpoint)
    assert commits.last_batch == 9
    assert commits.committed(0) and commits.committed(9) and not commits.committed(10)


def test_day_files_take_only_committed_recorded_batches(tmp_path: Path) -> None:
    lake, checkpoint = tmp_path / "lake", tmp_path / "cp"
    b1, b2 = bronze(lake, 1, [4]), bronze(lake, 2, [5, 6])
    bronze(lake, 3, [7])  # written, not committed (the stream was killed before its commit)
    parquet(b1[0].parent / parquet_lake.batch_file_name(9, 0), 100)  # no record: a batch cut short
    commit(checkpoint, 0, 1, 2)
    files = catalog.day_files(lake, "binance", DAY, checkpoint=checkpoint)
    assert [r.batch_id for r in files.batches] == [1, 2]
    assert files.files == b1 + b2
    assert files.rows == 15
    assert files.covers == 2
    # Committed later: the same call now includes it.
    commit(checkpoint, 3)
    assert [r.batch_id for r in catalog.day_files(lake, "binance", DAY, checkpoint=checkpoint).batches] == [1, 2, 3]
    # Without a checkpoint folder every recorded batch counts.
    assert [r.batch_id for r in catalog.day_files(lake, "binance", DAY).batches] == [1, 2, 3]


def test_day_files_of_a_missing_partition_are_empty(tmp_path: Path) -> None:
    files = catalog.day_files(tmp_path / "lake", "binance", DAY, curated=tmp_path / "curated")
    assert files.files == [] and files.rows == 0 and files.manifest is None and files.covers == -1


def test_a_manifest_replaces_the_batches_it_covers_and_late_batches_come_on_top(tmp_path: Path) -> None:
    lake, curated, checkpoint = tmp_path / "lake", tmp_path / "curated", tmp_path / "cp"
    for batch_id in (1, 2, 5):
        bronze(lake, batch_id, [3])
    late = bronze(lake, 8, [2])
    bronze(lake, 9, [1])  # not committed
    commit(checkpoint, 8)
    manifest = curate(curated, covered=6, rows=[4, 5])
    files = catalog.day_files(lake, "binance", DAY, curated=curated, checkpoint=checkpoint)
    assert files.manifest == manifest
    assert [r.batch_id for r in files.batches] == [8]
    assert (
        files.files
        == [catalog.partition_dir(curated, "binance", DAY) / f"part-t1-0000{n}.parquet" for n in (0, 1)] + late
    )
    assert (files.rows, files.bytes) == (11, manifest.bytes + files.batches[0].bytes)
    assert files.covers == 8
    # Without the curated area the reader sees bronze only (every committed batch).
    assert [r.batch_id for r in catalog.day_files(lake, "binance", DAY, checkpoint=checkpoint).batches] == [1, 2, 5, 8]


def test_covered_batch_is_the_last_commit_even_when_the_day_had_no_batch_that_late(tmp_path: Path) -> None:
    lake, checkpoint = tmp_path / "lake", tmp_path / "cp"
    bronze(lake, 3, [1])
    commit(checkpoint, 40)  # other days' batches went on
    assert catalog.day_files(lake, "binance", DAY, checkpoint=checkpoint).covers == 40


def test_manifest_round_trips_and_problems_name_missing_or_changed_files(tmp_path: Path) -> None:
    manifest = curate(tmp_path, covered=3, rows=[2, 3])
    folder = catalog.partition_dir(tmp_path, "binance", DAY)
    assert catalog.read_manifest(folder) == manifest
    assert json.loads((folder / catalog.MANIFEST_NAME).read_text())["covered_batch"] == 3
    assert not list(folder.glob("*.tmp"))
    assert catalog.manifest_problems(folder, manifest) == []
    (folder / "part-t1-00000.parquet").unlink()
    with (folder / "part-t1-00001.parquet").open("ab") as f:
        f.write(b"x")
    problems = catalog.manifest_problems(folder, manifest)
    assert len(problems) == 2 and "part-t1-00000.parquet is missing" in problems[0] and "bytes" in problems[1]
    assert catalog.read_manifest(tmp_path / "nowhere") is None


def test_an_unreadable_record_or_manifest_is_a_clear_error(tmp_path: Path) -> None:
    [path] = bronze(tmp_path, 1, [1])
    (path.parent / catalog.BATCHES_DIR / "000000000001.json").write_text("{")
    with pytest.raises(catalog.CatalogError, match=r"000000000001\.json cannot be read"):
        catalog.read_batch_records(path.parent)
    folder = catalog.partition_dir(tmp_path / "c", "binance", DAY)
    folder.mkdir(parents=True)
    (folder / catalog.MANIFEST_NAME).write_text("[]")
    with pytest.raises(catalog.CatalogError, match=r"_manifest\.json cannot be read"):
        catalog.read_manifest(folder)


def test_adopt_unrecorded_records_only_committed_batches_without_a_record(tmp_path: Path) -> None:
    folder = catalog.partition_dir(tmp_path, "binance", DAY)
    for batch_id in (1, 2, 3):
        parquet(folder / parquet_lake.batch_file_name(batch_id, 0), batch_id)
    parquet(folder / parquet_lake.batch_file_name(2, 1), 10)
    catalog.write_batch_record(folder, 1, [folder / parquet_lake.batch_file_name(1, 0)])
    checkpoint = tmp_path / "cp"
    commit(checkpoint, 2)
    adopted = catalog.adopt_unrecorded(folder, catalog.read_commits(checkpoint))
    assert [(r.batch_id, r.rows) for r in adopted] == [(2, 12)]
    assert [r.batch_id for r in catalog.read_batch_records(folder)] == [1, 2]


def test_exchanges_and_partitions_come_from_folder_names(tmp_path: Path) -> None:
    bronze(tmp_path, 1, [1], exchange="binance")
    bronze(tmp_path, 1, [1], exchange="coinbase", day=date(2026, 11, 21))
    bronze(tmp_path, 2, [1], exchange="coinbase")
    assert catalog.exchanges_with_bronze(tmp_path, DAY) == ["binance", "coinbase"]
    assert catalog.exchanges_with_bronze(tmp_path, date(2026, 11, 21)) == ["coinbase"]
    assert [(e, d) for e, d, _ in catalog.bronze_partitions(tmp_path)] == [
        ("binance", DAY),
        ("coinbase", DAY),
        ("coinbase", date(2026, 11, 21)),
    ]


# ---------------------------------------------------------------------------------------------------
# Cleanup and the lock (compaction's file logic)


def test_cleanup_removes_staging_and_files_no_manifest_names_only(tmp_path: Path) -> None:
    curate(tmp_path, covered=1, rows=[2])
    folder = catalog.partition_dir(tmp_path, "binance", DAY)
    orphan = parquet(folder / "part-t2-00000.parquet", 1)  # moved in by a run killed before its switch
    (folder / "_manifest.json.123.tmp").write_text("{")
    (folder / "notes.txt").write_text("someone's")
    staging = compaction.staging_dir(tmp_path, "binance", DAY) / "t2"
    parquet(staging / "part-0.parquet", 1)
    removed = compaction.cleanup(tmp_path, "binance", DAY)
    assert sorted(removed) == sorted(
        [
            str(compaction.staging_dir(tmp_path, "binance", DAY).relative_to(tmp_path)),
            str(orphan.relative_to(tmp_path)),
            str((folder / "_manifest.json.123.tmp").relative_to(tmp_path)),
        ]
    )
    assert sorted(p.name for p in folder.iterdir()) == ["_manifest.json", "notes.txt", "part-t1-00000.parquet"]
    assert not (tmp_path / compaction.STAGING_DIR).exists()  # no empty staging folders left either
    assert compaction.cleanup(tmp_path, "binance", DAY) == []


def test_the_day_lock_excludes_a_second_holder_and_dies_with_its_holder(tmp_path: Path) -> None:
    with compaction.day_lock(tmp_path, "binance", DAY) as path:
        assert path.read_text().strip() == str(os.getpid())
        busy = pytest.raises(compaction.CompactionBusy, match=rf"pid {os.getpid()}")
        with busy, compaction.day_lock(tmp_path, "binance", DAY, wait_s=0.3):
            pass
        with compaction.day_lock(tmp_path, "binance", date(2026, 11, 21)):
            pass  # another day is free
    with compaction.day_lock(tmp_path, "binance", DAY):
        pass


# ---------------------------------------------------------------------------------------------------
# Expiry of bronze


def test_expiry_deletes_only_old_partitions_whose_every_batch_is_covered(settings: Settings) -> None:
    lake, curated = settings.lake_dir, settings.curated_dir
    old, older, recent = date(2026, 11, 10), date(2026, 11, 9), date(2026, 11, 25)
    commit(settings.checkpoint_dir / "lake", 20)
    for day in (old, older, recent):
        bronze(lake, 1, [2, 3], day=day)
        bronze(lake, 4, [1], day=day)
        curate(curated, covered=4, rows=[6], day=day)
    bronze(lake, 12, [1], day=older)  # a late batch the curated files do not hold yet
    done = compaction.expire_bronze(settings, today=date(2026, 12, 1))
    assert [(e.trade_date, e.action) for e in done] == [(older.isoformat(), "kept"), (old.isoformat(), "deleted")]
    assert "batches [12] are not in the curated files" in done[0].reason
    assert done[1].files == 3 and done[1].bytes > 0
    assert not catalog.partition_dir(lake, "binance", old).exists()
    assert catalog.partition_dir(lake, "binance", older).is_dir()
    assert catalog.partition_dir(lake, "binance", recent).is_dir()  # inside the retention
    assert catalog.read_manifest(catalog.partition_dir(curated, "binance", old)) is not None  # curated stays


def test_expiry_keeps_what_it_cannot_prove_is_curated(settings: Settings) -> None:
    lake, curated, today = settings.lake_dir, settings.curated_dir, date(2026, 12, 1)
    days = [date(2026, 11, d) for d in (1, 2, 3, 4, 5)]
    for day in days:
        bronze(lake, 1, [2], day=day)
    # 1: never compacted. 2: a file no record names. 3: a batch not committed. 4: curated file missing.
    # 5: compaction running (locked).
    for day in days[1:]:
        curate(curated, covered=5, rows=[2], day=day)
    parquet(catalog.partition_dir(lake, "binance", days[1]) / "stray.parquet", 1)
    bronze(lake, 3, [1], day=days[2])
    (catalog.partition_dir(curated, "binance", days[3]) / "part-t1-00000.parquet").unlink()
    commit(settings.checkpoint_dir / "lake", 2)
    with compaction.day_lock(curated, "binance", days[4]):
        done = compaction.expire_bronze(settings, today=today)
    assert [e.action for e in done] == ["kept"] * 5
    reasons = [e.reason for e in done]
    assert "no curated manifest" in reasons[0]
    assert "stray.parquet" in reasons[1]
    assert "batches [3]" in reasons[2]
    assert "missing" in reasons[3]
    assert "running" in reasons[4]
    assert all(catalog.partition_dir(lake, "binance", day).is_dir() for day in days)
    # Retention 0 keeps bronze forever.
    assert compaction.expire_bronze(dataclasses.replace(settings, bronze_retention_days=0), today=today) == []
