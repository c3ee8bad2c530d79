"""Candles at any bucket (1m, 5m, 45m, 4h, 1d, 1w, ...) rolled up from the base candles in PostgreSQL.

Binance's rules, as the product contract states them:

- A bucket of B seconds starts at ``floor(epoch / B) * B`` (UTC); buckets in weeks start on Monday
  00:00 UTC (epoch day 0 was a Thursday, so their origin is 1970-01-05).
- open/close are the open of the first and the close of the last base candle *with trades*; high/low
  the max/min over those; volumes, quote volumes and trade counts are sums; vwap = quote_volume / volume.
- An interval without trades after the market's first trade is a candle with open = high = low = close
  = the previous close (which may lie before the requested range) and zero volume and count. Missing
  base minutes are generated on read, from the market's first candle with trades up to its latest
  base candle; a bucket made only of empty intervals is itself an empty candle. Before the first trade
  and after the latest candle there are no rows at all: that, and only that, means "no data".
- Every row says ``filled`` ('true' when no stored base candle lies in the bucket: it was generated on
  read) and its ``state``, the weakest of its parts (live < closed < curated); a generated part counts
  as closed (the market has moved past it, but the nightly batch has not curated it).

A request returns the buckets whose open_time lies in [start, end), as Binance's klines endpoint does.
Buckets that are whole multiples of 5 minutes, 1 hour or 1 day read the pre-aggregated table
``candle_rollups`` (kept in step with ``candles`` by triggers, see sql/schema.sql) instead of the
base rows, so a year at 1d reads 365 rows, not 525,600.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources

import psycopg2.extensions

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MONDAY_EPOCH = datetime(1970, 1, 5, tzinfo=UTC)  # weeks start on Monday 00:00 UTC
ROLLUP_LEVELS = (86_400, 3_600, 300)  # bucket_seconds kept in candle_rollups, largest first
MAX_ROWS = 100_000

# Output columns: the export's ten, then vwap, state and filled (both as text, so CSV and JSON agree).
COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "vwap",
    "state",
    "filled",
)

_BUCKET_RE = re.compile(r"^([0-9]+)([smhdw])$")


class RollupError(ValueError):
    """A bucket or range a person must correct; the message says what is wrong."""


@dataclass(frozen=True)
class Bucket:
    """A bucket size: `seconds` long, aligned on `origin` (the epoch, or a Monday for weeks)."""

    text: str
    seconds: int
    origin: datetime

    def start_of(self, t: datetime) -> datetime:
        """The open_time of the bucket holding `t`."""
        offset = (t - self.origin) // timedelta(seconds=1)
        return self.origin + timedelta(seconds=offset - offset % self.seconds)

    def first_at_or_after(self, t: datetime) -> datetime:
        """The first bucket open_time that is not before `t`."""
        start = self.start_of(t)
        return start if start >= t else start + timedelta(seconds=self.seconds)


def parse_bucket(text: str, base_seconds: int = 60) -> Bucket:
    """`"45m"` -> Bucket(seconds=2700); a whole positive number of s/m/h/d/w, a multiple of the base."""
    cleaned = text.strip()
    match = _BUCKET_RE.match(cleaned)
    if match is None:
        raise RollupError(
            f"interval {text!r} is not a bucket: give a whole positive number and a unit "
            "s, m, h, d or w, such as 1m, 5m, 45m, 4h, 1d, 1w"
        )
    count, unit = int(match.group(1)), match.group(2)
    seconds = count * UNIT_SECONDS[unit]
    if count == 0:
        raise RollupError(f"interval {text!r} is empty: a bucket must be at least one {unit}")
    if seconds % base_seconds:
        raise RollupError(
            f"interval {text!r} is not a whole number of base candles ({base_seconds} s); "
            "candles are rolled up from the base interval, never split"
        )
    return Bucket(cleaned, seconds, MONDAY_EPOCH if unit == "w" else EPOCH)


def source_level(bucket: Bucket, base_seconds: int = 60) -> int:
    """The candle_rollups level to aggregate (bucket_seconds), or 0 for the base candles."""
    for level in ROLLUP_LEVELS:
        if bucket.seconds % level == 0 and level % base_seconds == 0 and bucket.seconds > base_seconds:
            return level
    return 0


@dataclass(frozen=True)
class RollupPlan:
    bucket: Bucket
    first: datetime  # open_time of the first bucket in range
    last: datetime  # open_time of the last bucket in range
    count: int
    level: int


def plan(
    bucket: Bucket, start: datetime, end: datetime, base_seconds: int = 60, max_rows: int = MAX_ROWS
) -> RollupPlan:
    """Buckets with open_time in [start, end); refuses more than `max_rows` of them."""
    if end <= start:
        raise RollupError(f"the end ({end.isoformat()}) must be after the start ({start.isoformat()})")
    first = bucket.first_at_or_after(start)
    if first >= end:
        raise RollupError(
            f"no {bucket.text} bucket starts between {start.isoformat()} and {end.isoformat()}; "
            "widen the range or choose a smaller bucket"
        )
    count = (end - first - timedelta(microseconds=1)) // timedelta(seconds=bucket.seconds) + 1
    if count > max_rows:
        raise RollupError(
            f"{count:,} candles of {bucket.text} in this range is more than {max_rows:,}; "
            f"choose a larger bucket (at least {_suggest(end - start, max_rows)}) or a shorter range"
        )
    last = first + timedelta(seconds=bucket.seconds * (count - 1))
    return RollupPlan(bucket, first, last, count, source_level(bucket, base_seconds))


def _suggest(span: timedelta, max_rows: int) -> str:
    needed = span.total_seconds() / max_rows
    for text in ("1m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "1w"):
        if parse_bucket(text).seconds >= needed:
            return text
    return "1w"


_BASE_PARTS = """
    SELECT open_time, open, high, low, close, volume, quote_volume, trades,
           taker_buy_volume, taker_buy_quote_volume, 1 AS base_rows,
           CASE state WHEN 'curated' THEN 2 WHEN 'closed' THEN 1 ELSE 0 END AS state_rank
      FROM candles
     WHERE exchange = %(exchange)s AND symbol = %(symbol)s
       AND open_time >= %(first)s AND open_time < %(stop)s
"""
_ROLLUP_PARTS = """
    SELECT open_time, open, high, low, close, volume, quote_volume, trades,
           taker_buy_volume, taker_buy_quote_volume, base_rows, state_rank
      FROM candle_rollups
     WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND bucket_seconds = %(level)s
       AND open_time >= %(first)s AND open_time < %(stop)s
"""

# The statement itself lives in sql/rollup_query.sql; {parts} is one of the two constants above.
ROLLUP_SQL = resources.files("candlelake").joinpath("sql/rollup_query.sql").read_text()


def rollup_query(level: int) -> str:
    """The rollup statement reading base candles (level 0) or candle_rollups at `level` seconds."""
    if level not in (0, *ROLLUP_LEVELS):
        raise ValueError(f"no rollup level of {level} s")
    return ROLLUP_SQL.replace("{parts}", _ROLLUP_PARTS if level else _BASE_PARTS)


def fetch_rollup(
    conn: psycopg2.extensions.connection,
    exchange: str,
    symbol: str,
    bucket: Bucket,
    start: datetime,
    end: datetime,
    base_seconds: int = 60,
    max_rows: int = MAX_ROWS,
) -> list[tuple[object, ...]]:
    """Candles of `bucket` for one market with open_time in [start, end), in COLUMNS order, decimals as text."""
    p = plan(bucket, start, end, base_seconds, max_rows)
    params = {
        "exchange": exchange,
        "symbol": symbol,
        "first": p.first,
        "last": p.last,
        "stop": p.last + timedelta(seconds=bucket.seconds),
        "step": timedelta(seconds=bucket.seconds),
        "origin": bucket.origin,
        "level": p.level,
        "base": timedelta(seconds=base_seconds),
        "base_s": base_seconds,
    }
    with conn.cursor() as cur:
        # The planner cannot see that the joins on `parts` are one-to-one, overestimates the rows by
        # orders of magnitude and would JIT-compile the statement: seconds spent to save nothing.
        cur.execute("SELECT current_setting('jit'), set_config('jit', 'off', false)")
        row = cur.fetchone()
        try:
            cur.execute(rollup_query(p.level), params)
            return cur.fetchall()
        finally:
            cur.execute("SELECT set_config('jit', %s, false)", (row[0] if row else "on",))
