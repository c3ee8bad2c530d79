"""Publish one exchange's UTC day of staged, validated candles into PostgreSQL as 'curated'.

The last step of write, audit, publish (candlelake.nightly.staging): the nightly recompute staged the day's
candles, Great Expectations validated exactly those files (table `quality_runs`, keyed by the stage's
fingerprint), and this module loads them, or refuses to. It refuses (`NotValidated`) unless

- the latest 'candles' validation of the day passed and validated the fingerprint that is staged now
  (a stage rewritten after its validation, or a failed validation, blocks the load), and
- the latest 'trades' validation of the day passed and is not older than the stage (the trades the
  candles were computed from were checked, not an older version of them).

The load is one transaction: the staged rows are COPYed (CSV, decimals as exact text) into a temporary
table, compared with the day's candles already in PostgreSQL in any state (live, closed, curated), and
then only the candles that are new, changed, or not yet curated are upserted as 'curated'. A candle
whose values differ from what PostgreSQL held is a late-data correction: one `candle_corrections` row
holds its previous state and the changed fields before and after. `curated_loads` records the counts.
So loading the same stage again writes nothing but its `curated_loads` row (changed 0, all unchanged),
and the rollup triggers on `candles` fire only for candles that really changed.

The streaming job may upsert live candles at the same time: its upsert
(candlelake.stream.postgres_candles.UPSERT_SQL) never moves a row down the ladder live < closed <
curated, so a later live upsert cannot overwrite a curated candle; a live row written while this
transaction runs is taken over by the upsert (ON CONFLICT sees committed rows).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from candlelake import candle
from candlelake.nightly.staging import StageInfo, read_stage_info, stage_dir, staged_files
from candlelake.util import day_bounds, from_us, utc

if TYPE_CHECKING:
    from candlelake.config import Settings

log = logging.getLogger(__name__)

# A curated candle is a candle plus what coverage made of it (candlelake.coverage).
COLUMNS: tuple[str, ...] = candle.CURATED_COLUMNS
KEY = candle.KEY
VALUES = tuple(c for c in COLUMNS if c not in KEY)  # what a correction compares
_TIMES = ("open_time", "close_time")
# A deadlock with the stream's upsert (both lock candle rows, in different orders) rolls one side back;
# the load is one transaction, so it is simply run again.
DEADLOCK_RETRIES = 3


class CuratedLoadError(Exception):
    """The day cannot be published; the message says why and what to do."""


class NotStaged(CuratedLoadError):
    """No complete stage for the day, or the staged files do not agree with their `_stage.json`."""


class NotValidated(CuratedLoadError):
    """The staged candles have not passed validation (or changed since they did)."""


@dataclass(frozen=True)
class LoadResult:
    load_id: int
    exchange: str
    trade_date: date
    fingerprint: str
    candles: int  # staged candles
    inserted: int  # not in PostgreSQL before
    changed: int  # values differ from PostgreSQL's: the late-data corrections
    unchanged: int  # same values (a live or closed one among them became curated)
    upserted: int  # rows written: inserted + changed + unchanged ones that were not curated yet
    withdrawn: int  # quiet candles of the day the stage no longer holds (their time is not covered)
    seconds: float

    def text(self) -> str:
        """One line for the task log."""
        return (
            f"{self.exchange} {self.trade_date.isoformat()}: {self.candles} candles published as curated "
            f"({self.inserted} new, {self.changed} corrected, {self.unchanged} unchanged, "
            f"{self.withdrawn} quiet candles withdrawn) in {self.seconds:.1f} s"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (an Airflow XCom): the day as YYYY-MM-DD."""
        return {**asdict(self), "trade_date": self.trade_date.isoformat()}


def load_day(settings: Settings, exchange: str, day: date, run_id: str) -> LoadResult:
    """Publish the staged candles of `exchange`'s UTC `day` as curated; raise `CuratedLoadError` when refused."""
    started = time.monotonic()
    info = read_stage_info(settings.lake_dir, exchange, day)
    if info is None:
        raise NotStaged(
            f"no candles are staged for {exchange} {day.isoformat()} "
            f"(nothing complete in {stage_dir(settings.lake_dir, exchange, day)}): run the data_quality DAG first"
        )
    if info.exchange != exchange or info.trade_date != day.isoformat():
        raise NotStaged(
            f"the stage record in {stage_dir(settings.lake_dir, exchange, day)} is for "
            f"{info.exchange} {info.trade_date}"
        )
    rows = read_staged_rows(staged_files(settings.lake_dir, exchange, day), exchange, day)
    if len(rows) != info.rows:
        raise NotStaged(
            f"the staged files of {exchange} {day.isoformat()} hold {len(rows)} candles but _stage.json says "
            f"{info.rows}: the stage is damaged; run the data_quality DAG again"
        )
    attempt = 0
    while True:
        conn = psycopg2.connect(settings.pg_dsn(), connect_timeout=10, application_name="candlelake-curated-load")
        try:
            with conn, conn.cursor() as cur:  # one transaction: commit on success, roll back on any error
                counts = _publish(cur, info, day, rows, run_id)
            break
        except psycopg2.errors.DeadlockDetected:
            if attempt >= DEADLOCK_RETRIES:
                raise
            attempt += 1
            log.warning("curated load of %s %s hit a deadlock with a concurrent writer; retrying", exchange, day)
        finally:
            conn.close()
    result = LoadResult(
        load_id=counts[0],
        exchange=exchange,
        trade_date=day,
        fingerprint=info.fingerprint,
        candles=len(rows),
        inserted=counts[1],
        changed=counts[2],
        unchanged=counts[3],
        upserted=counts[4],
        withdrawn=counts[5],
        seconds=time.monotonic() - started,
    )
    log.info("%s", result.text())
    return result


# --- reading the stage ------------------------------------------------------------------------------


def read_staged_rows(files: Sequence[Path], exchange: str, day: date) -> list[tuple[Any, ...]]:
    """The staged candles as tuples in `COLUMNS` order: exact `Decimal`s, aware UTC datetimes.

    Read with pyarrow (no Spark needed to publish): Parquet decimals come out as `Decimal`, never float.
    Times are read as epoch microseconds, whatever unit and time-zone flag the writer used (Spark
    writes INT96 or TIMESTAMP_MICROS, both UTC instants).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    start, end = day_bounds(day)
    out: list[tuple[Any, ...]] = []
    for path in files:
        table = pq.ParquetFile(path).read()
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise NotStaged(f"staged file {path} lacks the column(s) {', '.join(missing)}")
        columns: list[list[Any]] = []
        for name in COLUMNS:
            column = table.column(name)
            if name in _TIMES:
                if not pa.types.is_timestamp(column.type):
                    raise NotStaged(f"staged file {path}: {name} is {column.type}, not a timestamp")
                micros = column.cast(pa.timestamp("us", tz=column.type.tz)).cast(pa.int64()).to_pylist()
                columns.append([None if m is None else from_us(m) for m in micros])
            else:
                if name in candle.DECIMALS and not pa.types.is_decimal(column.type):
                    raise NotStaged(f"staged file {path}: {name} is {column.type}, not an exact decimal")
                columns.append(column.to_pylist())
        for row in zip(*columns, strict=True):
            if row[0] != exchange or not start <= row[2] < end:
                raise NotStaged(
                    f"staged file {path} holds a candle of {row[0]} {row[1]} at {row[2]:%Y-%m-%dT%H:%M:%SZ}, "
                    f"outside {exchange} {day.isoformat()}"
                )
            out.append(row)
    return out


def _csv_text(rows: Sequence[tuple[Any, ...]]) -> io.StringIO:
    """COPY input: decimals in plain positional notation (never 1E-8), times in ISO 8601 with offset."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow([_text(v) for v in row])
    buffer.seek(0)
    return buffer


def _text(value: object) -> str:
    if value is None:
        return ""  # an unquoted empty field is NULL in COPY's CSV format
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# --- the transaction --------------------------------------------------------------------------------

_COLS = ", ".join(COLUMNS)
_LAST_RUN_SQL = """
SELECT success, fingerprint, validated_at, run_id, failed, evaluated
  FROM quality_runs
 WHERE exchange = %s AND trade_date = %s AND suite = %s
 ORDER BY validated_at DESC, quality_id DESC
 LIMIT 1
"""
_STAGE_TABLE_SQL = f"CREATE TEMP TABLE curated_stage ON COMMIT DROP AS SELECT {_COLS} FROM candles WITH NO DATA"
_COPY_SQL = f"COPY curated_stage ({_COLS}) FROM STDIN WITH (FORMAT csv)"
_DUPLICATES_SQL = """
SELECT symbol, open_time FROM curated_stage GROUP BY symbol, open_time HAVING count(*) > 1 LIMIT 1
"""
# Per staged candle: the state it had (NULL: new) and, when it existed, the fields whose values differ,
# before and after (NULL when none differ). Decimals go into JSON as text, so they stay exact. A live or
# closed candle has no coverage yet (the stream does not judge it): getting one is no correction, while a
# curated candle's coverage changing (partial, then complete once a replay filled its minute) is.
_ONLY_CURATED = " AND c.state = 'curated'"
_DIFF_VALUES = ",\n".join(
    f"('{c}', c.{c} IS DISTINCT FROM s.{c}{_ONLY_CURATED if c == 'coverage' else ''}, "
    f"to_jsonb(c.{c}{'::text' if c in candle.DECIMALS else ''}), "
    f"to_jsonb(s.{c}{'::text' if c in candle.DECIMALS else ''}))"
    for c in VALUES
)
_DIFF_SQL = f"""
CREATE TEMP TABLE curated_diff ON COMMIT DROP AS
SELECT s.exchange, s.symbol, s.open_time, c.state AS was_state, d.before, d.after
  FROM curated_stage s
  LEFT JOIN candles c ON c.exchange = s.exchange AND c.symbol = s.symbol AND c.open_time = s.open_time
       -- the day's rows only: lets the planner range-scan the primary key instead of reading all of candles
       AND c.exchange = %(exchange)s AND c.open_time >= %(start)s AND c.open_time < %(end)s
  LEFT JOIN LATERAL (
       SELECT jsonb_object_agg(v.name, v.before) AS before, jsonb_object_agg(v.name, v.after) AS after
         FROM (VALUES {_DIFF_VALUES}) AS v(name, differs, before, after)
        WHERE v.differs) d ON c.exchange IS NOT NULL
"""
_COUNTS_SQL = """
SELECT count(*) FILTER (WHERE was_state IS NULL),
       count(*) FILTER (WHERE was_state IS NOT NULL AND before IS NOT NULL),
       count(*) FILTER (WHERE was_state IS NOT NULL AND before IS NULL)
  FROM curated_diff
"""
_RECORD_SQL = """
INSERT INTO curated_loads (run_id, exchange, trade_date, fingerprint, candles, inserted, changed, unchanged)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING load_id
"""
_CORRECTIONS_SQL = """
INSERT INTO candle_corrections (load_id, exchange, symbol, open_time, was_state, before, after)
SELECT %s, exchange, symbol, open_time, was_state, before, after
  FROM curated_diff
 WHERE was_state IS NOT NULL AND before IS NOT NULL
"""
# Only what is new, changed or not curated yet: an unchanged curated candle is not rewritten (no new
# updated_at, no rollup recomputation). In key order, so two loads lock rows in the same order.
_UPSERT_SQL = (
    f"INSERT INTO candles ({_COLS}, state, updated_at) "
    f"SELECT {', '.join('s.' + c for c in COLUMNS)}, 'curated', now() "
    f"FROM curated_stage s JOIN curated_diff d USING ({', '.join(KEY)}) "
    "WHERE d.was_state IS DISTINCT FROM 'curated' OR d.before IS NOT NULL "
    f"ORDER BY {', '.join('s.' + c for c in KEY)} "
    f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in VALUES)
    + ", state = 'curated', updated_at = now()"
)
# A quiet candle (trades = 0) of the staged range that the stage does not hold any more: written by an
# earlier load, before coverage showed that nobody was watching then. "No trades" it is not: it goes, and
# the correction records what it was (after = {}).
_WITHDRAWN = """
    FROM candles c
   WHERE c.exchange = %(exchange)s AND c.open_time >= %(start)s AND c.open_time < %(end)s AND c.trades = 0
     AND NOT EXISTS (SELECT 1 FROM curated_stage s
                      WHERE s.exchange = c.exchange AND s.symbol = c.symbol AND s.open_time = c.open_time)
"""
_WITHDRAW_CORRECTIONS_SQL = (
    "INSERT INTO candle_corrections (load_id, exchange, symbol, open_time, was_state, before, after) "
    "SELECT %(load_id)s, c.exchange, c.symbol, c.open_time, c.state, "
    "jsonb_build_object('trades', c.trades, 'coverage', c.coverage), '{}'::jsonb" + _WITHDRAWN
)
_WITHDRAW_SQL = "DELETE" + _WITHDRAWN


def check_validated(cur: psycopg2.extensions.cursor, info: StageInfo, day: date) -> None:
    """Raise `NotValidated` unless the stage `info` describes passed validation (see the module docstring)."""
    where = f"{info.exchange} {day.isoformat()}"
    cur.execute(_LAST_RUN_SQL, (info.exchange, day, "candles"))
    candles = cur.fetchone()
    if candles is None:
        raise NotValidated(f"the staged candles of {where} have not been validated: run the data_quality DAG first")
    success, validated, at, run, failed, evaluated = candles
    if not success:
        raise NotValidated(
            f"the latest validation of the candles of {where} failed ({failed} of {evaluated} expectations, "
            f"run {run} at {at:%Y-%m-%d %H:%M:%S}Z): see its Data Docs report, fix the data, run data_quality again"
        )
    if validated != info.fingerprint:
        raise NotValidated(
            f"the staged candles of {where} are not the ones validated (staged {info.fingerprint}, "
            f"validated {validated}): they changed after the validation; run the data_quality DAG again"
        )
    cur.execute(_LAST_RUN_SQL, (info.exchange, day, "trades"))
    trades = cur.fetchone()
    if trades is None:
        raise NotValidated(f"the trades of {where} have not been validated: run the data_quality DAG first")
    success, _, at, run, failed, evaluated = trades
    if not success:
        raise NotValidated(
            f"the latest validation of the trades of {where} failed ({failed} of {evaluated} expectations, "
            f"run {run} at {at:%Y-%m-%d %H:%M:%S}Z): the candles computed from them are not published"
        )
    written = utc(datetime.fromisoformat(info.written_at))
    if at < written:
        raise NotValidated(
            f"the trades of {where} were last validated at {at:%Y-%m-%d %H:%M:%S}Z, before the candles were "
            f"staged at {written:%Y-%m-%d %H:%M:%S}Z: run the data_quality DAG again"
        )


def _publish(
    cur: psycopg2.extensions.cursor, info: StageInfo, day: date, rows: Sequence[tuple[Any, ...]], run_id: str
) -> tuple[int, int, int, int, int, int]:
    """(load_id, inserted, changed, unchanged, upserted, withdrawn), on the caller's transaction."""
    cur.execute("SET LOCAL TIME ZONE 'UTC'")  # timestamps in the correction JSON read as UTC
    # One load of a day at a time: a second one waits and then finds the first one's candles.
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"curated_load:{info.exchange}:{day}",))
    check_validated(cur, info, day)
    cur.execute(_STAGE_TABLE_SQL)
    cur.copy_expert(_COPY_SQL, _csv_text(rows))
    cur.execute(_DUPLICATES_SQL)
    duplicate = cur.fetchone()
    if duplicate is not None:
        raise NotStaged(f"the stage of {info.exchange} {day.isoformat()} holds {duplicate[0]} at {duplicate[1]} twice")
    cur.execute("ANALYZE curated_stage")  # a fresh temp table has no statistics: plan the joins on real sizes
    start, end = day_bounds(day)
    cur.execute(_DIFF_SQL, {"exchange": info.exchange, "start": start, "end": end})
    cur.execute(_COUNTS_SQL)
    counted = cur.fetchone()
    assert counted is not None  # an aggregate without GROUP BY returns one row
    inserted, changed, unchanged = (int(n) for n in counted)
    cur.execute(_RECORD_SQL, (run_id, info.exchange, day, info.fingerprint, len(rows), inserted, changed, unchanged))
    recorded = cur.fetchone()
    assert recorded is not None
    load_id = int(recorded[0])
    cur.execute(_CORRECTIONS_SQL, (load_id,))
    cur.execute(_UPSERT_SQL)
    upserted = int(cur.rowcount)
    staged_range = {"exchange": info.exchange, "start": start, "end": info.end(), "load_id": load_id}
    cur.execute(_WITHDRAW_CORRECTIONS_SQL, staged_range)
    cur.execute(_WITHDRAW_SQL, staged_range)
    withdrawn = int(cur.rowcount)
    if withdrawn:
        cur.execute("UPDATE curated_loads SET withdrawn = %s WHERE load_id = %s", (withdrawn, load_id))
    return load_id, inserted, changed, unchanged, upserted, withdrawn


def corrections(conn: psycopg2.extensions.connection, load_id: int) -> Iterator[dict[str, Any]]:
    """The correction rows of one load (for reports and tests), in market and time order."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT exchange, symbol, open_time, was_state, before, after FROM candle_corrections "
            "WHERE load_id = %s ORDER BY exchange, symbol, open_time",
            (load_id,),
        )
        names = [d[0] for d in cur.description or ()]
        for row in cur.fetchall():
            yield dict(zip(names, row, strict=True))
