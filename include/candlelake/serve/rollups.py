"""Candles at any bucket (1m, 5m, 45m, 4h, 1d, 1w, ...) rolled up from the base candles in PostgreSQL.

Binance's rules, as the product contract states them:

- A bucket of B seconds starts at ``floor(epoch / B) * B`` (UTC); buckets in weeks start on Monday
  00:00 UTC (epoch day 0 was a Thursday, so their origin is 1970-01-05).
- open/close are the open of the first and the close of the last base candle *with trades*; high/low
  the max/min over those; volumes, quote volumes and trade counts are sums; vwap = quote_volume / volume.
- An interval without trades after the market's first trade is a candle with open = high = low = close
  = the previous close (which may lie before the requested range) and zero volume and count, if the
  market was observed throughout (below). Missing base minutes are generated on read, from the market's
  first candle with trades up to its latest base candle; a bucket made only of empty intervals is itself
  an empty candle. Before the first trade and after the latest candle there are no rows at all.
- Every row says ``filled`` ('true' when no stored base candle lies in the bucket: it was generated on
  read) and its ``state``, the weakest of its parts (live < closed < curated); a generated part counts
  as closed (the market has moved past it, but the nightly batch has not curated it).

Coverage (``candlelake.coverage``) tells "no trades" from "no data". The query computes the market's
covered time once, ``market_coverage(exchange, symbol, ...)`` (the ``coverage`` table's intervals less
the trade gaps of known times that no backfill closed), and judges every bucket [t, t + step) by it:

- a bucket with trades is a candle of the trades that were seen; its ``coverage`` is 'complete' when
  the covered time contains the whole bucket, else 'partial' (one unseen second in an hour makes the
  hour partial);
- a bucket without trades is a quiet candle, ``coverage`` 'complete', only when the base candle whose
  close it repeats carries it: the covered time from that candle's open to the bucket's end is one
  unbroken stretch that reaches into the candle. A watch that began inside the candle saw its last
  trade; one lost and found again inside it may not have. No unseen trade can then have moved the
  price since: the nightly batch's rule (``candlelake.coverage.carriers``), so the read path shows the
  quiet candles the batch curated. Otherwise nothing is known about the bucket and there is no row: a
  missing bucket between rows means "unknown", never "quiet".

The multirange is the only judge: a stored candle's own ``coverage`` (what the nightly batch knew when
it curated it) is not read, so coverage recorded later (a backfill) counts at once, for every bucket
size alike.

A request returns the buckets whose open_time lies in [start, end), as Binance's klines endpoint does.
The pre-aggregated table ``candle_rollups`` (kept in step with ``candles`` by triggers, see
sql/schema.sql) holds the same aggregates at 5 minutes, 15 minutes, 1 hour and 1 day. A bucket is
assembled from the largest of these levels that divides it (a year at 1d reads 365 rows, not 525,600;
1h, 5m and 15m buckets are those rows as they are), plus larger levels where a whole block of theirs
fits in a bucket: 13m buckets read the 5-minute rows that lie inside one bucket and base candles only
for the 5-minute blocks that straddle two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources

import psycopg2.extensions

from candlelake import candle
from candlelake.util import EPOCH

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MONDAY_EPOCH = datetime(1970, 1, 5, tzinfo=UTC)  # weeks start on Monday 00:00 UTC
ROLLUP_LEVELS = (86_400, 3_600, 900, 300)  # bucket_seconds kept in candle_rollups, largest first
MAX_ROWS = 100_000

# Output columns: the open time and the exchange's kline values, then vwap, state, filled and coverage
# (as text, so CSV and JSON agree).
COLUMNS: tuple[str, ...] = ("open_time", *candle.KLINE_VALUES, "vwap", "state", "filled", "coverage")

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
    """The largest candle_rollups level (bucket_seconds) that divides the bucket, or 0 for the base candles."""
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
    levels: tuple[int, ...]  # see read_levels


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
    count = bucket_count(bucket, start, end)
    if count > max_rows:
        raise RollupError(
            f"{count:,} candles of {bucket.text} in this range is more than {max_rows:,}; "
            f"choose a larger bucket (at least {_suggest(end - start, max_rows)}) or a shorter range"
        )
    last = first + timedelta(seconds=bucket.seconds * (count - 1))
    return RollupPlan(bucket, first, last, count, read_levels(bucket, base_seconds))


def _suggest(span: timedelta, max_rows: int) -> str:
    needed = span.total_seconds() / max_rows
    for text in ("1m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "1w"):
        if parse_bucket(text).seconds >= needed:
            return text
    return "1w"


# Bucket sizes a view steps up through when the one asked for would draw too many candles.
BUCKET_LADDER = ("1s", "5s", "15s", "30s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "1w")


def bucket_count(bucket: Bucket, start: datetime, end: datetime) -> int:
    """How many buckets of `bucket` open in [start, end) (0 when none does)."""
    first = bucket.first_at_or_after(start)
    if first >= end:
        return 0
    return (end - first - timedelta(microseconds=1)) // timedelta(seconds=bucket.seconds) + 1


def fit_bucket(bucket: Bucket, start: datetime, end: datetime, max_candles: int, base_seconds: int = 60) -> Bucket:
    """`bucket`, or the smallest ladder step above it that opens at most `max_candles` buckets in the range.

    A year at 1m is 525,600 candles, far more than a chart can show; stepping up keeps the view drawable
    while still answering "what happened in this range". The caller tells the user when it stepped up.
    """
    if bucket_count(bucket, start, end) <= max_candles:
        return bucket
    for text in BUCKET_LADDER:
        step = parse_bucket_or_none(text, base_seconds)
        if step and step.seconds > bucket.seconds and bucket_count(step, start, end) <= max_candles:
            return step
    return parse_bucket("1w", base_seconds)


def parse_bucket_or_none(text: str, base_seconds: int = 60) -> Bucket | None:
    """`parse_bucket`, or None for a bucket the base interval cannot make (1s over a 1m base)."""
    try:
        return parse_bucket(text, base_seconds)
    except RollupError:
        return None


def read_levels(bucket: Bucket, base_seconds: int = 60) -> tuple[int, ...]:
    """The levels a bucket is assembled from, smallest first (0: the base candles, else candle_rollups'
    bucket_seconds): the largest level that divides the bucket, then every larger one that still fits
    in it (13m: base minutes where a 5-minute block straddles two buckets, 5m rows elsewhere)."""
    divisor = source_level(bucket, base_seconds)
    larger = sorted(
        level
        for level in ROLLUP_LEVELS
        if max(divisor, base_seconds) < level < bucket.seconds and level % base_seconds == 0
    )
    return (divisor, *larger)


# What a bucket adds up from its parts: every kline value but the prices.
_SUMMED = tuple(c for c in candle.KLINE_VALUES if c not in candle.PRICES)
_SUMS = ", ".join(_SUMMED)
_SUM_EACH = ", ".join(f"sum({c}) AS {c}" for c in _SUMMED)
# Each source yields its parts with the bucket `t` they fall in and the time `end_time` they end; a base
# candle without trades has no prices of its own (stored empty candles repeat the previous close).
_BASE_ROWS = f"""
    SELECT {{t}} AS t, open_time, open_time + %(span{{i}})s AS end_time,
           CASE WHEN trades > 0 THEN open END AS open, CASE WHEN trades > 0 THEN high END AS high,
           CASE WHEN trades > 0 THEN low END AS low, CASE WHEN trades > 0 THEN close END AS close,
           {_SUMS}, 1 AS base_rows, CASE state WHEN 'curated' THEN 2 WHEN 'closed' THEN 1 ELSE 0 END AS state_rank
      FROM candles
     WHERE exchange = %(exchange)s AND symbol = %(symbol)s
       AND open_time >= %(first)s AND open_time < %(stop)s"""
_LEVEL_ROWS = f"""
    SELECT {{t}} AS t, open_time, open_time + %(span{{i}})s AS end_time,
           open, high, low, close, {_SUMS}, base_rows, state_rank
      FROM candle_rollups
     WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND bucket_seconds = %(level{{i}})s
       AND open_time >= %(first)s AND open_time < %(stop)s"""
# A block [o, o + span) lies in one bucket when the bucket of its last base interval starts at or
# before o (tail = span - base). A level's rows are read where the block one level up does not fit.
_FITS = "\n       AND date_bin(%(step)s, open_time + %(tail{i})s, %(origin)s) <= open_time"
_PARENT_STRADDLES = (
    "\n       AND date_bin(%(step)s, date_bin(%(span{i})s, open_time, 'epoch') + %(tail{i})s, %(origin)s)"
    " > date_bin(%(span{i})s, open_time, 'epoch')"
)
# One stored part per bucket: nothing to aggregate.
_DIRECT = f"""
    SELECT t, open, high, low, close, {_SUMS}, base_rows, state_rank
      FROM ({{parts}}) p"""
# Plain aggregates only, no per-bucket sort or array: the open is the open of the part starting the
# bucket, the close the close of the part ending it. When that part is missing or has no trades,
# they stay NULL here and rollup_query.sql looks up the first/last base candle with trades instead.
_AGGREGATE = f"""
    SELECT t, max(open) FILTER (WHERE open_time = t) AS open, max(high) AS high, min(low) AS low,
           max(close) FILTER (WHERE end_time = t + %(step)s) AS close,
           {_SUM_EACH},
           sum(base_rows) AS base_rows, min(state_rank) AS state_rank
      FROM ({{parts}}) p
     GROUP BY t"""

# Session settings for the rollup statement, restored afterwards (the connection is the caller's); the
# statement reads each setting's value before it sets the new one.
SETTINGS = {"jit": "off", "work_mem": "64MB", "enable_hashagg": "off"}
_SET_SETTINGS = "SELECT " + ", ".join(
    f"current_setting('{name}'), set_config('{name}', %({name})s, false)" for name in SETTINGS
)

# The statement itself lives in sql/rollup_query.sql; {parts} is built from the constants above.
ROLLUP_SQL = resources.files("candlelake").joinpath("sql/rollup_query.sql").read_text()


def rollup_query(levels: tuple[int, ...], bucket_seconds: int, base_seconds: int = 60) -> str:
    """The rollup statement reading `levels` (see read_levels) for buckets of `bucket_seconds`."""
    if not levels or any(level not in (0, *ROLLUP_LEVELS) for level in levels):
        raise ValueError(f"no rollup levels {levels}")
    direct = len(levels) == 1 and (levels[0] or base_seconds) == bucket_seconds
    # A part that is a whole bucket starts it: open_time is the bucket, and keeps the index's order.
    t = "open_time" if direct else "date_bin(%(step)s, open_time, %(origin)s)"
    parts = []
    for i, level in enumerate(levels):
        sql = (_LEVEL_ROWS if level else _BASE_ROWS).format(i=i, t=t)
        if i:  # the smallest level divides the bucket: its blocks always fit
            sql += _FITS.format(i=i)
        if i + 1 < len(levels):  # the parent block is read instead where it fits
            sql += _PARENT_STRADDLES.format(i=i + 1)
        parts.append(sql)
    union = "\n     UNION ALL".join(parts)
    template = _DIRECT if direct else _AGGREGATE
    return ROLLUP_SQL.replace("{parts}", template.replace("{parts}", union))


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
    params: dict[str, object] = {
        "exchange": exchange,
        "symbol": symbol,
        "first": p.first,
        "last": p.last,
        "stop": p.last + timedelta(seconds=bucket.seconds),
        "step": timedelta(seconds=bucket.seconds),
        "origin": bucket.origin,
        "base": timedelta(seconds=base_seconds),
        "base_s": base_seconds,
        "per_bucket": bucket.seconds // base_seconds,
    }
    for i, level in enumerate(p.levels):
        params[f"level{i}"] = level
        params[f"span{i}"] = timedelta(seconds=level or base_seconds)
        params[f"tail{i}"] = timedelta(seconds=(level or base_seconds) - base_seconds)
    with conn.cursor() as cur:
        # For this statement only: no JIT (the planner cannot see that the joins on the parts are
        # one-to-one, overestimates the rows by orders of magnitude and would spend seconds compiling
        # to save nothing); memory to sort the parts without spilling to disk; and aggregation by
        # sorting, not hashing: the parts arrive nearly in bucket order, the buckets leave in order
        # for the merge join with the series, and a hash of thousands of buckets of numeric sums
        # measured 10-25% slower.
        cur.execute(_SET_SETTINGS, SETTINGS)
        row = cur.fetchone()
        saved = dict(zip(SETTINGS, row[::2], strict=True)) if row else SETTINGS
        try:
            cur.execute(rollup_query(p.levels, bucket.seconds, base_seconds), params)
            return cur.fetchall()
        finally:
            # A failed transaction takes the settings with it when the caller rolls back.
            if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_INERROR:
                cur.execute(_SET_SETTINGS, saved)
