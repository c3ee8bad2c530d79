"""Idempotent upsert of candles into the PostgreSQL table `candles`, shared by the stream and the batch.

Writing the same candles twice leaves the table as writing them once: a row is keyed by
(exchange, symbol, open_time) and an upsert replaces every value with the full candle, never adds to
it. That is what makes a replayed micro-batch (Spark re-runs a batch with the same id after a crash)
harmless, and why the streaming query runs in update mode: each batch carries the complete candle
of every bucket it touched.

A row never moves down the ladder live < closed < curated: the stream's provisional 'live' rows
cannot overwrite what the nightly batch curated, while the batch can overwrite anything.

The Spark helper (`upsert_candles_df`) imports pyspark only when called, so Airflow tasks and tools can
import this module cheaply.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extensions
from psycopg2.extras import execute_values

from candlelake import candle
from candlelake.stream.pg_retry import RETRY_DELAYS_S, in_transaction
from candlelake.util import from_us

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

STATES = ("live", "closed", "curated")

# Column order of every row handed to `upsert_candles` (the table's columns minus state/updated_at).
COLUMNS: tuple[str, ...] = candle.COLUMNS

CandleRow = tuple[Any, ...]  # values in COLUMNS order: str, str, datetime, datetime, Decimal..., int

_RANK = "CASE {0}.state WHEN 'curated' THEN 2 WHEN 'closed' THEN 1 ELSE 0 END"
_UPDATED = [c for c in COLUMNS if c not in candle.KEY]

# `%s` after VALUES is expanded by execute_values into bound rows built from TEMPLATE.
UPSERT_SQL = (
    f"INSERT INTO candles ({', '.join(COLUMNS)}, state, updated_at) VALUES %s "
    f"ON CONFLICT ({', '.join(candle.KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _UPDATED)
    + ", state = EXCLUDED.state, updated_at = now() "
    # Never downgrade: a live row must not replace a curated one (see the module docstring).
    + f"WHERE {_RANK.format('candles')} <= {_RANK.format('EXCLUDED')}"
)
TEMPLATE = "(" + ", ".join(["%s"] * (len(COLUMNS) + 1)) + ", now())"

# A live candle whose whole interval lies before the stream's watermark can no longer change: Spark
# drops every later trade of it as late (the nightly batch takes those). It is then 'closed', and a
# replayed live upsert cannot reopen it: the upsert above never moves a row down the ladder.
CLOSE_LIVE_SQL = "UPDATE candles SET state = 'closed', updated_at = now() WHERE state = 'live' AND close_time < %s"


def upsert_candles(
    conn: psycopg2.extensions.connection, rows: Iterable[CandleRow], state: str, page_size: int = 1000
) -> int:
    """Upsert `rows` (COLUMNS order) with `state` in one transaction on `conn`; return the row count."""
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    values = [(*row, state) for row in rows]
    if not values:
        return 0
    with conn, conn.cursor() as cur:  # commits on success, rolls back on any error
        execute_values(cur, UPSERT_SQL, values, template=TEMPLATE, page_size=page_size)
    return len(values)


def close_live_candles(cur: psycopg2.extensions.cursor, watermark: datetime) -> int:
    """Mark every live candle that ends before `watermark` closed, on the caller's transaction; return how many."""
    cur.execute(CLOSE_LIVE_SQL, (watermark,))
    return int(cur.rowcount)


def spark_candle_rows(df: DataFrame) -> Iterator[CandleRow]:
    """Rows of a candles DataFrame (CANDLE_SCHEMA columns) as CandleRow tuples, collected on the driver.

    One Spark job computes every partition at once: `toLocalIterator()` would run a job per partition,
    one after another, which cost a live micro-batch about 0.2 s more on two cores.

    Times leave Spark as epoch microseconds: PySpark turns timestamps into naive datetimes in the
    driver's local time zone, which PostgreSQL would then read in its own session zone.
    """
    from pyspark.sql import functions as F

    times = {"open_time", "close_time"}
    selected = df.select(*[F.unix_micros(c).alias(c) if c in times else F.col(c) for c in COLUMNS])
    for row in selected.collect():
        yield tuple(from_us(v) if name in times else v for name, v in zip(COLUMNS, row, strict=True))


def upsert_candles_df(df: DataFrame, dsn: str, state: str, delays: Sequence[float] = RETRY_DELAYS_S) -> int:
    """Upsert a candles DataFrame into PostgreSQL in one transaction; return the number of rows.

    Retries when PostgreSQL cannot be reached, then raises. Candle batches are small (one row per
    market and bucket touched), so they are collected on the driver first.
    """
    rows = list(spark_candle_rows(df))
    # A stream keeps running through a short PostgreSQL restart; a longer outage fails the batch so that
    # Spark re-runs it on restart (the upsert is idempotent, so nothing is counted twice).
    return in_transaction(
        dsn, lambda conn: upsert_candles(conn, rows, state), "the candle upsert", delays, "candlelake-candles"
    )
