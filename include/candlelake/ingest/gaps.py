"""Trade-id gaps: found as trades arrive (`GapTracker`), kept in PostgreSQL (`GapLedger`).

Exchanges number each market's trades without holes (Binance aggregate ids, Coinbase trade ids), so a
trade whose id is more than one above the last one seen means trades were missed: a dropped
connection, a stall, a rotation that did not overlap. The tracker keeps, per market, the highest id
seen and the ranges of ids below it not seen yet:

- an id above the highest opens a *hole* for the ids skipped;
- an id inside a hole is a late arrival (two connections overlapping during a rotation deliver out of
  order): it fills its part of the hole and is new;
- any other id at or below the highest has been seen: a duplicate, dropped.

A hole still open after a grace period (`due`) becomes a *gap*: recorded in the ledger with its
cause and handed to the backfill, which fetches exactly those ids from the exchange's REST API. Ids of
a declared gap that arrive later anyway (or from the backfill) still fill it, once each, so nothing is
lost and nothing is counted twice.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Gap kinds in the ledger: ids missing between trades that arrived, ids missing at the end of a stream
# (a heartbeat named a later id), trades Kafka did not take, intervals without a connection.
TRADE_IDS = "trade_ids"
DELIVERY = "delivery"
DISCONNECT = "disconnect"


@dataclass
class Hole:
    first: int
    last: int
    found_at: float  # monotonic seconds
    cause: str
    gap_id: int | None = None  # set once declared and recorded

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass
class _Market:
    high: int | None = None
    holes: list[Hole] = field(default_factory=list)  # disjoint, sorted by first


@dataclass(frozen=True)
class Gap:
    """A declared gap: ids [first_id, last_id] of one market, missing since `found_at`."""

    exchange: str
    symbol: str
    first_id: int
    last_id: int
    cause: str
    gap_id: int | None = None
    kind: str = TRADE_IDS

    @property
    def size(self) -> int:
        return self.last_id - self.first_id + 1


class GapTracker:
    """Per-market trade-id bookkeeping: new or duplicate for each id, and the holes between them.

    Not thread-safe: the pipeline calls it under its own lock.
    """

    def __init__(self, grace_s: float = 5.0) -> None:
        self.grace_s = grace_s
        self._markets: dict[tuple[str, str], _Market] = {}

    def seed(self, exchange: str, symbol: str, last_trade_id: int) -> None:
        """Start from the last id a previous run produced, so ids missed while it was down become a gap."""
        market = self._markets.setdefault((exchange, symbol), _Market())
        if market.high is None or last_trade_id > market.high:
            market.high = last_trade_id

    def high(self, exchange: str, symbol: str) -> int | None:
        market = self._markets.get((exchange, symbol))
        return market.high if market else None

    def highs(self) -> dict[tuple[str, str], int]:
        return {k: m.high for k, m in self._markets.items() if m.high is not None}

    def observe(self, exchange: str, symbol: str, trade_id: int, now: float, cause: str = "") -> bool:
        """Record a trade id; True when it is new, False for a duplicate."""
        market = self._markets.setdefault((exchange, symbol), _Market())
        if market.high is None:
            market.high = trade_id
            return True
        if trade_id > market.high:
            if trade_id > market.high + 1:
                market.holes.append(Hole(market.high + 1, trade_id - 1, now, cause or "trade ids skipped"))
            market.high = trade_id
            return True
        return self._fill(market, trade_id)

    def mark(self, exchange: str, symbol: str, last_trade_id: int, now: float, cause: str = "") -> None:
        """The exchange says `last_trade_id` exists (a heartbeat): ids above the highest seen are missing."""
        market = self._markets.setdefault((exchange, symbol), _Market())
        if market.high is None:
            market.high = last_trade_id
        elif last_trade_id > market.high:
            reason = cause or "a heartbeat named trades that never arrived"
            market.holes.append(Hole(market.high + 1, last_trade_id, now, reason))
            market.high = last_trade_id

    def _fill(self, market: _Market, trade_id: int) -> bool:
        holes = market.holes
        i = bisect.bisect_right([h.first for h in holes], trade_id) - 1
        if i < 0 or holes[i].last < trade_id:
            return False
        hole = holes[i]
        if hole.first == hole.last:
            del holes[i]
        elif trade_id == hole.first:
            hole.first += 1
        elif trade_id == hole.last:
            hole.last -= 1
        else:
            right = Hole(trade_id + 1, hole.last, hole.found_at, hole.cause, hole.gap_id)
            hole.last = trade_id - 1
            holes.insert(i + 1, right)
        return True

    def forget(self, exchange: str, symbol: str, first: int, last: int) -> int:
        """Stop waiting for ids in [first, last] (the exchange does not have them); how many were missing."""
        market = self._markets.get((exchange, symbol))
        if market is None:
            return 0
        kept: list[Hole] = []
        dropped = 0
        for hole in market.holes:
            if hole.last < first or hole.first > last:
                kept.append(hole)
                continue
            dropped += min(hole.last, last) - max(hole.first, first) + 1
            if hole.first < first:
                kept.append(Hole(hole.first, first - 1, hole.found_at, hole.cause, hole.gap_id))
            if hole.last > last:
                kept.append(Hole(last + 1, hole.last, hole.found_at, hole.cause, hole.gap_id))
        market.holes = kept
        return dropped

    def is_missing(self, exchange: str, symbol: str, trade_id: int) -> bool:
        market = self._markets.get((exchange, symbol))
        return bool(market) and any(h.first <= trade_id <= h.last for h in market.holes)  # type: ignore[union-attr]

    def due(self, now: float) -> list[tuple[str, str, Hole]]:
        """Holes open for longer than the grace period and not declared yet (the caller declares them)."""
        return [
            (exchange, symbol, hole)
            for (exchange, symbol), market in self._markets.items()
            for hole in market.holes
            if hole.gap_id is None and now - hole.found_at >= self.grace_s
        ]

    def open_holes(self, exchange: str, symbol: str) -> list[Hole]:
        market = self._markets.get((exchange, symbol))
        return list(market.holes) if market else []

    def missing_ids(self) -> int:
        return sum(h.size for m in self._markets.values() for h in m.holes)


# --- the ledger ---------------------------------------------------------------------------------------

_INSERT_IDS = """
    INSERT INTO trade_gaps (exchange, symbol, kind, first_id, last_id, cause, source)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (exchange, symbol, kind, first_id, last_id) WHERE first_id IS NOT NULL
    DO UPDATE SET cause = EXCLUDED.cause
    RETURNING gap_id
"""
_INSERT_DISCONNECT = """
    INSERT INTO trade_gaps (exchange, symbol, kind, started_at, ended_at, cause, source, status, closed_at)
    VALUES (%s, %s, 'disconnect', %s, %s, %s, %s, 'recorded', now())
"""
_CLOSE = """
    UPDATE trade_gaps SET status = %s, filled = coalesce(filled, 0) + %s, not_found = %s,
                          note = coalesce(%s, note),  -- an earlier failed attempt's note stays
                          closed_at = now()
     WHERE gap_id = %s
"""
_NOTE = "UPDATE trade_gaps SET note = %s, attempts = attempts + 1, last_attempt_at = now() WHERE gap_id = %s"
_OPEN = """
    SELECT gap_id, exchange, symbol, first_id, last_id, cause, kind
      FROM trade_gaps
     WHERE status = 'open' AND first_id IS NOT NULL
       AND (%(exchange)s::text IS NULL OR exchange = %(exchange)s)
       AND (%(symbol)s::text IS NULL OR symbol = %(symbol)s)
       AND (%(gap_id)s::bigint IS NULL OR gap_id = %(gap_id)s)
     ORDER BY detected_at, gap_id
"""
_SAVE_POSITIONS = """
    INSERT INTO ingest_positions (exchange, symbol, last_trade_id, updated_at)
    SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS p, now()
    ON CONFLICT (exchange, symbol) DO UPDATE
       SET last_trade_id = greatest(ingest_positions.last_trade_id, EXCLUDED.last_trade_id), updated_at = now()
"""


def _ts(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, UTC)


class GapLedger:
    """The `trade_gaps` table (sql/schema.sql): one row per missing id range or disconnect interval."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: Any = None

    def _cursor(self) -> Any:
        import psycopg2

        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(self.dsn, connect_timeout=5, application_name="candlelake-gaps")
            self._conn.autocommit = True
        return self._conn.cursor()

    def record_ids(
        self, exchange: str, symbol: str, first_id: int, last_id: int, cause: str, source: str, kind: str = TRADE_IDS
    ) -> int:
        """Record missing ids [first_id, last_id]; the same range again is the same row. Returns its id."""
        with self._cursor() as cur:
            cur.execute(_INSERT_IDS, (exchange, symbol, kind, first_id, last_id, cause, source))
            return int(cur.fetchone()[0])

    def record_disconnect(
        self, exchange: str, symbols: Iterable[str], started_us: int, ended_us: int, cause: str, source: str
    ) -> None:
        """One row per symbol the connection carried, so a market's history shows its own outages."""
        with self._cursor() as cur:
            for symbol in symbols:
                cur.execute(_INSERT_DISCONNECT, (exchange, symbol, _ts(started_us), _ts(ended_us), cause, source))

    def close(self, gap_id: int, filled: int, not_found: int, note: str = "") -> None:
        """The backfill is done: 'filled' when every id came back, 'unfillable' when some never will."""
        status = "filled" if not_found == 0 else "unfillable"
        with self._cursor() as cur:
            cur.execute(_CLOSE, (status, filled, not_found, note or None, gap_id))

    def note_attempt(self, gap_id: int, note: str) -> None:
        with self._cursor() as cur:
            cur.execute(_NOTE, (note, gap_id))

    def open_gaps(self, exchange: str | None = None, symbol: str | None = None, gap_id: int | None = None) -> list[Gap]:
        with self._cursor() as cur:
            cur.execute(_OPEN, {"exchange": exchange, "symbol": symbol, "gap_id": gap_id})
            return [
                Gap(ex, sy, int(first), int(last), cause, int(gid), kind)
                for gid, ex, sy, first, last, cause, kind in cur.fetchall()
            ]

    def save_positions(self, highs: dict[tuple[str, str], int]) -> None:
        """The highest trade id produced per market, for the next run to start from (see GapTracker.seed)."""
        if not highs:
            return
        keys = sorted(highs)
        with self._cursor() as cur:
            cur.execute(_SAVE_POSITIONS, ([k[0] for k in keys], [k[1] for k in keys], [highs[k] for k in keys]))

    def positions(self, exchange: str) -> dict[str, int]:
        with self._cursor() as cur:
            cur.execute("SELECT symbol, last_trade_id FROM ingest_positions WHERE exchange = %s", (exchange,))
            return {symbol: int(last) for symbol, last in cur.fetchall()}

    def summary(self) -> Iterator[dict[str, object]]:
        with self._cursor() as cur:
            cur.execute(
                "SELECT exchange, symbol, kind, status, count(*), coalesce(sum(last_id - first_id + 1), 0) "
                "FROM trade_gaps GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
            )
            for exchange, symbol, kind, status, rows, ids in cur.fetchall():
                yield {
                    "exchange": exchange,
                    "symbol": symbol,
                    "kind": kind,
                    "status": status,
                    "rows": rows,
                    "ids": int(ids),
                }

    def close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def gap_json(gap: Gap) -> str:
    return json.dumps(gap.__dict__)
