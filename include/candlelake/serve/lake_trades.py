"""Raw trades from the lake, through DuckDB: a market's latest trades, the trades of any past minute (the
trades behind a candle), and ad-hoc read-only SQL (`candlelake sql "..."`).

What is read is what the nightly batch would read (candlelake.lake.catalog.day_files): per partition
(`exchange=E/trade_date=D`) the curated files its manifest names, plus the stream's bronze batches that
Spark has committed above the manifest. Files a crashed micro-batch or compaction left behind are never
read, and a folder is never listed for Parquet files: a trade is visible here once its batch committed,
seconds after it reached Kafka.

Bronze holds trades as they landed, copies included (a replayed batch, a producer restarted from its
last offset); the `trades` relation keeps one per (exchange, symbol, trade_id), the copy ingested first,
as candlelake.spark.transforms.dedupe_trades does, so the trades of a minute are exactly the ones its
curated candle counts. `raw_trades` is the lake as landed.

Read-only means: one SELECT (or EXPLAIN) per call, checked before it runs; the connection may open the
committed files and nothing else (DuckDB's `allowed_paths` with external access off, and the
configuration locked, so a query cannot widen it, write a file or attach a database).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from candlelake.config import Settings
from candlelake.lake import catalog
from candlelake.trade import CANDLE_INPUTS
from candlelake.util import first_line, utc

COLUMN_TYPES: dict[str, str] = {
    "exchange": "VARCHAR",
    "trade_date": "DATE",
    "symbol": "VARCHAR",
    "trade_id": "BIGINT",
    "price": "DECIMAL(28,10)",
    "qty": "DECIMAL(28,10)",
    "trade_time": "TIMESTAMPTZ",
    "is_buyer_maker": "BOOLEAN",
    "ingest_time": "TIMESTAMPTZ",
    "source": "VARCHAR",
}
"""`trades` and `raw_trades`: the trade, and the partition it is in (a filter on either skips files).
The types are the lake's (candlelake.spark.transforms.TRADE_SCHEMA)."""
_ALLOWED_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
# The copy kept of a trade: the one ingested first, ties broken by every other column (dedupe_trades).
_FIRST_COPY = "ORDER BY ingest_time ASC NULLS LAST, source ASC NULLS LAST, price, qty, trade_time, is_buyer_maker"
_VALID = " AND ".join(f"{name} IS NOT NULL" for name in CANDLE_INPUTS)
RECENT_LOOKBACK = timedelta(hours=24)
TAPE_SPANS = (timedelta(minutes=10), timedelta(hours=1))
MINUTE = timedelta(minutes=1)


class LakeQueryError(ValueError):
    """A query that cannot run here; the message says why in a line."""


@dataclass(frozen=True)
class Partition:
    exchange: str
    day: date
    files: tuple[Path, ...]
    deduplicated: bool = False
    """Only curated files: compaction kept each trade once, so reads skip the dedupe (its cost is most
    of a day's query: bench/lake_query.py). A trade's copies share its partition (the day is the trade's)."""


class Table:
    """A query's result as Arrow (columnar, exact decimals): `frame()` for pandas, `rows` and `records()`
    for Python values (Decimal, aware datetime), which cost about 10 us a row to build."""

    def __init__(self, arrow: pa.Table) -> None:
        self.arrow = arrow

    def __len__(self) -> int:
        return int(self.arrow.num_rows)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.arrow.column_names)

    @functools.cached_property
    def rows(self) -> list[tuple[Any, ...]]:
        return [tuple(r.values()) for r in self.arrow.to_pylist()]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def frame(self) -> pd.DataFrame:
        """pandas, decimals as exact `Decimal` objects (DuckDB's own `.df()` would make them floats)."""
        return self.arrow.to_pandas()


def partitions(settings: Settings, exchange: str | None = None, days: Iterable[date] | None = None) -> list[Partition]:
    """The committed files of every partition (of `exchange`, on `days`; all when None), bronze or curated."""
    wanted = None if days is None else set(days)
    found: set[tuple[str, date]] = set()
    for root in (settings.lake_dir, settings.curated_dir):
        for name, day, _ in catalog.bronze_partitions(root):
            if (exchange is None or name == exchange) and (wanted is None or day in wanted):
                found.add((name, day))
    checkpoint = catalog.lake_checkpoint(settings)
    out = []
    for name, day in sorted(found):
        files = catalog.day_files(settings.lake_dir, name, day, curated=settings.curated_dir, checkpoint=checkpoint)
        if files.files:
            out.append(Partition(name, day, tuple(files.files), deduplicated=not files.bronze_files))
    return out


class LakeTrades:
    """A read-only DuckDB connection over `partitions`' files, with the relations `trades` and `raw_trades`.

    Open one per request (it costs the file list, not the data: Parquet footers are read by the queries
    that need them); `close` it, or use it as a context manager."""

    def __init__(self, parts: Sequence[Partition], *, threads: int = 2, memory_limit: str = "1GB") -> None:
        files = [str(path) for part in parts for path in part.files]
        self._con = duckdb.connect(":memory:", config={"threads": threads, "memory_limit": memory_limit})
        self._con.execute("SET TimeZone = 'UTC'")
        for view, deduplicated in (("clean_trades", True), ("landed_trades", False)):
            chosen = [str(path) for part in parts if part.deduplicated == deduplicated for path in part.files]
            self._con.execute(f"CREATE VIEW {view} AS {_select(chosen)}")
        self._con.execute("CREATE VIEW raw_trades AS SELECT * FROM clean_trades UNION ALL SELECT * FROM landed_trades")
        self._con.execute(f"CREATE VIEW trades AS {_kept('true', ('exchange', 'symbol', 'trade_id'))}")
        # From here on the connection reads these files and nothing else, and cannot be reconfigured.
        self._con.execute(f"SET allowed_paths = {_list(files)}")
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET lock_configuration = true")

    def __enter__(self) -> LakeTrades:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def sql(self, query: str, params: Sequence[Any] | None = None) -> Table:
        """One read-only statement's result; LakeQueryError for anything else or a query DuckDB refuses."""
        try:
            statements = self._con.extract_statements(query)
        except duckdb.Error as exc:
            raise LakeQueryError(first_line(exc)) from None
        if len(statements) != 1:
            raise LakeQueryError(f"give one SQL statement, not {len(statements)}")
        if statements[0].type not in _ALLOWED_STATEMENTS:
            kind = statements[0].type.name
            raise LakeQueryError(f"the lake is read-only here: SELECT or EXPLAIN only, not {kind}")
        try:
            return Table(self._con.execute(query, params or []).to_arrow_table())
        except duckdb.Error as exc:
            raise LakeQueryError(first_line(exc)) from None

    def minute_candles(self, exchange: str, symbol: str, start: datetime, end: datetime) -> Table:
        """The 1m candles the trades of [start, end) make (MINUTE_CANDLES_SQL), oldest first."""
        params = {"exchange": exchange, "symbol": symbol, "start": utc(start), "end": utc(end)}
        return Table(self._con.execute(MINUTE_CANDLES_SQL, params).to_arrow_table())

    def newest(self, exchange: str, symbol: str, start: datetime, end: datetime, limit: int) -> Table:
        """The newest `limit` trades of [start, end), oldest first. The last minutes are read first, and
        more only while they hold too few: the copies of a market's whole day are deduplicated in about
        300 ms, those of its last 10 minutes in 30 (bench/lake_query.py)."""
        for span in (*TAPE_SPANS, end - start):
            since = max(start, end - span)
            found = self.between(exchange, symbol, since, end, limit=limit)
            if len(found) >= limit or since == start:
                return found
        raise AssertionError("unreachable: the last span starts at `start`")

    def between(self, exchange: str, symbol: str, start: datetime, end: datetime, limit: int | None = None) -> Table:
        """The trades of one market with start <= trade_time < end, oldest first (the newest `limit`)."""
        order = "DESC" if limit is not None else "ASC"
        query = f"""
            WITH kept AS ({_kept(_MARKET_SPAN)})
            SELECT trade_time, trade_id, price, qty, is_buyer_maker, source, ingest_time FROM kept
             ORDER BY trade_time {order}, trade_id {order} {"LIMIT $limit" if limit is not None else ""}
        """
        params: dict[str, Any] = {"exchange": exchange, "symbol": symbol, "start": utc(start), "end": utc(end)}
        if limit is not None:
            params["limit"] = limit
        found = self._con.execute(query, params).to_arrow_table()
        return Table(found if limit is None else found.take(pa.array(range(found.num_rows - 1, -1, -1), pa.int64())))


@dataclass(frozen=True)
class TradesCandle:
    """What a minute's trades make, by the candle rules: open and close the first and last trade in
    (time, id) order, high and low the extremes, volume the exact sum of quantities."""

    trades: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    taker_buy_volume: Decimal


def candle_of(rows: Sequence[Mapping[str, Any]]) -> TradesCandle | None:
    """The candle `between`'s rows (oldest first, as `records()`) make; None for no trades."""
    if not rows:
        return None
    prices = [r["price"] for r in rows]
    return TradesCandle(
        trades=len(rows),
        open=prices[0],
        high=max(prices),
        low=min(prices),
        close=prices[-1],
        volume=sum((r["qty"] for r in rows), Decimal(0)),
        taker_buy_volume=sum((r["qty"] for r in rows if not r["is_buyer_maker"]), Decimal(0)),
    )


def _select(files: Sequence[str]) -> str:
    """The trades of `files` with the lake's column types; no rows (but the columns) for no files."""
    if not files:
        return "SELECT " + ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in COLUMN_TYPES.items()) + " WHERE false"
    # The exchange and the day come from the path (`exchange=E/trade_date=D/`): the files do not carry them.
    source = f"read_parquet({_list(files)}, hive_partitioning = true, union_by_name = true)"
    return "SELECT " + ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in COLUMN_TYPES.items()) + f" FROM {source}"


def _kept(where: str, key: Sequence[str] = ("trade_id",)) -> str:
    """The valid trades matching `where`, each once: curated ones as they are, landed ones deduplicated
    by `key` (within one market, the trade id is enough)."""
    return (
        f"SELECT * FROM clean_trades WHERE {where} AND {_VALID} UNION ALL "
        f"(SELECT * FROM landed_trades WHERE {where} AND {_VALID} "
        f"QUALIFY row_number() OVER (PARTITION BY {', '.join(key)} {_FIRST_COPY}) = 1)"
    )


_MARKET_SPAN = "exchange = $exchange AND symbol = $symbol AND trade_time >= $start AND trade_time < $end"

MINUTE_CANDLES_SQL = f"""
    WITH kept AS ({_kept(_MARKET_SPAN)})
    SELECT time_bucket(INTERVAL 1 minute, trade_time) AS open_time,
           arg_min(price, (trade_time, trade_id)) AS open, max(price) AS high, min(price) AS low,
           arg_max(price, (trade_time, trade_id)) AS close, sum(qty) AS volume, sum(price * qty) AS quote_volume,
           count(*) AS trades, sum(qty) FILTER (WHERE NOT is_buyer_maker) AS taker_buy_volume
      FROM kept GROUP BY 1 ORDER BY 1
"""
"""One market's 1m candles from its trades, by the candle rules (only minutes with trades: a quiet
minute's carried close is PostgreSQL's business)."""


def _list(items: Sequence[str]) -> str:
    return "[" + ", ".join("'" + item.replace("'", "''") + "'" for item in items) + "]"


def _days(start: datetime, end: datetime) -> list[date]:
    first, last = utc(start).date(), (utc(end) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def minute_trades(settings: Settings, exchange: str, symbol: str, minute: datetime, minutes: int = 1) -> Table:
    """The trades of `minutes` minutes from `minute` (a candle's open time; seconds are dropped)."""
    start = utc(minute).replace(second=0, microsecond=0)
    end = start + minutes * MINUTE
    with LakeTrades(partitions(settings, exchange, _days(start, end))) as lake:
        return lake.between(exchange, symbol, start, end)


def recent_trades(
    settings: Settings,
    exchange: str,
    symbol: str,
    limit: int = 100,
    lookback: timedelta = RECENT_LOOKBACK,
    now: datetime | None = None,
) -> Table:
    """The market's newest `limit` trades of the `lookback` before `now`, oldest first."""
    end = (now or datetime.now(UTC)) + timedelta(minutes=5)  # a producer's clock a little ahead of ours
    earliest = end - lookback - timedelta(minutes=5)
    with LakeTrades(partitions(settings, exchange, _days(earliest, end))) as lake:
        return lake.newest(exchange, symbol, earliest, end, limit)


def run_sql(settings: Settings, query: str, exchange: str | None = None, days: Iterable[date] | None = None) -> Table:
    """`query` over the committed trades (of `exchange`, on `days`): relations `trades` and `raw_trades`."""
    with LakeTrades(partitions(settings, exchange, days)) as lake:
        return lake.sql(query)
