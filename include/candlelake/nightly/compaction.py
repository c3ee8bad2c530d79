"""Nightly compaction of one exchange's UTC day into the curated area, and expiry of compacted bronze.

The stream writes one small Parquet file per partition per micro-batch (bronze: 8,640 a day at a
10-second trigger). Compaction rewrites a day into a few files of about CANDLELAKE_COMPACTION_TARGET_MB,
deduplicated on (exchange, symbol, trade_id) (the earliest ingested copy, candlelake.spark.transforms.dedupe_trades)
and sorted by (symbol, trade_time, trade_id):

1. Under a per-(exchange, day) lock file (fcntl), remove what a run cut short left: its staging folder
   and curated files no manifest names.
2. Input = the day's files per candlelake.lake.catalog: the current manifest's files plus the committed
   bronze batches above its covered_batch (late trades). Nothing new: `skipped`.
3. Write the sorted output into a staging folder (Spark: range partitioning into the number of files the
   target size asks for, sorted within each, maxRecordsPerFile as a cap).
4. Check before the switch: the rows read equal the rows the records and the manifest name; the rows
   and an order-free checksum (sum of xxhash64 of every row) read back from the staged files equal those
   of the deduplicated rows that went into the writer; the footers' rows add up. (The input is read
   once: with thousands of small bronze files, opening them is most of a pass.)
5. Move the files into the partition under `part-<token>-<n>.parquet`, then the switch: `os.replace` of
   `_manifest.json`. Then delete the files no manifest names (the old ones).

Killed at any moment (kill -9), the old manifest (or none) stays current until the switch, and readers
only read what a manifest names; the rerun cleans up and starts again. The streaming sink's checkpoint
is only read, never written. Every run is a row in `lake_compactions` (running -> switched / skipped /
failed; a row a killed run left `running` gets an "interrupted" note from the next run of the day).

Expiry (`expire_bronze`) deletes bronze partitions older than CANDLELAKE_BRONZE_RETENTION_DAYS only when
a valid manifest covers every batch recorded there and no file lies there that no record names.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from candlelake.lake import catalog

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from candlelake.config import Settings

log = logging.getLogger(__name__)

STAGING_DIR = "_staging"
LOCKS_DIR = "_locks"
SORT_ORDER = ("symbol", "trade_time", "trade_id")
# Range bounds are sampled, so partitions differ by a few percent; a cap exactly at the target would
# cut many of them into one full file and one tiny one. The cap still stops a skewed partition from
# growing one huge file.
RECORDS_CAP_SLACK = 1.25
# Rows per shuffle partition of the dedupe (window sort); Spark spills beyond memory either way, fewer
# rows per task spill less. Adaptive execution merges partitions that come out small.
ROWS_PER_SHUFFLE_PARTITION = 4_000_000
SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"
WINDOW_GROUP_LIMIT = "spark.sql.optimizer.windowGroupLimitThreshold"
STEPS = ("cleaned", "planned", "staged", "verified", "moved", "switched")


class CompactionBusy(RuntimeError):
    """Another compaction (or expiry) of the same exchange and day holds its lock."""


class CompactionCheckFailed(RuntimeError):
    """What was written does not match the input; nothing was switched."""


@dataclass
class CompactionResult:
    """One compaction of one exchange's day, as recorded in `lake_compactions`."""

    exchange: str
    trade_date: str
    run_id: str
    status: str = "running"  # running | switched | skipped | failed
    files_before: int = 0
    bytes_before: int = 0
    rows_before: int = 0
    duplicates_dropped: int = 0
    files_after: int = 0
    bytes_after: int = 0
    rows_after: int = 0
    checksum: str | None = None
    covered_batch: int | None = None
    seconds: float = 0.0
    note: str = ""
    cleaned: list[str] = field(default_factory=list)
    compaction_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


# ---------------------------------------------------------------------------------------------------
# Paths, lock and cleanup


def staging_dir(curated: Path, exchange: str, day: date) -> Path:
    """Where a compaction of the day writes before the switch (same file system as the partition)."""
    return curated / STAGING_DIR / f"exchange={exchange}" / f"trade_date={day.isoformat()}"


def lock_path(curated: Path, exchange: str, day: date) -> Path:
    return curated / LOCKS_DIR / f"exchange={exchange}" / f"trade_date={day.isoformat()}.lock"


@contextmanager
def day_lock(curated: Path, exchange: str, day: date, wait_s: float = 0.0) -> Iterator[Path]:
    """Hold the (exchange, day) lock; wait up to `wait_s` for it, then raise CompactionBusy.

    An fcntl lock dies with its process, so a run killed with -9 never leaves the day locked.
    """
    path = lock_path(curated, exchange, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = path.read_text().strip() or "unknown"
                    raise CompactionBusy(
                        f"another compaction or expiry of {exchange} {day.isoformat()} is running (pid {holder}, "
                        f"lock {path}); it was not interrupted. Run again when it has finished."
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the lock


def cleanup(curated: Path, exchange: str, day: date) -> list[str]:
    """Remove what a compaction cut short left: its staging and the curated files no manifest names.

    Call with the day's lock held. Only names compaction writes are removed; anything else is left and
    logged. Returns what was removed (relative to `curated`).
    """
    removed: list[str] = []
    staging = staging_dir(curated, exchange, day)
    if staging.exists():
        shutil.rmtree(staging)
        removed.append(str(staging.relative_to(curated)))
    for parent in (staging.parent, staging.parent.parent):  # empty now unless another day is compacting
        try:
            parent.rmdir()
        except OSError:
            break
    partition = catalog.partition_dir(curated, exchange, day)
    if not partition.is_dir():
        return removed
    manifest = catalog.read_manifest(partition)
    named = {f.path for f in manifest.files} if manifest else set()
    for path in sorted(partition.iterdir()):
        name = path.name
        if name == catalog.MANIFEST_NAME or name in named:
            continue
        ours = (name.startswith("part-") and name.endswith(".parquet")) or (
            name.startswith(catalog.MANIFEST_NAME + ".") and name.endswith(".tmp")
        )
        if ours and path.is_file():
            path.unlink()
            removed.append(str(path.relative_to(curated)))
        else:
            log.warning("leaving %s alone: compaction did not write it", path)
    return removed


# ---------------------------------------------------------------------------------------------------
# The record in PostgreSQL


class Journal(Protocol):
    """Where compactions are recorded (PgJournal; tests of the file logic may pass None instead)."""

    def start(self, run_id: str, exchange: str, day: date) -> int: ...

    def finish(self, compaction_id: int, result: CompactionResult) -> None: ...

    def record(self, result: CompactionResult) -> int: ...


# A run killed before it finished keeps status 'running' (the schema's meaning); the next run of the
# day, holding the lock, knows it is gone and says so in its note.
_MARK_INTERRUPTED = """
UPDATE lake_compactions SET note = 'interrupted: run ' || %s || ' found it unfinished (killed, or its machine stopped)'
 WHERE exchange = %s AND trade_date = %s AND status = 'running' AND note IS NULL
"""
_START = """
INSERT INTO lake_compactions (run_id, exchange, trade_date, status) VALUES (%s, %s, %s, 'running')
RETURNING compaction_id
"""
_RECORD = """
INSERT INTO lake_compactions (run_id, exchange, trade_date, status, finished_at, seconds, note)
VALUES (%(run_id)s, %(exchange)s, %(trade_date)s, %(status)s, now(), %(seconds)s, %(note)s)
RETURNING compaction_id
"""
_FINISH = """
UPDATE lake_compactions SET status = %(status)s, finished_at = now(), files_before = %(files_before)s,
       bytes_before = %(bytes_before)s, rows_before = %(rows_before)s,
       duplicates_dropped = %(duplicates_dropped)s, files_after = %(files_after)s,
       bytes_after = %(bytes_after)s, rows_after = %(rows_after)s, checksum = %(checksum)s,
       covered_batch = %(covered_batch)s, seconds = %(seconds)s, note = %(note)s
 WHERE compaction_id = %(compaction_id)s
"""


class PgJournal:
    """Records compactions in `lake_compactions` (one short connection per statement group)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    def _run(self, statements: list[tuple[str, Any]]) -> Any:
        import psycopg2

        conn = psycopg2.connect(self._dsn, connect_timeout=10)
        try:
            with conn, conn.cursor() as cur:
                fetched = None
                for sql, params in statements:
                    cur.execute(sql, params)
                    if cur.description is not None:
                        fetched = cur.fetchone()
                return fetched
        finally:
            conn.close()

    def check(self) -> None:
        """Raise when the database does not answer (before any work is done)."""
        self._run([("SELECT 1 FROM lake_compactions LIMIT 1", None)])

    def start(self, run_id: str, exchange: str, day: date) -> int:
        # Called with the day's lock held: a row still 'running' belongs to a run that is gone.
        row = self._run([(_MARK_INTERRUPTED, (run_id, exchange, day)), (_START, (run_id, exchange, day))])
        return int(row[0])

    def finish(self, compaction_id: int, result: CompactionResult) -> None:
        params = {k: v for k, v in result.as_dict().items() if k not in ("cleaned",)}
        params["compaction_id"] = compaction_id
        self._run([(_FINISH, params)])

    def record(self, result: CompactionResult) -> int:
        """A finished row at once (a run that could not start: the day was locked)."""
        return int(self._run([(_RECORD, result.as_dict())])[0])


# ---------------------------------------------------------------------------------------------------
# Checksums and the Spark part


def _trade_columns() -> list[str]:
    from candlelake.spark import transforms

    return transforms.TRADE_SCHEMA.fieldNames()


def _hash_sum() -> Column:
    """Sum of xxhash64 over every trade column (as in candlelake.nightly.staging.fingerprint): order-free."""
    from pyspark.sql import functions as F

    row_hash = F.xxhash64(*[F.col(name) for name in _trade_columns()])
    return F.coalesce(F.sum(row_hash.cast("decimal(38,0)")), F.lit(0))


def checksum(trades: DataFrame) -> tuple[int, str]:
    """(rows, "rows:sum of row hashes") of trades (TRADE_SCHEMA columns): equal rows, equal checksum."""
    from candlelake.nightly.staging import fingerprint

    return fingerprint(trades.select(*_trade_columns()))


@dataclass(frozen=True)
class _Written:
    rows_in: int
    rows_out: int
    checksum: str


def _bytes_per_row(curated: Path, exchange: str, files: catalog.DayFiles) -> float:
    """Measured bytes per row of curated files: this day's manifest, else the exchange's newest, else bronze.

    Bronze files are small and carry Kafka columns, so their bytes per row overstate the curated size;
    they are only the first day's estimate.
    """
    if files.manifest is not None and files.manifest.rows:
        return files.manifest.bytes_per_row
    for path in sorted((curated / catalog.TRADES_TABLE / f"exchange={exchange}").glob("trade_date=*"), reverse=True):
        try:
            other = catalog.read_manifest(path)
        except catalog.CatalogError:
            continue
        if other is not None and other.rows:
            return other.bytes_per_row
    return files.bytes / files.rows if files.rows else 100.0


def _write_sorted(
    spark: SparkSession, files: catalog.DayFiles, staging: Path, target_bytes: int, bytes_per_row: float
) -> _Written:
    """Dedupe, range-partition and sort the day's trades into `staging`; observe rows and checksum."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    from candlelake.spark import transforms

    token = staging.name
    seen, written = Observation(f"compaction-in-{token}"), Observation(f"compaction-out-{token}")
    source = catalog.read_trades(spark, files.files, files.exchange).observe(seen, F.count(F.lit(1)).alias("rows"))
    deduped = transforms.dedupe_trades(source)
    n_files = max(1, math.ceil(files.rows * bytes_per_row / target_bytes))
    max_records = max(1, math.ceil(target_bytes / bytes_per_row * RECORDS_CAP_SLACK))
    ordered = (
        deduped.repartitionByRange(n_files, *SORT_ORDER)
        .sortWithinPartitions(*SORT_ORDER)
        # Observed in the writing stage: before the range shuffle it would also count the rows Spark
        # reads to sample the range bounds.
        .observe(written, F.count(F.lit(1)).alias("rows"), _hash_sum().alias("hash"))
        .drop("exchange")  # in the path, as in bronze
    )
    shuffle_partitions = str(
        max(int(spark.conf.get(SHUFFLE_PARTITIONS) or "4"), math.ceil(files.rows / ROWS_PER_SHUFFLE_PARTITION))
    )
    saved = {key: spark.conf.get(key, None) for key in (SHUFFLE_PARTITIONS, WINDOW_GROUP_LIMIT)}
    spark.conf.set(SHUFFLE_PARTITIONS, shuffle_partitions)
    # Duplicates are rare, so the dedupe's partial row_number limit before the shuffle removes almost
    # nothing and costs a full sort of the input: without it the dedupe took a third less time.
    spark.conf.set(WINDOW_GROUP_LIMIT, "-1")
    try:
        log.info(
            "writing %s %s: %d rows from %d files into about %d files (%.1f bytes/row, at most %d rows each)",
            files.exchange,
            files.day,
            files.rows,
            len(files.files),
            n_files,
            bytes_per_row,
            max_records,
        )
        ordered.write.option("maxRecordsPerFile", max_records).option("compression", "zstd").parquet(str(staging))
    finally:
        for key, value in saved.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
    out = written.get
    rows_out = int(out["rows"])
    return _Written(int(seen.get["rows"]), rows_out, f"{rows_out}:{int(out['hash'])}")


# ---------------------------------------------------------------------------------------------------
# Compaction


def compact_day(
    spark: SparkSession | Callable[[], SparkSession],
    settings: Settings,
    exchange: str,
    day: date,
    run_id: str,
    *,
    journal: Journal | None = None,
    lock_wait_s: float = 0.0,
    target_bytes: int | None = None,
    on_step: Callable[[str], None] | None = None,
) -> CompactionResult:
    """Compact `exchange`'s `day` (see the module docstring); never raises for a failed check or a busy lock.

    `spark`: the session, or a function that builds it (called only when there is something to write).
    `target_bytes`: the file size aimed at (default settings.compaction_target_mb). `on_step` is called
    with each name in STEPS as it is reached (progress logs; tests stop there to simulate a kill).
    """
    started = time.monotonic()
    result = CompactionResult(exchange, day.isoformat(), run_id)
    target = target_bytes or settings.compaction_target_mb * 1024 * 1024
    try:
        with day_lock(settings.curated_dir, exchange, day, lock_wait_s):
            if journal is not None:
                result.compaction_id = journal.start(run_id, exchange, day)
            try:
                _compact_locked(spark, settings, result, day, target, on_step or (lambda step: None))
            except Exception as exc:  # a failed check or a failed job: the old manifest stays current
                result.status = "failed"
                result.note = str(exc) if isinstance(exc, CompactionCheckFailed) else f"{type(exc).__name__}: {exc}"
                log.error("compaction of %s %s failed: %s", exchange, day, result.note)
                if not isinstance(exc, CompactionCheckFailed):
                    log.debug("compaction failure", exc_info=True)
                result.cleaned += cleanup(settings.curated_dir, exchange, day)
            result.seconds = time.monotonic() - started
            if journal is not None and result.compaction_id is not None:
                journal.finish(result.compaction_id, result)
    except CompactionBusy as exc:
        result.status, result.note = "failed", str(exc)
        result.seconds = time.monotonic() - started
        log.error("%s", exc)
        if journal is not None:  # recorded, without touching the running one's row
            result.compaction_id = journal.record(result)
    return result


def _compact_locked(
    spark: SparkSession | Callable[[], SparkSession],
    settings: Settings,
    result: CompactionResult,
    day: date,
    target_bytes: int,
    step: Callable[[str], None],
) -> None:
    exchange, curated = result.exchange, settings.curated_dir
    result.cleaned = cleanup(curated, exchange, day)
    if result.cleaned:
        log.info("removed what an earlier run left: %s", ", ".join(result.cleaned))
    step("cleaned")
    files = catalog.day_files(
        settings.lake_dir, exchange, day, curated=curated, checkpoint=catalog.lake_checkpoint(settings)
    )
    result.files_before, result.bytes_before, result.rows_before = len(files.files), files.bytes, files.rows
    current = files.manifest
    if current is not None:
        problems = catalog.manifest_problems(files.curated_dir or curated, current)
        if problems:
            raise CompactionCheckFailed(
                f"the current curated files of {exchange} {day} are damaged ({'; '.join(problems[:3])}); "
                f"restore them, or move {files.curated_dir} aside to compact the day again from bronze"
            )
    if not files.batches:
        result.status = "skipped"
        result.files_after, result.bytes_after, result.rows_after = result.files_before, files.bytes, files.rows
        if current is not None:
            result.checksum, result.covered_batch = current.checksum, current.covered_batch
            result.note = f"nothing new since run {current.run_id} (covered up to batch {current.covered_batch})"
        else:
            result.note = "no committed bronze batch for this day"
        log.info("%s %s: %s", exchange, day, result.note)
        return
    step("planned")

    session = spark() if callable(spark) else spark
    token = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    staging = staging_dir(curated, exchange, day) / token
    written = _write_sorted(session, files, staging, target_bytes, _bytes_per_row(curated, exchange, files))
    step("staged")

    staged = sorted(staging.glob("*.parquet"))
    entries = [catalog.parquet_entry(p) for p in staged]
    read_back = checksum(catalog.read_trades(session, staged, exchange))
    problems = []
    if written.rows_in != files.rows:
        problems.append(f"read {written.rows_in} rows, but the records and the manifest name {files.rows}")
    if read_back != (written.rows_out, written.checksum):
        problems.append(f"the written files hold {read_back[1]}, the deduplicated input was {written.checksum}")
    if sum(e.rows for e in entries) != written.rows_out:
        problems.append(f"the files' footers count {sum(e.rows for e in entries)} rows, not {written.rows_out}")
    if problems:
        raise CompactionCheckFailed(f"check failed for {exchange} {day}, nothing switched: {'; '.join(problems)}")
    step("verified")

    partition = catalog.partition_dir(curated, exchange, day)
    partition.mkdir(parents=True, exist_ok=True)
    placed = []
    for index, (path, entry) in enumerate(zip(staged, entries, strict=True)):
        name = f"part-{token}-{index:05d}.parquet"
        os.replace(path, partition / name)
        _fsync(partition / name)  # on disk before a manifest names it
        placed.append(catalog.FileEntry(name, entry.rows, entry.bytes))
    step("moved")

    manifest = catalog.Manifest(
        exchange=exchange,
        trade_date=day.isoformat(),
        files=tuple(placed),
        rows=written.rows_out,
        bytes=sum(f.bytes for f in placed),
        checksum=written.checksum,
        covered_batch=files.covers,
        token=token,
        run_id=result.run_id,
        written_at=datetime.now(UTC).isoformat(timespec="seconds"),
        input_files=len(files.files),
        input_rows=files.rows,
        input_bytes=files.bytes,
        duplicates_dropped=files.rows - written.rows_out,
    )
    catalog.write_manifest(partition, manifest)
    step("switched")
    result.cleaned += cleanup(curated, exchange, day)  # the old files and the staging folder

    result.status = "switched"
    result.files_after, result.bytes_after, result.rows_after = len(placed), manifest.bytes, manifest.rows
    result.duplicates_dropped, result.checksum = manifest.duplicates_dropped, manifest.checksum
    result.covered_batch = manifest.covered_batch
    result.note = f"{len(files.batches)} bronze batches" + (
        f" added to the {len(files.curated_files)} curated files of run {current.run_id}" if current else ""
    )
    log.info(
        "%s %s switched: %d files / %d bytes / %d rows -> %d / %d / %d (%d duplicates dropped)",
        exchange,
        day,
        result.files_before,
        result.bytes_before,
        result.rows_before,
        result.files_after,
        result.bytes_after,
        result.rows_after,
        result.duplicates_dropped,
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------
# Expiry of bronze


@dataclass(frozen=True)
class Expiry:
    """What expiry did with one bronze partition."""

    exchange: str
    trade_date: str
    action: str  # deleted | kept
    reason: str
    files: int = 0
    bytes: int = 0


def expire_bronze(settings: Settings, today: date, *, lock_wait_s: float = 0.0) -> list[Expiry]:
    """Delete bronze partitions older than settings.bronze_retention_days that the curated area covers.

    A partition of a day before `today - retention` goes only when a manifest whose files are all
    present covers every batch recorded there (committed, id <= covered_batch) and the folder holds no
    file that no record names (a batch being written, a lake from before batch records). Only the
    recorded files and records are deleted, then the empty folders. 0 days keeps bronze forever.
    """
    if settings.bronze_retention_days == 0:
        return []
    cutoff = today - timedelta(days=settings.bronze_retention_days)
    commits = catalog.read_commits(catalog.lake_checkpoint(settings))  # before any record is read
    done = []
    for exchange, day, folder in catalog.bronze_partitions(settings.lake_dir):
        if day >= cutoff:
            continue
        try:
            with day_lock(settings.curated_dir, exchange, day, lock_wait_s):
                done.append(_expire_partition(settings, exchange, day, folder, commits))
        except CompactionBusy:
            done.append(Expiry(exchange, day.isoformat(), "kept", "a compaction of this day is running"))
        log.info("bronze %s %s: %s (%s)", exchange, day, done[-1].action, done[-1].reason)
    return done


def _expire_partition(settings: Settings, exchange: str, day: date, folder: Path, commits: catalog.Commits) -> Expiry:
    def kept(reason: str) -> Expiry:
        return Expiry(exchange, day.isoformat(), "kept", reason)

    curated = catalog.partition_dir(settings.curated_dir, exchange, day)
    try:
        manifest = catalog.read_manifest(curated)
        records = catalog.read_batch_records(folder)
    except catalog.CatalogError as exc:
        return kept(str(exc))
    if manifest is None:
        return kept("not compacted: no curated manifest")
    problems = catalog.manifest_problems(curated, manifest)
    if problems:
        return kept(f"curated files damaged: {'; '.join(problems[:3])}")
    uncovered = [
        r.batch_id for r in records if not (commits.committed(r.batch_id) and r.batch_id <= manifest.covered_batch)
    ]
    if uncovered:
        return kept(f"batches {uncovered[:5]} are not in the curated files (covered up to {manifest.covered_batch})")
    named = {f.path for r in records for f in r.files}
    strangers = sorted(p.name for p in folder.iterdir() if p.name != catalog.BATCHES_DIR and p.name not in named)
    if strangers:
        return kept(f"{len(strangers)} files no batch record names, e.g. {strangers[0]}")
    files = bytes_ = 0
    for record in records:
        for entry in record.files:  # the data first: a cut-short expiry leaves records, which it redoes
            (folder / entry.path).unlink(missing_ok=True)
            files, bytes_ = files + 1, bytes_ + entry.bytes
        catalog.batch_record_path(folder, record.batch_id).unlink(missing_ok=True)
    batches = folder / catalog.BATCHES_DIR
    for leftover in batches.glob("*.tmp") if batches.is_dir() else []:
        leftover.unlink(missing_ok=True)
    for empty in (batches, folder):
        try:
            empty.rmdir()
        except FileNotFoundError:
            pass
        except OSError:  # a batch arrived meanwhile: its files and record stay
            return Expiry(
                exchange, day.isoformat(), "deleted", "covered files deleted; new files arrived", files, bytes_
            )
    return Expiry(exchange, day.isoformat(), "deleted", f"covered by run {manifest.run_id}", files, bytes_)
