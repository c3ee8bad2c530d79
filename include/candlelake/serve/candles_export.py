"""Read candles at any bucket from PostgreSQL for one market and time range; write them as CSV or JSON.

Candles are rolled up from the base candles by `candlelake.serve.rollups` (Binance's rules, empty intervals
filled on read where the market was watched); each row also says its vwap, state, whether it was
`filled` (no stored candle) and its `coverage`: 'complete' when the market was observed throughout the
bucket, 'partial' when some of it was not (the values hold only the trades that were seen). A bucket
without trades that nobody watched is not in the output at all: unknown, not quiet.

Decimals leave PostgreSQL as text (`trim_scale` drops the trailing zeros NUMERIC keeps from Spark's
fixed scale), so no float ever rounds them; times are UTC ISO 8601.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

import psycopg2

from candlelake.serve import rollups

COLUMNS = rollups.COLUMNS  # open_time ... taker_buy_quote_volume, then vwap, state, filled, coverage


class ExportError(ValueError):
    """A request a person must correct; the message says what is wrong."""


@dataclass(frozen=True)
class CandleRequest:
    exchange: str
    symbol: str
    interval: str
    start: datetime
    end: datetime
    bucket: rollups.Bucket
    base_seconds: int = 60


def parse_time(text: str, name: str) -> datetime:
    """ISO 8601 date or date-time; without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ExportError(f"{name} {text!r} is not an ISO 8601 time such as 2026-11-22T10:00:00Z") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def make_request(
    exchange: str, symbol: str, interval: str, start: str, end: str, base_seconds: int = 60
) -> CandleRequest:
    """Validate a request: any bucket (1m, 5m, 45m, 4h, 1d, 1w, ...), an ISO range, at most 100,000 rows."""
    try:
        bucket = rollups.parse_bucket(interval, base_seconds)
    except rollups.RollupError as exc:
        raise ExportError(str(exc)) from None
    req = CandleRequest(
        exchange.strip().lower(),
        symbol.strip().upper(),
        interval,
        parse_time(start, "--start"),
        parse_time(end, "--end"),
        bucket,
        base_seconds,
    )
    if req.end <= req.start:
        raise ExportError(f"--end ({end}) must be after --start ({start})")
    try:
        rollups.plan(bucket, req.start, req.end, base_seconds)
    except rollups.RollupError as exc:
        raise ExportError(str(exc)) from None
    return req


def fetch(dsn: str, req: CandleRequest) -> list[tuple[object, ...]]:
    """The candles of `req` (quiet intervals filled where covered); an unknown market is an ExportError."""
    conn = psycopg2.connect(dsn, connect_timeout=5)
    try:
        try:
            rows = rollups.fetch_rollup(
                conn, req.exchange, req.symbol, req.bucket, req.start, req.end, req.base_seconds
            )
        except rollups.RollupError as exc:
            raise ExportError(str(exc)) from None
        if rows:
            return rows
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM candles WHERE exchange = %s AND symbol = %s LIMIT 1", (req.exchange, req.symbol))
            if cur.fetchone() is not None:
                return rows
            cur.execute("SELECT DISTINCT exchange || ':' || symbol FROM candles ORDER BY 1 LIMIT 50")
            known = ", ".join(r[0] for r in cur.fetchall()) or "none yet"
    finally:
        conn.close()
    raise ExportError(f"no candles at all for {req.exchange}:{req.symbol}; markets with candles: {known}")


def write(rows: list[tuple[object, ...]], fmt: str, out: TextIO) -> None:
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    elif fmt == "json":
        json.dump([dict(zip(COLUMNS, row, strict=True)) for row in rows], out, indent=1)
        out.write("\n")
    else:
        raise ExportError(f"format {fmt!r} is not one of csv, json")
