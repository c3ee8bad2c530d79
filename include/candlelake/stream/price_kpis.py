"""Price points into PostgreSQL, and the sliding-window KPIs of every window they touch.

The streaming job hands each micro-batch of points (candlelake.spark.prices) to `land_points`: the
points go into `price_points` (a point already there is kept once), then every window of every size in
`KPI_WINDOWS` that holds one of the batch's points is computed again from all of its points in the
table and upserted into `price_kpis`. The rows written are returned, for the job to publish on the KPI
topic.

Why in PostgreSQL and not in a Spark window aggregation: a streaming query allows one aggregation and
Spark's `window()` one size, so two sliding sizes would be two more stateful queries, each with its own
state store and micro-batch overhead on the stream's two cores, for a few points a second. Here a
window is always computed from every point it holds, so a re-run batch, a point polled twice and a
point arriving late all give the same row; PostgreSQL's NUMERIC keeps the sums exact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import psycopg2.extensions
from psycopg2.extras import execute_values

from candlelake.stream.pg_retry import in_transaction
from candlelake.trade import decimal_text
from candlelake.util import from_us, to_us

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

KPI_WINDOWS: tuple[tuple[int, int], ...] = ((1, 10), (5, 60))
"""(window length in minutes, slide in seconds): one minute every ten seconds, five minutes every minute.
Windows are aligned to the UTC epoch, as candles are."""

POINT_COLUMNS: tuple[str, ...] = ("exchange", "symbol", "source", "time", "price")
KPI_COLUMNS: tuple[str, ...] = (
    "exchange",
    "symbol",
    "window_minutes",
    "window_start",
    "window_end",
    "avg_price",
    "min_price",
    "max_price",
    "spread",
    "points",
)
"""A KPI row in the table `price_kpis`' column order (less updated_at), as `land_points` returns it."""

PointRow = tuple[str, str, str, datetime, Decimal]  # POINT_COLUMNS
KpiRow = tuple[Any, ...]  # KPI_COLUMNS

INSERT_POINTS_SQL = (
    f"INSERT INTO price_points ({', '.join(POINT_COLUMNS)}) VALUES %s "
    "ON CONFLICT (exchange, symbol, source, time) DO NOTHING"
)

_WINDOWS_VALUES = ", ".join(f"({minutes}, {slide_s})" for minutes, slide_s in KPI_WINDOWS)

# The windows the batch touched: for each point and size, the grid starts in (time - length, time].
# date_bin aligns to the epoch, exactly (timestamps are microseconds, the slides whole seconds).
KPIS_SQL = f"""
WITH batch (exchange, symbol, time) AS (VALUES %s),
touched AS (
    SELECT DISTINCT b.exchange, b.symbol, w.minutes,
           date_bin(make_interval(secs => w.slide_s), b.time, TIMESTAMPTZ '1970-01-01 00:00:00+00')
               - k * make_interval(secs => w.slide_s) AS window_start
    FROM batch b
    CROSS JOIN (VALUES {_WINDOWS_VALUES}) AS w (minutes, slide_s)
    CROSS JOIN LATERAL generate_series(0, w.minutes * 60 / w.slide_s - 1) AS k
)
INSERT INTO price_kpis ({", ".join(KPI_COLUMNS)})
SELECT t.exchange, t.symbol, t.minutes, t.window_start, t.window_start + make_interval(mins => t.minutes),
       avg(p.price), min(p.price), max(p.price), max(p.price) - min(p.price), count(*)
FROM touched t
JOIN price_points p
  ON p.exchange = t.exchange AND p.symbol = t.symbol
 AND p.time >= t.window_start AND p.time < t.window_start + make_interval(mins => t.minutes)
GROUP BY t.exchange, t.symbol, t.minutes, t.window_start
ON CONFLICT (exchange, symbol, window_minutes, window_start) DO UPDATE SET
    avg_price = EXCLUDED.avg_price, min_price = EXCLUDED.min_price, max_price = EXCLUDED.max_price,
    spread = EXCLUDED.spread, points = EXCLUDED.points, updated_at = now()
RETURNING {", ".join(KPI_COLUMNS)}
"""


def land_points(cur: psycopg2.extensions.cursor, points: Sequence[PointRow]) -> list[KpiRow]:
    """Insert `points` (POINT_COLUMNS order) and recompute every KPI window they touch; the KPI rows
    written, ordered by market, size and start. Idempotent: the same points again write the same rows."""
    if not points:
        return []
    execute_values(cur, INSERT_POINTS_SQL, points, page_size=1000)
    touched = sorted({(exchange, symbol, time) for exchange, symbol, _source, time, _price in points})
    rows = execute_values(cur, KPIS_SQL, touched, page_size=len(touched), fetch=True)
    return sorted(rows, key=lambda r: (r[0], r[1], r[2], r[3]))


def kpi_key(row: KpiRow) -> bytes:
    return f"{row[0]}:{row[1]}".encode()


def kpi_json(row: KpiRow) -> bytes:
    """A KPI row as the KPI topic carries it (key `exchange:symbol`): decimals as strings, times in
    epoch microseconds, as on the `trades` and `prices` topics."""
    values = dict(zip(KPI_COLUMNS, row, strict=True))
    return json.dumps(
        {
            **{k: values[k] for k in ("exchange", "symbol", "window_minutes")},
            "window_start": to_us(values["window_start"]),
            "window_end": to_us(values["window_end"]),
            **{k: decimal_text(values[k]) for k in ("avg_price", "min_price", "max_price", "spread")},
            "points": values["points"],
        },
        separators=(",", ":"),
    ).encode()


def point_rows(points: DataFrame) -> list[PointRow]:
    """A micro-batch of price points (candlelake.spark.prices.POINT_SCHEMA) collected as PointRows.

    Times leave Spark as epoch microseconds: PySpark turns timestamps into naive datetimes in the driver's
    local time zone, which PostgreSQL would then read in its own session zone.
    """
    from pyspark.sql import functions as F

    selected = points.select("exchange", "symbol", "source", F.unix_micros("time").alias("time"), "price")
    return [(r[0], r[1], r[2], from_us(r[3]), r[4]) for r in selected.collect()]


def land_points_dsn(dsn: str, points: Sequence[PointRow]) -> list[KpiRow]:
    """`land_points` in one transaction of its own, retried while PostgreSQL cannot be reached."""

    def land(conn: psycopg2.extensions.connection) -> list[KpiRow]:
        with conn.cursor() as cur:
            return land_points(cur, points)

    return in_transaction(dsn, land, "the price points")


class KpiPublisher:
    """Sends KPI rows to the KPI topic from the streaming job's driver, one flush per micro-batch.

    A re-run batch sends its rows again: each message is a window's whole current value, so a consumer
    keeps the last one per (market, window size, window start) and a repeat changes nothing.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._producer: Any = None

    def publish(self, rows: Sequence[KpiRow]) -> int:
        if not rows:
            return 0
        if self._producer is None:  # on the first batch with KPIs: a job without price points opens nothing
            from kafka import KafkaProducer

            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap, client_id="candlelake-price-kpis", acks="all", linger_ms=5
            )
        sent = [self._producer.send(self.topic, key=kpi_key(row), value=kpi_json(row)) for row in rows]
        self._producer.flush(timeout=30)
        for future in sent:
            future.get(timeout=0)  # raises if Kafka refused one: the batch fails and Spark re-runs it
        return len(rows)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
