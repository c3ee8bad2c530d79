"""Idempotent micro-batch writes into the Parquet lake, readable by any Parquet reader.

Spark's own file sink keeps the list of committed files in `_spark_metadata`; only Spark reads that
list, so after a kill -9 other readers (pyarrow, DuckDB, the compaction job) also see the files of
the batch that was cut short, and its replay then writes the same trades again under new names.
Rewriting the files (compaction) breaks the list for Spark as well.

Here each micro-batch is written to a staging folder and its files are then renamed into the table
under names fixed by the batch id: `<table>/<partition dirs>/batch-<batch id>-<n>.parquet`. A
replayed batch (same id, same rows: Spark re-runs it with the same offsets and state) renames onto
the same names, so every file exists once; a batch cut short between renames is completed by its
replay. Rename is atomic within one file system, so the table and its staging folder must share one
(both live under the lake folder). Names starting with `_` are skipped by Spark and pyarrow readers.

Each partition folder a batch wrote to also gets `_batches/<batch id>.json` (candlelake.lake.catalog),
written last and atomically: the files the batch placed there with their rows and bytes. Readers take
a day's files from these records of committed batches instead of listing the folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from candlelake.lake import catalog

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

STAGING_DIR = "_staging"
SPARK_FILE_SINK_LOG = "_spark_metadata"


def batch_file_name(batch_id: int, index: int) -> str:
    return f"batch-{batch_id:012d}-{index:04d}.parquet"


def write_batch(df: DataFrame, batch_id: int, table: Path, partition_by: Sequence[str]) -> int:
    """Write one micro-batch into `table` idempotently; return the number of files placed."""
    staging = table.parent / STAGING_DIR / table.name / f"batch={batch_id}"
    shutil.rmtree(staging, ignore_errors=True)  # left by an attempt that was cut short
    df.write.mode("overwrite").partitionBy(*partition_by).parquet(str(staging))
    return publish(staging, table, batch_id)


def publish(staging: Path, table: Path, batch_id: int) -> int:
    """Move a staged batch's Parquet files into `table` under their batch-id names; drop the staging."""
    placed = 0
    by_folder: dict[Path, list[Path]] = {}
    for path in staging.rglob("*.parquet"):
        by_folder.setdefault(path.parent.relative_to(staging), []).append(path)
    for folder, files in sorted(by_folder.items()):
        target = table / folder
        target.mkdir(parents=True, exist_ok=True)
        names = []
        for index, path in enumerate(sorted(files)):
            names.append(target / batch_file_name(batch_id, index))
            os.replace(path, names[-1])
            placed += 1
        # An earlier attempt of this batch that wrote more files must not leave the extra ones behind.
        for stale in target.glob(f"batch-{batch_id:012d}-*.parquet"):
            if int(stale.stem.rsplit("-", 1)[1]) >= len(files):
                stale.unlink()
        # Last, once the files are in place: readers take a batch's files from this record only (and
        # only once Spark committed the batch, which it does after this function returns).
        catalog.write_batch_record(target, batch_id, names)
    shutil.rmtree(staging, ignore_errors=True)
    return placed


def retire_file_sink_log(table: Path) -> Path | None:
    """Move aside a `_spark_metadata` left by Spark's file sink, which would hide our files from Spark.

    Spark readers trust that log over the folder listing, so files written without it would be invisible.
    Returns the new name of the log, or None when there was none.
    """
    sink_log = table / SPARK_FILE_SINK_LOG
    if not sink_log.is_dir():
        return None
    retired = table / f"{STAGING_DIR}{SPARK_FILE_SINK_LOG}.retired-{int(time.time())}"
    sink_log.rename(retired)
    log.warning("moved Spark's file-sink log %s aside to %s: the lake is now written batch by batch", sink_log, retired)
    return retired
