"""Rows the dashboard tests put into the platform's PostgreSQL, and the truth to check the pages against.

The main market is Binance's own XRP/ETH 1m klines of 2019-10-11 to 2019-10-13 11:19 (tests/fixtures/
klines: exact decimals, 1,091 quiet minutes among 3,560) stored as candles under an exchange name no real
source uses, unique per run, so parallel runs and a live platform are never disturbed. Trade ids are
numbered through the minutes in order (the klines carry counts, not ids) so that a gap-ledger entry can
be placed between two candles. A second market holds a few recent minutes (the live end of a chart),
a third (LONGUSDT) 8 days of synthetic minutes, more than one view draws at 1m. Each market is covered
(table `coverage`) from its first to the end of its last minute, as a replay of its files or a live feed
would record it, so its quiet minutes are quiet candles, not unknown time (see `market_coverage`).
Everything seeded is deleted by `Seed.delete`.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2.extras import execute_values

from candlelake import candle, coverage
from candlelake.candle import Candle
from candlelake.util import to_us

KLINES = Path(__file__).resolve().parents[1] / "fixtures" / "klines"
KLINE_DAYS = ("2019-10-11", "2019-10-12", "2019-10-13")
SYMBOL = "XRPETH"
RECENT_SYMBOL = "ALTUSDT"
LONG_SYMBOL = "LONGUSDT"

CANDLE_COLUMNS: tuple[str, ...] = (*candle.COLUMNS, "state")
# One statement per market: the rollup triggers run per statement, so this is one rollup pass, not one
# per row (15 s for the 3,570 rows row by row).
INSERT_CANDLES = f"INSERT INTO candles ({', '.join(CANDLE_COLUMNS)}) VALUES %s"
CANDLE_TEMPLATE = "(" + ", ".join(f"%({c})s" for c in CANDLE_COLUMNS) + ")"


def klines() -> list[Candle]:
    """The fixture's 1m klines, oldest first, exactly as Binance published them."""
    out = []
    for day in KLINE_DAYS:
        with (KLINES / f"{SYMBOL}-1m-{day}.csv").open() as f:
            for r in csv.reader(f):
                out.append(
                    Candle(
                        datetime.fromtimestamp(int(r[0]) / 1000, UTC),
                        Decimal(r[1]),
                        Decimal(r[2]),
                        Decimal(r[3]),
                        Decimal(r[4]),
                        Decimal(r[5]),
                        Decimal(r[7]),
                        int(r[8]),
                        Decimal(r[9]),
                        Decimal(r[10]),
                    )
                )
    return out


def candle_rows(exchange: str, source: Iterable[Candle]) -> list[dict[str, Any]]:
    """Candle rows for the klines; trade ids numbered through the minutes; days 1-2 curated, day 3 closed."""
    rows, next_id = [], 1
    for k in source:
        first_id = next_id if k.trades else None
        next_id += k.trades
        rows.append(
            {
                "exchange": exchange,
                "symbol": SYMBOL,
                "open_time": k.open_time,
                "close_time": k.open_time + timedelta(minutes=1) - timedelta(milliseconds=1),
                "open": k.open,
                "high": k.high,
                "low": k.low,
                "close": k.close,
                "volume": k.volume,
                "quote_volume": k.quote_volume,
                "trades": k.trades,
                "taker_buy_volume": k.taker_buy_volume,
                "taker_buy_quote_volume": k.taker_buy_quote_volume,
                "vwap": k.quote_volume / k.volume if k.volume else None,
                "first_trade_id": first_id,
                "last_trade_id": next_id - 1 if k.trades else None,
                "state": "curated" if k.open_time < datetime(2019, 10, 13, tzinfo=UTC) else "closed",
            }
        )
    return rows


def long_rows(exchange: str, days: int = 8) -> list[dict[str, Any]]:
    """A third market with more minutes than one view draws at 1m (8 days = 11,520), ending with XRPETH's
    data; every seventh minute is quiet. Prices are a deterministic zigzag in exact decimals."""
    end = datetime(2019, 10, 13, 11, 20, tzinfo=UTC)
    rows, close = [], Decimal("2.5")
    for i in range(days * 1440):
        open_time = end - timedelta(minutes=days * 1440 - i)
        quiet = i % 7 == 3
        previous = close
        if not quiet:
            close = previous + Decimal((i * 37) % 11 - 5) / 1000
        rows.append(
            {
                "exchange": exchange,
                "symbol": LONG_SYMBOL,
                "open_time": open_time,
                "close_time": open_time + timedelta(minutes=1) - timedelta(milliseconds=1),
                "open": previous,
                "high": max(previous, close),
                "low": min(previous, close),
                "close": close,
                "volume": Decimal(0) if quiet else Decimal(3),
                "quote_volume": Decimal(0) if quiet else close * 3,
                "trades": 0 if quiet else 3,
                "taker_buy_volume": Decimal(0),
                "taker_buy_quote_volume": Decimal(0),
                "vwap": None if quiet else close,
                "first_trade_id": None if quiet else 10 * i,
                "last_trade_id": None if quiet else 10 * i + 2,
                "state": "curated",
            }
        )
    return rows


def recent_rows(exchange: str, minutes: int = 10) -> list[dict[str, Any]]:
    """A few minutes up to now for a second market: closed, the newest one live."""
    newest = datetime.now(UTC).replace(second=0, microsecond=0)
    rows, previous = [], Decimal("100.5")
    for i in range(minutes):
        close = Decimal("100.5") + Decimal(i) / 4
        open_time = newest - timedelta(minutes=minutes - 1 - i)
        rows.append(
            {
                "exchange": exchange,
                "symbol": RECENT_SYMBOL,
                "open_time": open_time,
                "close_time": open_time + timedelta(minutes=1) - timedelta(milliseconds=1),
                "open": previous,
                "high": max(previous, close) + Decimal("0.1"),
                "low": min(previous, close) - Decimal("0.1"),
                "close": close,
                "volume": Decimal(2),
                "quote_volume": close * 2,
                "trades": 2,
                "taker_buy_volume": Decimal(1),
                "taker_buy_quote_volume": close,
                "vwap": close,
                "first_trade_id": 1000 + 2 * i,
                "last_trade_id": 1001 + 2 * i,
                "state": "live" if i == minutes - 1 else "closed",
            }
        )
        previous = close
    return rows


def covering(exchange: str, tag: str, *markets: list[dict[str, Any]]) -> list[coverage.Interval]:
    """One coverage interval per market, from its first candle's open to its last candle's end.

    The recent market's newest minute is still live; it is covered to its end, as if the feed's session
    had been extended past it, so that what the pages show does not depend on the second a test runs.
    """
    out = []
    for rows in markets:
        first, last = min(r["open_time"] for r in rows), max(r["open_time"] for r in rows)
        kind = "live" if rows[0]["symbol"] == RECENT_SYMBOL else "replay"
        out.append(
            coverage.Interval(
                exchange,
                rows[0]["symbol"],
                tag,
                kind,
                to_us(first),
                to_us(last + timedelta(minutes=1)),
            )
        )
    return out


# The seeded anomaly's candle: half an hour before the fixture's newest XRPETH kline.
ANOMALY_AT = datetime(2019, 10, 13, 10, 49, tzinfo=UTC)


@dataclass
class Seed:
    """What one test module put into PostgreSQL; `delete` removes all of it."""

    dsn: str
    exchange: str
    tag: str  # unique text in every seeded row that has no exchange column
    candles: list[dict[str, Any]]
    recent: list[dict[str, Any]]
    long: list[dict[str, Any]]
    coverage: list[coverage.Interval] = field(default_factory=list)
    gap_id: int | None = None
    gap_minute: datetime | None = None  # the minute the seeded open trade-id gap lies in
    load_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def delete(self) -> None:
        with psycopg2.connect(self.dsn, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM candles WHERE exchange = %s", (self.exchange,))
            for table in (
                "coverage",
                "trade_gaps",
                "quality_runs",
                "curated_loads",
                "kline_reconciliations",
                "alerts",
                "alert_rules",
            ):
                cur.execute(f"DELETE FROM {table} WHERE exchange = %s", (self.exchange,))
            cur.execute("DELETE FROM dead_letter_counts WHERE source = %s", (self.tag,))
            cur.execute("DELETE FROM health_checks WHERE run_id = %s", (self.tag,))
            cur.execute("DELETE FROM supervisor_checks WHERE run_id = %s", (self.tag,))
            cur.execute("DELETE FROM producer_health WHERE producer = %s", (self.tag,))
            cur.execute("DELETE FROM stream_progress WHERE run_id = %s", (self.tag,))
        conn.close()


def seed(dsn: str, docs_root: Path, *, with_operations: bool = True) -> Seed:
    """Candles of the three markets and their coverage, an open trade-id gap in the XRPETH data (without
    times: it leaves the coverage whole), and (with_operations) a failed and a passed validation, a curated
    load with one correction, dead letters, health and supervisor checks, a producer and streaming
    progress, all marked with a unique tag.

    Operational rows are dated an hour ahead so that they are the newest even while a live platform
    writes its own checks next to them.
    """
    tag = f"test-dashboard-{uuid.uuid4().hex[:8]}"
    exchange = tag
    candles = candle_rows(exchange, klines())
    recent = recent_rows(exchange)
    long = long_rows(exchange)
    s = Seed(dsn, exchange, tag, candles, recent, long, covering(exchange, tag, candles, recent, long))
    ahead = datetime.now(UTC) + timedelta(hours=1)
    with psycopg2.connect(dsn, connect_timeout=5) as conn, conn.cursor() as cur:
        for rows in (candles, recent, long):
            execute_values(cur, INSERT_CANDLES, rows, template=CANDLE_TEMPLATE, page_size=len(rows))
        coverage.record(cur, s.coverage)
        # An open gap of three ids inside the busiest minute of 2019-10-12 12:00-13:00.
        busy = max(
            (c for c in candles if c["open_time"].hour == 12 and c["open_time"].day == 12),
            key=lambda c: c["trades"],
        )
        s.gap_minute = busy["open_time"]
        first = busy["first_trade_id"] + 1
        cur.execute(
            "INSERT INTO trade_gaps (exchange, symbol, kind, first_id, last_id, cause, source) "
            "VALUES (%s, %s, 'trade_ids', %s, %s, 'ids skipped in the stream', %s) RETURNING gap_id",
            (exchange, SYMBOL, first, first + 2, tag),
        )
        s.gap_id = cur.fetchone()[0]
        if with_operations:
            _seed_operations(cur, s, docs_root, ahead)
    conn.close()
    return s


def _seed_operations(cur: Any, s: Seed, docs_root: Path, ahead: datetime) -> None:
    failure = {
        "expectation": "expect_column_pair_values_a_to_be_greater_than_b",
        "check": "open <= high",
        "columns": ["high", "open"],
        "observed": "1 of 1440 rows",
        "unexpected_count": 1,
        "sample": [{"symbol": SYMBOL, "open_time": "2019-10-11T01:07:00Z", "high": "0.00141728", "open": "0.00141794"}],
    }
    docs = docs_root / "validations" / s.tag / "candles.html"
    cur.execute(
        "INSERT INTO quality_runs (run_id, exchange, trade_date, suite, success, evaluated, failed, rows_validated, "
        "failures, docs_path, validated_at) VALUES "
        "(%s, %s, '2019-10-11', 'candles', false, 14, 1, 1440, %s, %s, %s), "
        "(%s, %s, '2019-10-11', 'trades', true, 9, 0, 9182, '[]', NULL, %s)",
        (s.tag, s.exchange, json.dumps([failure]), str(docs), ahead, s.tag, s.exchange, ahead),
    )
    cur.execute(
        "INSERT INTO curated_loads (run_id, exchange, trade_date, fingerprint, candles, inserted, changed, unchanged,"
        " loaded_at) VALUES (%s, %s, '2019-10-12', 'f', 1440, 2, 1, 1437, %s) RETURNING load_id",
        (s.tag, s.exchange, ahead),
    )
    s.load_id = cur.fetchone()[0]
    cur.execute(
        "INSERT INTO candle_corrections (load_id, exchange, symbol, open_time, was_state, before, after) "
        "VALUES (%s, %s, %s, '2019-10-12T05:00:00Z', 'closed', %s, %s)",
        (
            s.load_id,
            s.exchange,
            SYMBOL,
            json.dumps({"close": "0.0014100000", "trades": 3}),
            json.dumps({"close": "0.00142", "trades": 4}),
        ),
    )
    cur.execute(
        "INSERT INTO dead_letter_counts (day, source, code, count, last_reason, last_raw, first_at, last_at) "
        "VALUES (%s, %s, 'not-finite', 7, 'price ''NaN'' is not a finite number', '{}', %s, %s), "
        "(%s, %s, 'missing-field', 2, 'missing field ''p''', '{}', %s, %s)",
        (ahead.date(), s.tag, ahead, ahead, ahead.date(), s.tag, ahead, ahead),
    )
    cur.execute(
        "INSERT INTO health_checks (run_id, component, healthy, detail, checked_at) VALUES "
        "(%s, 'postgres', true, %s, %s), (%s, 'kafka', false, %s, %s)",
        (s.tag, f"accepting connections ({s.tag})", ahead, s.tag, f"broker not answering ({s.tag})", ahead),
    )
    metrics = {"queries": {f"q_{s.tag}": {"lag": 1234, "input_rate": 5.0, "processing_rate": 7.5}}}
    cur.execute(
        "INSERT INTO supervisor_checks (run_id, component, state, action, detail, metrics, checked_at) VALUES "
        "(%s, 'stream', 'healthy', 'none', %s, %s, %s), (%s, 'producer', 'stuck', 'restarted', %s, '{}', %s)",
        (s.tag, f"streaming job fine ({s.tag})", json.dumps(metrics), ahead, s.tag, f"no heartbeat ({s.tag})", ahead),
    )
    cur.execute(
        "INSERT INTO producer_health (producer, source, pid, started_at, heartbeat_at, received, produced, rejected,"
        " duplicates, gaps, reconnects) VALUES (%s, 'simulator', 4242, %s, %s, 1000, 990, 9, 1, 2, 3)",
        (s.tag, ahead - timedelta(seconds=100), ahead),
    )
    cur.execute(
        "INSERT INTO stream_progress (query_name, run_id, batch_id, batch_time, num_input_rows, input_rows_per_second,"
        " processed_rows_per_second, duration_ms, watermark, recorded_at) VALUES "
        "(%s, %s, 41, %s, 50, 5.0, 7.5, 321, %s, %s), (%s, %s, 42, %s, 60, 6.0, 8.0, 123, %s, %s)",
        (
            f"q_{s.tag}",
            s.tag,
            ahead,
            ahead - timedelta(minutes=2),
            ahead - timedelta(seconds=5),
            f"q_{s.tag}",
            s.tag,
            ahead,
            ahead - timedelta(minutes=2),
            ahead,
        ),
    )
    # Two alerts the scorer would have raised: a pump of the XRPETH candle half an hour before the
    # newest kline (the chart's 6h window holds it), and a crossed price rule.
    cur.execute(
        "INSERT INTO alerts (type, exchange, symbol, at, kind, detector, score, features, candle_closed_at, raised_at,"
        " webhook_status) VALUES ('anomaly', %s, %s, %s, 'pump', 'rules', 1.75, '{}', %s, %s, 'delivered') "
        "RETURNING id",
        (s.exchange, SYMBOL, ANOMALY_AT, ahead - timedelta(seconds=2), ahead),
    )
    s.extra["anomaly_id"] = cur.fetchone()[0]
    cur.execute(
        "INSERT INTO alerts (type, exchange, symbol, at, kind, detector, price, features, raised_at) "
        "VALUES ('price', %s, %s, %s, 'above', 'rule:0', 0.00155, %s, %s) RETURNING id",
        (s.exchange, SYMBOL, ANOMALY_AT, json.dumps({"level": "0.0015", "note": s.tag}), ahead),
    )
    s.extra["price_alert_id"] = cur.fetchone()[0]
