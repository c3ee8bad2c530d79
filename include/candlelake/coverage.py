"""Coverage: the intervals in which candlelake saw every trade of a market, and what they make of a candle.

"No trades" and "no data" look the same in a table of trades; only coverage tells them apart. Every path
that writes trades also records what it covered (the `coverage` table, sql/schema.sql):

- a live feed: each connected session, from the connection to its loss (or to the last health beat
  when the producer died without a word); a rotation with overlapping connections is no loss;
- a replayed file: a data.binance.vision day or month file spans its whole day or month (the exchange
  cut it there); any other recording spans its first to its last trade per market;
- a REST backfill: the range it fetched;
- the simulator: its run.

A base candle is `complete` when its whole interval [open, close) lies inside the union of the
market's coverage, and `partial` otherwise. Only complete buckets without trades become quiet candles
(trades = 0, the previous close repeated), and only when that previous close is known: the last trade
before the bucket lies in the same unbroken covered stretch. Anything else without trades is absent:
nothing is known about it. Intervals are microseconds since the epoch, half-open [start, end).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from candlelake.util import to_us

Span = tuple[int, int]  # [start_us, end_us)
State = Literal["complete", "partial"]
COMPLETE: State = "complete"
PARTIAL: State = "partial"
KINDS = ("live", "replay", "backfill", "simulator")

# data.binance.vision names: BTCUSDT-aggTrades-2025-01-01.zip (a day), BTCUSDT-trades-2025-01.zip (a month).
_DUMP_NAME = re.compile(r"^[A-Za-z0-9]+-(?:aggTrades|trades)-(\d{4})-(\d{2})(?:-(\d{2}))?(?:\.|$)", re.IGNORECASE)


# --- pure interval logic ----------------------------------------------------------------------------


def merge(spans: Iterable[Span]) -> list[Span]:
    """The union of `spans` as sorted, disjoint, non-touching spans; empty spans vanish."""
    merged: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def covering(merged: Sequence[Span], start: int, end: int) -> Span | None:
    """The merged span that holds all of [start, end), if one does (merged spans never touch)."""
    lo, hi = 0, len(merged)
    while lo < hi:  # the last span starting at or before `start`
        mid = (lo + hi) // 2
        if merged[mid][0] <= start:
            lo = mid + 1
        else:
            hi = mid
    if lo and merged[lo - 1][1] >= end:
        return merged[lo - 1]
    return None


def state_of(merged: Sequence[Span], open_us: int, step_us: int) -> State:
    """`complete` when the bucket [open_us, open_us + step_us) is covered throughout, else `partial`."""
    return COMPLETE if covering(merged, open_us, open_us + step_us) is not None else PARTIAL


def carriers(merged: Sequence[Span], step_us: int) -> list[int]:
    """Per covered stretch, the earliest open time of a candle whose close it may carry into quiet buckets.

    A bucket without trades repeats the close of the last candle before it, which must lie in the same
    covered stretch, so that no unseen trade can have moved the price since. A candle that straddles
    the stretch's start carries too (its trades are all inside the stretch), unless the stretch before
    also reaches into it: then its last trade may lie before the loss, and nothing after it is known.
    """
    found = []
    for index, (span_start, _) in enumerate(merged):
        straddled = span_start - span_start % step_us
        shared = straddled < span_start and index > 0 and merged[index - 1][1] > straddled
        found.append(straddled + step_us if shared else straddled)
    return found


def complete_buckets(
    merged: Sequence[Span], start_us: int, end_us: int, step_us: int
) -> Iterator[tuple[int, int, int]]:
    """(bucket open, stretch start, earliest carrier) for every bucket of [start_us, end_us) covered throughout.

    Buckets are aligned on the epoch and lie inside [start_us, end_us) as a whole; see `carriers`. A
    close from before the range (the lookback) carries when its trade is at or after the stretch start.
    """
    for (span_start, span_end), carrier in zip(merged, carriers(merged, step_us), strict=True):
        lo = max(span_start, start_us)
        first = -(-lo // step_us) * step_us  # the first bucket open at or after lo
        last_end = min(span_end, end_us)
        for open_us in range(first, last_end - step_us + 1, step_us):
            yield open_us, span_start, carrier


# --- where a file's coverage comes from -------------------------------------------------------------


def dump_span(name: str) -> Span | None:
    """The UTC day or month a data.binance.vision file name says it holds, or None for other names."""
    found = _DUMP_NAME.match(name)
    if found is None:
        return None
    year, month, day = int(found[1]), int(found[2]), found[3]
    if day is not None:
        first = date(year, month, int(day))
        after = first + timedelta(days=1)
    else:
        first = date(year, month, 1)
        after = date(year + month // 12, month % 12 + 1, 1)
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    return to_us(start), to_us(datetime.combine(after, datetime.min.time(), tzinfo=UTC))


# --- the table ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    """One row of the `coverage` table: `source` saw every trade of the market in [started_us, ended_us)."""

    exchange: str
    symbol: str
    source: str
    kind: str
    started_us: int
    ended_us: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"coverage kind {self.kind!r}: one of {', '.join(KINDS)}")
        if self.ended_us < self.started_us:
            raise ValueError(f"coverage of {self.exchange}:{self.symbol} ends before it starts")


# The end is the writer's latest word: a live session first extended by health beats is cut back to the
# moment its connection was lost. Writing the same row twice (a replay of the same file) changes nothing.
_UPSERT = """
    INSERT INTO coverage (exchange, symbol, source, kind, started_at, ended_at)
    SELECT e, s, src, k, to_timestamp(a / 1e6), to_timestamp(b / 1e6)
      FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[]) AS r(e, s, src, k, a, b)
    ON CONFLICT (exchange, symbol, source, started_at) DO UPDATE
       SET ended_at = EXCLUDED.ended_at, kind = EXCLUDED.kind, recorded_at = now()
     WHERE coverage.ended_at IS DISTINCT FROM EXCLUDED.ended_at
"""


def record(cur: Any, intervals: Sequence[Interval]) -> None:
    """Write `intervals` with an open cursor (one statement, whatever their number)."""
    if not intervals:
        return
    columns = zip(*[(i.exchange, i.symbol, i.source, i.kind, i.started_us, i.ended_us) for i in intervals], strict=True)
    cur.execute(_UPSERT, [list(c) for c in columns])


def record_dsn(dsn: str, intervals: Sequence[Interval]) -> None:
    """Write `intervals` on a connection of its own."""
    import psycopg2

    if not intervals:
        return
    conn = psycopg2.connect(dsn, connect_timeout=5, application_name="candlelake-coverage")
    try:
        with conn, conn.cursor() as cur:
            record(cur, intervals)
    finally:
        conn.close()


class CoverageStore:
    """Writes a long-running producer's coverage on one connection, reopened after a failure."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: Any = None

    def write(self, intervals: Sequence[Interval]) -> None:
        """Upsert `intervals`; raises on a database error (the caller keeps them for the next try)."""
        import psycopg2

        if not intervals:
            return
        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(self.dsn, connect_timeout=5, application_name="candlelake-coverage")
        try:
            with self._conn, self._conn.cursor() as cur:
                record(cur, intervals)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def recording_intervals(
    exchange_symbol_spans: dict[tuple[str, str], Span],
    name: str,
    source: str,
    holes: dict[tuple[str, str], list[Span]] | None = None,
) -> list[Interval]:
    """The coverage of a replayed file named `name`: per market, the day or month a data.binance.vision
    name says it holds (widened to the trades if any lie outside), else its first to its last trade,
    less the market's `holes` (where its trade ids skip: trades the file does not hold).

    `exchange_symbol_spans` maps (exchange, symbol) to (first trade us, last trade us); the end is one
    microsecond after the last trade, so that trade lies inside the half-open interval.
    """
    named = dump_span(name)
    found = []
    for market, (first, last) in sorted(exchange_symbol_spans.items()):
        start, end = first, last + 1
        if named is not None:
            start, end = min(start, named[0]), max(end, named[1])
        for piece in subtract([(start, end)], (holes or {}).get(market, [])):
            found.append(Interval(market[0], market[1], source, "replay", *piece))
    return found


def subtract(spans: Sequence[Span], cuts: Iterable[Span]) -> list[Span]:
    """`spans` (merged) less every span of `cuts`."""
    result = list(spans)
    for cut_start, cut_end in merge(cuts):
        pieces = []
        for start, end in result:
            if cut_end <= start or cut_start >= end:
                pieces.append((start, end))
                continue
            if start < cut_start:
                pieces.append((start, cut_start))
            if cut_end < end:
                pieces.append((cut_end, end))
        result = pieces
    return result


def gap_fill_span(before_us: int | None, inside: Sequence[int], after_us: int | None) -> Span | None:
    """The time a trade-id gap filled whole covers, given the times of its trades (`inside`) and of the
    trades just before and after it, when the exchange returned those.

    Every trade between the one before the gap and the one after it is now known (ids rise with time):
    from the first to the second, both included. Without a neighbour, the gap's own first or last trade
    bounds it. None when nothing was fetched.
    """
    if not inside and (before_us is None or after_us is None):
        return None
    start = before_us if before_us is not None else min(inside)
    end = (after_us if after_us is not None else max(inside)) + 1
    return (start, end) if end > start else None


class IdHoles:
    """Where a recording's trade ids skip, per market, as the time nothing is known about.

    Binance (trade and aggregate) and Coinbase ids rise by one per trade of a market, so a skip means
    trades the file does not hold: between the trade before the skip and the one after, coverage is cut
    (both trades' own microseconds included: another trade may share either). A trade arriving out of
    order can only make a cut too many, never one too few.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[int, int]] = {}
        self.holes: dict[tuple[str, str], list[Span]] = {}

    def add(self, market: tuple[str, str], trade_id: int, time_us: int) -> None:
        previous = self._last.get(market)
        if previous is not None and trade_id > previous[0] + 1:
            self.holes.setdefault(market, []).append((min(previous[1], time_us), max(previous[1], time_us) + 1))
        if previous is None or trade_id > previous[0]:
            self._last[market] = (trade_id, time_us)


_MARKETS = """
    SELECT DISTINCT symbol FROM coverage
     WHERE exchange = %s AND ended_at > %s AND started_at < %s
"""
# lower()/upper() of each range of the multirange; microseconds, so no float rounds a bound.
_SPANS = """
    SELECT (extract(epoch FROM lower(r)) * 1000000)::bigint, (extract(epoch FROM upper(r)) * 1000000)::bigint
      FROM unnest(market_coverage(%s, %s, %s, %s)) AS r
     ORDER BY 1
"""


def load(
    cur: Any, exchange: str, start: datetime, end: datetime, symbols: Iterable[str] | None = None
) -> dict[str, list[Span]]:
    """Merged coverage of [start, end) per symbol of `exchange` (every covered symbol when None)."""
    if symbols is None:
        cur.execute(_MARKETS, (exchange, start, end))
        symbols = [row[0] for row in cur.fetchall()]
    spans: dict[str, list[Span]] = {}
    for symbol in symbols:
        cur.execute(_SPANS, (exchange, symbol, start, end))
        spans[symbol] = merge((int(a), int(b)) for a, b in cur.fetchall())
    return spans


def load_dsn(
    dsn: str, exchange: str, start: datetime, end: datetime, symbols: Iterable[str] | None = None
) -> dict[str, list[Span]]:
    import psycopg2

    conn = psycopg2.connect(dsn, connect_timeout=5, application_name="candlelake-coverage")
    try:
        with conn, conn.cursor() as cur:
            return load(cur, exchange, start, end, symbols)
    finally:
        conn.close()


# --- live sessions ----------------------------------------------------------------------------------


class LiveSessions:
    """The coverage of a running producer: one session per market from its connection to its loss.

    Not thread-safe; the pipeline calls it under its own lock. `connected`/`lost` follow the feed's
    Reconnected/Disconnect events; `rows(now)` is what to write now (open sessions extended to `now`,
    and sessions closed since the last call, once).
    """

    def __init__(self, source: str, kind: str = "live") -> None:
        self.source = source
        self.kind = kind
        self._open: dict[tuple[str, str], int] = {}
        self._closed: list[Interval] = []

    def connected(self, exchange: str, symbols: Iterable[str], now_us: int) -> None:
        for symbol in symbols:
            self._open.setdefault((exchange, symbol), now_us)

    def lost(self, exchange: str, symbols: Iterable[str], at_us: int) -> None:
        """The connection carrying `symbols` was lost at `at_us`: their sessions end there."""
        for symbol in symbols:
            started = self._open.pop((exchange, symbol), None)
            if started is not None:
                self._closed.append(Interval(exchange, symbol, self.source, self.kind, started, max(started, at_us)))

    def close_all(self, now_us: int) -> None:
        for exchange, symbol in list(self._open):
            self.lost(exchange, [symbol], now_us)

    def rows(self, now_us: int) -> list[Interval]:
        closed, self._closed = self._closed, []
        current = [
            Interval(exchange, symbol, self.source, self.kind, started, max(started, now_us))
            for (exchange, symbol), started in self._open.items()
        ]
        return closed + current

    def add(self, interval: Interval) -> None:
        """A finished interval of another kind (a REST backfill's) to write with the next rows."""
        self._closed.append(interval)

    def requeue(self, rows: Iterable[Interval]) -> None:
        """Rows a failed write did not store: closed ones are kept for the next write (open ones are redone)."""
        self._closed[:0] = [r for r in rows if self._open.get((r.exchange, r.symbol)) != r.started_us]
