"""Read candles from PostgreSQL for one market and time range, and write them as CSV or JSON.

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
)
BASE_INTERVALS = {"1m": "1 minute", "1s": "1 second"}

QUERY = """
    SELECT to_char(open_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           trim_scale(open)::text, trim_scale(high)::text, trim_scale(low)::text, trim_scale(close)::text,
           trim_scale(volume)::text, trim_scale(quote_volume)::text, trades,
           trim_scale(taker_buy_volume)::text, trim_scale(taker_buy_quote_volume)::text
      FROM candles
     WHERE exchange = %(exchange)s AND symbol = %(symbol)s
       AND open_time >= %(start)s AND open_time < %(end)s
     ORDER BY open_time
"""


class ExportError(ValueError):
    """A request a person must correct; the message says what is wrong."""


@dataclass(frozen=True)
class CandleRequest:
    exchange: str
    symbol: str
    interval: str
    start: datetime
    end: datetime


def parse_time(text: str, name: str) -> datetime:
    """ISO 8601 date or date-time; without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ExportError(f"{name} {text!r} is not an ISO 8601 time such as 2026-11-22T10:00:00Z") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def make_request(exchange: str, symbol: str, interval: str, start: str, end: str) -> CandleRequest:
    if interval not in BASE_INTERVALS:
        raise ExportError(f"interval {interval!r} is not served yet; available: {', '.join(BASE_INTERVALS)}")
    req = CandleRequest(
        exchange.strip().lower(),
        symbol.strip().upper(),
        interval,
        parse_time(start, "--start"),
        parse_time(end, "--end"),
    )
    if req.end <= req.start:
        raise ExportError(f"--end ({end}) must be after --start ({start})")
    return req


def fetch(dsn: str, req: CandleRequest) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(dsn, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(QUERY, {"exchange": req.exchange, "symbol": req.symbol, "start": req.start, "end": req.end})
            rows = cur.fetchall()
            if rows:
                return rows
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
