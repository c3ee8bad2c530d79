"""Which Parquet files hold a day's trades, from metadata only: batch records, Spark's commit log, manifests.

Layout (docs/orchestration.md, "The lake"):

    <lake>/trades/exchange=E/trade_date=D/batch-<id>-<n>.parquet       bronze: the stream's files
    <lake>/trades/exchange=E/trade_date=D/_batches/<id:012d>.json      batch record: files, rows, bytes
    <checkpoints>/lake/commits/<id>                                     Spark's commit log (read only)
    <curated>/trades/exchange=E/trade_date=D/part-<token>-<n>.parquet  curated: compacted, deduplicated
    <curated>/trades/exchange=E/trade_date=D/_manifest.json            the current curated files

Why not list the folders: a micro-batch cut short by a crash leaves files that its replay completes or
replaces, and a compaction cut short leaves files no manifest names. Listing would read both. Here a
bronze batch counts once Spark has committed it (`commits/<id>` exists: the foreachBatch that wrote
the files and the record returned), and curated files count once a manifest names them.

A batch record is written (atomically, after its files are in place) by
candlelake.stream.parquet_lake.publish; Spark writes `commits/<id>` only after that returns, so every
committed batch's records are complete. Without a checkpoint folder no stream ever ran on this lake
(tests, benchmarks, imported files): every recorded batch counts.

Nothing here imports Spark at module level; `read_trades` imports it when called.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from candlelake.config import Settings

TRADES_TABLE = "trades"
BATCHES_DIR = "_batches"
MANIFEST_NAME = "_manifest.json"
# The lake query's checkpoint folder under CANDLELAKE_CHECKPOINT_DIR (jobs/stream_candles.py).
LAKE_CHECKPOINT = "lake"
MANIFEST_VERSION = 1

_LISTING_THRESHOLD = "spark.sql.sources.parallelPartitionDiscovery.threshold"
_BATCH_RECORD = re.compile(r"^(\d+)\.json$")
_BRONZE_FILE = re.compile(r"^batch-(\d+)-(\d+)\.parquet$")


class CatalogError(RuntimeError):
    """A record or manifest cannot be read; the message names the file."""


# ---------------------------------------------------------------------------------------------------
# Paths


def partition_dir(root: Path, exchange: str, day: date) -> Path:
    """`<root>/trades/exchange=E/trade_date=D`, the same under the lake (bronze) and the curated area."""
    return root / TRADES_TABLE / f"exchange={exchange}" / f"trade_date={day.isoformat()}"


def lake_checkpoint(settings: Settings) -> Path:
    """The lake query's checkpoint, whose `commits/` log says which bronze batches are committed."""
    return settings.checkpoint_dir / LAKE_CHECKPOINT


def exchanges_with_bronze(lake: Path, day: date) -> list[str]:
    """Exchanges with a bronze partition folder for `day` (folder names are metadata, not data files)."""
    table = lake / TRADES_TABLE
    if not table.is_dir():
        return []
    found = []
    for folder in table.glob("exchange=*"):
        if (folder / f"trade_date={day.isoformat()}").is_dir():
            found.append(folder.name.partition("=")[2])
    return sorted(found)


def bronze_partitions(lake: Path) -> Iterator[tuple[str, date, Path]]:
    """(exchange, day, folder) of every bronze partition, oldest day first within an exchange."""
    table = lake / TRADES_TABLE
    if not table.is_dir():
        return
    for exchange_dir in sorted(table.glob("exchange=*")):
        for day_dir in sorted(exchange_dir.glob("trade_date=*")):
            try:
                day = date.fromisoformat(day_dir.name.partition("=")[2])
            except ValueError:
                continue  # not a partition of ours
            yield exchange_dir.name.partition("=")[2], day, day_dir


# ---------------------------------------------------------------------------------------------------
# Files, batch records and the commit log


@dataclass(frozen=True)
class FileEntry:
    """One Parquet file, by its path relative to its partition folder (today: its file name)."""

    path: str
    rows: int
    bytes: int


def parquet_entry(path: Path) -> FileEntry:
    """A file's entry: rows from its Parquet footer (no data read), bytes from the file system."""
    import pyarrow.parquet as pq

    return FileEntry(path.name, int(pq.ParquetFile(path).metadata.num_rows), path.stat().st_size)


def _entries(raw: Sequence[dict[str, Any]]) -> tuple[FileEntry, ...]:
    return tuple(FileEntry(str(f["path"]), int(f["rows"]), int(f["bytes"])) for f in raw)


@dataclass(frozen=True)
class BatchRecord:
    """The files one micro-batch placed in one bronze partition."""

    batch_id: int
    files: tuple[FileEntry, ...]
    written_at: str

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)


def batch_record_path(partition: Path, batch_id: int) -> Path:
    return partition / BATCHES_DIR / f"{batch_id:012d}.json"


def _write_json_atomically(path: Path, data: dict[str, Any], sync: bool = False) -> None:
    """Write beside `path`, then rename over it: a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        f.write(json.dumps(data, indent=1) + "\n")
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_batch_record(partition: Path, batch_id: int, files: Sequence[Path]) -> BatchRecord:
    """Record the files batch `batch_id` placed in `partition` (replacing a record of an earlier attempt)."""
    record = BatchRecord(
        batch_id,
        tuple(parquet_entry(p) for p in sorted(files)),
        datetime.now(UTC).isoformat(timespec="milliseconds"),
    )
    path = batch_record_path(partition, batch_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"batch_id": batch_id, "files": [asdict(f) for f in record.files], "written_at": record.written_at}
    _write_json_atomically(path, data)
    return record


def read_batch_records(partition: Path) -> list[BatchRecord]:
    """Every batch record of a bronze partition (committed or not), by batch id."""
    folder = partition / BATCHES_DIR
    if not folder.is_dir():
        return []
    records = []
    for path in folder.iterdir():
        match = _BATCH_RECORD.match(path.name)
        if not match:
            continue  # a temporary file of a write that was cut short
        try:
            data = json.loads(path.read_text())
            records.append(BatchRecord(int(data["batch_id"]), _entries(data["files"]), str(data["written_at"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise CatalogError(
                f"the batch record {path} cannot be read ({exc}); it is written atomically, so something "
                f"else changed it: restore it or move the partition aside"
            ) from exc
        if records[-1].batch_id != int(match.group(1)):
            raise CatalogError(f"the batch record {path} names batch {records[-1].batch_id}, not its file name's")
    return sorted(records, key=lambda r: r.batch_id)


@dataclass(frozen=True)
class Commits:
    """What the lake query's checkpoint says is committed."""

    checkpoint: Path | None
    exists: bool  # False: no stream ever ran on this lake, every recorded batch counts
    last_batch: int | None  # highest committed batch id; None: none yet

    def committed(self, batch_id: int) -> bool:
        if not self.exists:
            return True
        return self.last_batch is not None and batch_id <= self.last_batch


def read_commits(checkpoint: Path | None) -> Commits:
    """The highest batch id in `<checkpoint>/commits/` (Spark's commit log; read, never written).

    Batches commit in order, so every id up to the highest is committed even after Spark purged the
    log's older entries. A checkpoint folder without `commits/` has committed nothing.
    """
    if checkpoint is None or not checkpoint.is_dir():
        return Commits(checkpoint, False, None)
    commits = checkpoint / "commits"
    ids = [int(p.name) for p in commits.iterdir() if p.name.isdigit()] if commits.is_dir() else []
    return Commits(checkpoint, True, max(ids) if ids else None)


def adopt_unrecorded(partition: Path, commits: Commits) -> list[BatchRecord]:
    """Write records for committed `batch-<id>-<n>.parquet` files of a lake written before batch records.

    A one-off migration (jobs/compact_lake.py --adopt-unrecorded): it lists the folder, which readers
    never do, and only adopts batches that are committed and have no record yet.
    """
    if not partition.is_dir():
        return []
    recorded = {r.batch_id for r in read_batch_records(partition)}
    by_batch: dict[int, list[Path]] = {}
    for path in partition.glob("batch-*.parquet"):
        match = _BRONZE_FILE.match(path.name)
        if match:
            by_batch.setdefault(int(match.group(1)), []).append(path)
    return [
        write_batch_record(partition, batch_id, files)
        for batch_id, files in sorted(by_batch.items())
        if batch_id not in recorded and commits.committed(batch_id)
    ]


# ---------------------------------------------------------------------------------------------------
# Curated manifests


@dataclass(frozen=True)
class Manifest:
    """The current curated files of one exchange's day and what they were made from."""

    exchange: str
    trade_date: str
    files: tuple[FileEntry, ...]
    rows: int
    bytes: int
    checksum: str  # "rows:sum of xxhash64 of every row" (candlelake.nightly.compaction.checksum)
    covered_batch: int  # every committed bronze batch of the day up to this id is in the files
    token: str  # the compaction that wrote the files (their names carry it)
    run_id: str
    written_at: str
    input_files: int
    input_rows: int
    input_bytes: int
    duplicates_dropped: int
    version: int = MANIFEST_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes_per_row(self) -> float:
        return self.bytes / self.rows if self.rows else 0.0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = [asdict(f) for f in self.files]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["files"] = _entries(data["files"])
        return cls(**data)


def manifest_path(partition: Path) -> Path:
    return partition / MANIFEST_NAME


def read_manifest(partition: Path) -> Manifest | None:
    """The partition's current manifest, None when it has none (never compacted)."""
    path = manifest_path(partition)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return Manifest.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise CatalogError(
            f"the curated manifest {path} cannot be read ({exc}); it is replaced atomically, so something "
            f"else changed it: move it aside and compact the day again"
        ) from exc


def write_manifest(partition: Path, manifest: Manifest) -> None:
    """Make `manifest` current: one atomic rename, synced to disk (the switch)."""
    _write_json_atomically(manifest_path(partition), manifest.as_json(), sync=True)


def manifest_problems(partition: Path, manifest: Manifest) -> list[str]:
    """What is wrong with a manifest's files on disk (missing, or not the size recorded); empty when valid."""
    problems = []
    for entry in manifest.files:
        path = partition / entry.path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            problems.append(f"{entry.path} is missing")
            continue
        if size != entry.bytes:
            problems.append(f"{entry.path} has {size} bytes, the manifest says {entry.bytes}")
    if sum(f.rows for f in manifest.files) != manifest.rows:
        problems.append(f"the files' rows do not add up to the manifest's {manifest.rows}")
    return problems


# ---------------------------------------------------------------------------------------------------
# A day's trades


@dataclass(frozen=True)
class DayFiles:
    """The files that hold one exchange's UTC day: curated files + committed bronze above the manifest."""

    exchange: str
    day: date
    bronze_dir: Path
    curated_dir: Path | None
    commits: Commits
    manifest: Manifest | None = field(repr=False)
    batches: tuple[BatchRecord, ...] = field(repr=False)  # committed bronze batches the manifest lacks

    @property
    def curated_files(self) -> list[Path]:
        if self.manifest is None or self.curated_dir is None:
            return []
        return [self.curated_dir / f.path for f in self.manifest.files]

    @property
    def bronze_files(self) -> list[Path]:
        return [self.bronze_dir / f.path for r in self.batches for f in r.files]

    @property
    def files(self) -> list[Path]:
        return self.curated_files + self.bronze_files

    @property
    def rows(self) -> int:
        return (self.manifest.rows if self.manifest else 0) + sum(r.rows for r in self.batches)

    @property
    def bytes(self) -> int:
        return (self.manifest.bytes if self.manifest else 0) + sum(r.bytes for r in self.batches)

    @property
    def covers(self) -> int:
        """The covered_batch of a compaction of exactly these files (-1: no batch at all).

        The highest committed batch of the whole lake when there is a checkpoint: any batch that can
        still add to this day comes later, with a higher id (the commit log was read before the records).
        """
        ids = [self.manifest.covered_batch if self.manifest else -1, *(r.batch_id for r in self.batches)]
        if self.commits.exists and self.commits.last_batch is not None:
            ids.append(self.commits.last_batch)
        return max(ids)


def day_files(
    lake: Path, exchange: str, day: date, *, curated: Path | None = None, checkpoint: Path | None = None
) -> DayFiles:
    """The files of `exchange`'s `day`: the curated manifest's (when `curated` is given and has one) plus
    the committed bronze batches above its covered_batch (`checkpoint`: the lake query's; None: no stream).
    """
    # The commit log first: a batch that commits after this read may already have its record when the
    # records are read below; it is then left out (not committed yet) and comes in as a late batch.
    commits = read_commits(checkpoint)
    curated_dir = partition_dir(curated, exchange, day) if curated is not None else None
    manifest = read_manifest(curated_dir) if curated_dir is not None else None
    covered = manifest.covered_batch if manifest else -1
    bronze_dir = partition_dir(lake, exchange, day)
    batches = tuple(r for r in read_batch_records(bronze_dir) if r.batch_id > covered and commits.committed(r.batch_id))
    return DayFiles(exchange, day, bronze_dir, curated_dir, commits, manifest, batches)


def read_trades(spark: SparkSession, files: Sequence[Path], exchange: str) -> DataFrame:
    """The trades in `files` (bronze or curated) as TRADE_SCHEMA columns, `exchange` from the partition.

    Reads exactly the files given (no partition discovery, no listing). Columns the files carry beyond
    the trade (the stream's Kafka metadata) are not read.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructField, StructType

    from candlelake.spark import transforms

    file_schema = StructType(
        [StructField(f.name, f.dataType, True) for f in transforms.TRADE_SCHEMA.fields if f.name != "exchange"]
    )
    if files:
        # Past this many paths Spark lists them in a distributed job, one task per path: 3,000 bronze
        # files took 109 s that way on two cores, 5 s listed by the driver. The paths are exact files.
        saved = spark.conf.get(_LISTING_THRESHOLD, None)
        spark.conf.set(_LISTING_THRESHOLD, str(max(32, len(files) + 1)))
        try:
            raw = spark.read.schema(file_schema).parquet(*(str(p) for p in files))
        finally:
            if saved is None:
                spark.conf.unset(_LISTING_THRESHOLD)
            else:
                spark.conf.set(_LISTING_THRESHOLD, saved)
    else:
        raw = spark.createDataFrame([], file_schema)
    return raw.select(F.lit(exchange).alias("exchange"), *file_schema.fieldNames())
