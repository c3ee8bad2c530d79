"""Staged candles: the nightly recompute's output, written before it is audited and published.

Write, audit, publish: the batch job writes one exchange's UTC day of recomputed candles here
(`<lake>/staging/candles/exchange=<exchange>/trade_date=<day>/`), Great Expectations validates exactly
these files, and the curated load publishes them into PostgreSQL only when the validation of the same
fingerprint passed. Nothing reads staged candles as data but the audit and the load.

Each day's folder holds Parquet files with the columns of `candlelake.spark.transforms.CANDLE_SCHEMA` and a
`_stage.json` written last:

    {"exchange": "binance", "trade_date": "2019-10-11", "rows": 1440, "fingerprint": "1440:93...",
     "run_id": "scheduled__2019-10-12T00:30:00+00:00", "written_at": "2026-12-01T17:02:11+00:00"}

The fingerprint is the row count and the sum of a 64-bit hash of every row (order-free), so a candle
changed, added or removed after staging changes it. A day is replaced as a whole: the new files are
written beside it and swapped in with two renames; `_stage.json` missing means "not staged" (a write
was cut short), and the audit and the load refuse such a day.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

STAGE_INFO = "_stage.json"


@dataclass(frozen=True)
class StageInfo:
    exchange: str
    trade_date: str
    rows: int
    fingerprint: str
    run_id: str
    written_at: str
    # ISO UTC end (exclusive) of what was recomputed: the day's end, or the settled part of a day not
    # over yet (batch.settled_end). Blank in records written before it existed: the whole day.
    until: str = ""

    def end(self) -> datetime:
        day_end = datetime.combine(date.fromisoformat(self.trade_date), time(0), tzinfo=UTC) + timedelta(days=1)
        return datetime.fromisoformat(self.until) if self.until else day_end


def stage_root(lake: Path) -> Path:
    return lake / "staging" / "candles"


def stage_dir(lake: Path, exchange: str, day: date) -> Path:
    return stage_root(lake) / f"exchange={exchange}" / f"trade_date={day.isoformat()}"


def read_stage_info(lake: Path, exchange: str, day: date) -> StageInfo | None:
    """The day's stage record, or None when nothing complete is staged."""
    try:
        data = json.loads((stage_dir(lake, exchange, day) / STAGE_INFO).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return StageInfo(**data)


def staged_files(lake: Path, exchange: str, day: date) -> list[Path]:
    """The Parquet files of a completely staged day (empty when the day is not staged)."""
    folder = stage_dir(lake, exchange, day)
    if not (folder / STAGE_INFO).is_file():
        return []
    return sorted(folder.glob("*.parquet"))


def fingerprint(df: DataFrame) -> tuple[int, str]:
    """(rows, "rows:sum-of-row-hashes") of a DataFrame: equal data gives an equal fingerprint, in any order."""
    from pyspark.sql import functions as F

    columns = [F.col(name) for name in df.columns]
    row = df.agg(
        F.count(F.lit(1)).alias("n"),
        F.coalesce(F.sum(F.xxhash64(*columns).cast("decimal(38,0)")), F.lit(0)).alias("h"),
    ).first()
    assert row is not None  # a global aggregate has one row
    return int(row["n"]), f"{int(row['n'])}:{int(row['h'])}"


def write_stage(
    df: DataFrame, lake: Path, exchange: str, day: date, run_id: str, until: datetime | None = None
) -> StageInfo:
    """Stage `df` (one exchange's day of candles, up to `until` or the whole day) in place of what was
    staged before; return its record."""
    target = stage_dir(lake, exchange, day)
    fresh = target.with_name(f"_new-{target.name}-{os.getpid()}")
    old = target.with_name(f"_old-{target.name}-{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    frame = df.coalesce(1)
    frame.write.mode("overwrite").parquet(str(fresh))
    rows, print_ = fingerprint(df)
    written = datetime.now(UTC).isoformat(timespec="seconds")
    info = StageInfo(exchange, day.isoformat(), rows, print_, run_id, written, until.isoformat() if until else "")
    (fresh / STAGE_INFO).write_text(json.dumps(asdict(info), indent=1) + "\n")
    for marker in fresh.glob("_SUCCESS"):
        marker.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return info
