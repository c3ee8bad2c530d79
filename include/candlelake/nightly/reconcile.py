"""Curated 1m candles against the exchange's own klines: the match rate per market and day.

The contract says our candles equal the exchange's klines digit for digit; this is where that is
checked on real data every night (DAG `reconcile_klines`). Per symbol, every 1m kline of the UTC day
(data.binance.vision files or REST, candlelake.sources.klines) is paired with our curated candle of the same
open time. Only what candlelake saw whole is judged (candlelake.coverage): a candle marked `partial`
(its interval was not fully observed, so its values hold only the trades seen) or a minute outside our
coverage says nothing about the candle rules, and is counted apart.

- matched: open, high, low, close and volume equal as exact decimals, and so do the quote volume and
  the taker-buy base and quote volumes when the kline carries them;
- mismatched: a complete candle that differs in any of those (up to 10 examples are kept: time, field,
  ours, theirs);
- missing_candles: a kline without a curated candle in a minute we covered; missing_klines: a curated
  candle without a kline between the first and the last kline; candles outside that span are counted as
  uncovered, not judged (a kline source may end before the day does);
- partial: a kline whose candle is `partial`, whether its values agree or not: not judged;
- not_covered: a kline without a candle in a minute our coverage does not hold (no feed, replay or
  backfill saw it, or an open trade-id gap lies in it): we never claimed to know that minute.

match_rate = matched / judged, judged = klines - partial - not_covered (the covered minutes). The
threshold check uses the mismatch rate over every covered minute either side has,
(mismatched + missing_candles + missing_klines) / (judged + missing_klines), so a candle the exchange
does not have counts against us too. Every comparison is recorded in `kline_reconciliations`.

When the kline source cannot be reached at all (the REST API on a machine without internet, and no kline
file for the market's day), the market is `skipped` with a note, nothing recorded; `check_results` fails
on a real mismatch first and only then, when nothing could be compared, says "skipped: no kline source".

The kline's number of trades is not compared: Binance counts raw trades there (an aggregate trade
`a` covers raw trades `f`..`l`, several orders filled at one price by one taker order), while our
candles count the aggregate trades the streams deliver. The two agree only when no aggregate trade
covers more than one raw trade.

Exchanges without a kline source (the simulator, Coinbase for now) get a result that says so, with
nothing compared and nothing recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extensions
from psycopg2.extras import Json

from candlelake.candle import KLINE_VALUES, QUOTE_VOLUMES, Candle
from candlelake.coverage import Span, covering
from candlelake.coverage import load as load_coverage
from candlelake.exchanges import KLINE_EXCHANGES
from candlelake.nightly.kline_sources import kline_source
from candlelake.sources.http import ExchangeError
from candlelake.sources.klines import (
    Kline,
    KlineError,
    KlineSourceUnreachable,
)
from candlelake.util import day_bounds, to_us

if TYPE_CHECKING:
    from candlelake.config import Settings

log = logging.getLogger(__name__)

# Every kline value but the number of trades (see the module docstring). A 6-column kline carries the
# prices and the volume only: the values it lacks are not compared.
COMPARED: tuple[str, ...] = tuple(c for c in KLINE_VALUES if c != "trades")
# Binance prints quote volumes (QUOTE_VOLUMES) with 8 decimals. Ours are exact sums of price x qty,
# which can have more digits (price and quantity steps with more than 8 decimals between them); such a
# value matches when it lies within one unit of the kline's last printed digit, i.e. the kline is it
# rounded or cut off.
QUOTE_DECIMALS = 8
MAX_EXAMPLES = 10
MINUTE_US = 60_000_000
SKIPPED_NOTE = "skipped: no kline source"


class ReconcileError(Exception):
    """Reconciliation could not run; the message says for which market and why."""


class ReconcileFailed(ReconcileError):
    """Some markets differ from the exchange's klines more than the allowed rate."""


class ReconcileSkipped(ReconcileError):
    """Nothing could be compared: no kline source could be reached (the message names the markets and why)."""


@dataclass(frozen=True)
class ReconcileResult:
    exchange: str
    symbol: str
    trade_date: date
    source: str
    klines: int = 0
    candles: int = 0
    matched: int = 0
    mismatched: int = 0
    missing_candles: int = 0
    missing_klines: int = 0
    uncovered: int = 0  # candles outside the span the kline source covers: not compared
    partial: int = 0  # klines whose candle is partial (its interval not fully observed): not judged
    not_covered: int = 0  # klines without a candle in a minute our coverage does not hold: not judged
    examples: tuple[dict[str, str | None], ...] = ()
    note: str | None = None  # why nothing was compared (no klines for the exchange, or skipped)
    skipped: bool = False  # the kline source could not be reached: nothing compared, no verdict
    reconcile_id: int | None = None

    @property
    def compared(self) -> bool:
        return self.note is None

    @property
    def judged(self) -> int:
        """The klines of covered minutes: those paired with a complete candle or missing one."""
        return self.klines - self.partial - self.not_covered

    @property
    def match_rate(self) -> float:
        """matched / judged; 1.0 when neither side has anything judged, 0.0 when only we have candles."""
        if self.judged == 0:
            return 0.0 if self.missing_klines or (self.klines == 0 and self.candles) else 1.0
        return self.matched / self.judged

    @property
    def mismatch_rate(self) -> float:
        """Share of the covered minutes either side has that are not matched (see the module docstring)."""
        minutes = self.judged + self.missing_klines
        return 0.0 if minutes == 0 else (self.mismatched + self.missing_candles + self.missing_klines) / minutes

    def text(self) -> str:
        """One line for the task log."""
        where = f"{self.exchange} {self.symbol} {self.trade_date.isoformat()}"
        if not self.compared:
            return f"{where}: {self.note}"
        return (
            f"{where} ({self.source}): {self.matched} of {self.judged} covered klines matched "
            f"({self.match_rate:.2%}), {self.mismatched} mismatched, {self.missing_candles} without a candle, "
            f"{self.missing_klines} candles without a kline"
            + (f", {self.partial} partial (interval not fully observed, not judged)" if self.partial else "")
            + (f", {self.not_covered} not covered (no candle, minute not observed)" if self.not_covered else "")
            + (f", {self.uncovered} candles outside the klines' span not compared" if self.uncovered else "")
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (an Airflow XCom), with the rates; `from_dict` reads it back."""
        data = asdict(self)
        data.update(
            trade_date=self.trade_date.isoformat(),
            examples=[dict(e) for e in self.examples],
            match_rate=self.match_rate,
            mismatch_rate=self.mismatch_rate,
        )
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReconcileResult:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["trade_date"] = date.fromisoformat(str(data["trade_date"]))
        values["examples"] = tuple(dict(e) for e in data.get("examples", ()))
        return cls(**values)


def differences(candle: Candle, kline: Kline) -> list[tuple[str, Decimal, Decimal]]:
    """(field, ours, theirs) for every compared field where the candle and the kline disagree."""
    out = []
    for name in COMPARED:
        theirs = getattr(kline, name)
        if theirs is None:
            continue  # the kline does not carry this field
        ours = getattr(candle, name)
        if name in QUOTE_VOLUMES:
            exponent = theirs.as_tuple().exponent
            digits = max(QUOTE_DECIMALS, -exponent if isinstance(exponent, int) else 0)
            if abs(ours - theirs) < Decimal(1).scaleb(-digits):
                continue
        elif ours == theirs:
            continue
        out.append((name, ours, theirs))
    return out


def compare(
    exchange: str,
    symbol: str,
    day: date,
    source: str,
    candles: Sequence[Candle],
    klines: Iterable[Kline],
    coverage: Sequence[Span] | None = None,
) -> ReconcileResult:
    """Pair candles and klines by open time and count (see the module docstring); a pure function.

    `coverage` is the market's merged coverage (candlelake.coverage spans, microseconds); None takes
    every minute as covered.
    """
    ours = {c.open_time: c for c in candles}
    theirs = {k.open_time: k for k in klines}
    matched = mismatched = missing_candles = missing_klines = partial = not_covered = 0

    def covered(at: datetime) -> bool:
        return coverage is None or covering(coverage, to_us(at), to_us(at) + MINUTE_US) is not None

    examples: list[dict[str, str | None]] = []

    def example(at: datetime, field: str, mine: object, other: object) -> None:
        if len(examples) < MAX_EXAMPLES:
            examples.append(
                {"open_time": f"{at:%Y-%m-%dT%H:%M:%SZ}", "field": field, "ours": _text(mine), "theirs": _text(other)}
            )

    # Candles outside the klines' own span are not judged: a kline source may end before the day does
    # (a file or an API range published up to some minute), which says nothing about our candles.
    first, last = (min(theirs), max(theirs)) if theirs else (None, None)
    uncovered = 0
    for at in sorted(ours.keys() | theirs.keys()):
        candle, kline = ours.get(at), theirs.get(at)
        if kline is None and (first is None or last is None or at < first or at > last):
            uncovered += 1
        elif candle is None:
            if covered(at):
                missing_candles += 1
                example(at, "candle", None, "kline present")
            else:
                not_covered += 1
        elif kline is None:
            missing_klines += 1
            example(at, "kline", "candle present", None)
        elif candle.partial:
            partial += 1
        elif found := differences(candle, kline):
            mismatched += 1
            for name, mine, other in found:
                example(at, name, mine, other)
        else:
            matched += 1
    return ReconcileResult(
        exchange=exchange,
        symbol=symbol,
        trade_date=day,
        source=source,
        klines=len(theirs),
        candles=len(ours),
        matched=matched,
        mismatched=mismatched,
        missing_candles=missing_candles,
        missing_klines=missing_klines,
        uncovered=uncovered,
        partial=partial,
        not_covered=not_covered,
        examples=tuple(examples),
    )


def check_threshold(results: Iterable[ReconcileResult], max_mismatch_rate: float) -> None:
    """Raise `ReconcileFailed` naming every market whose mismatch rate exceeds `max_mismatch_rate`."""
    over = [r for r in results if r.compared and r.mismatch_rate > max_mismatch_rate]
    if over:
        details = "; ".join(
            f"{r.exchange} {r.symbol} {r.trade_date.isoformat()}: {r.mismatch_rate:.2%} "
            f"({r.mismatched} mismatched, {r.missing_candles} without a candle, {r.missing_klines} without a kline"
            + (f"; {r.partial} partial not judged" if r.partial else "")
            + (f", e.g. {_example_text(r.examples[0])}" if r.examples else "")
            + ")"
            for r in over
        )
        raise ReconcileFailed(
            f"{len(over)} market(s) differ from the exchange's klines more than the allowed "
            f"{max_mismatch_rate:.2%}: {details}"
        )


def check_results(results: Sequence[ReconcileResult], max_mismatch_rate: float) -> dict[str, Any]:
    """The run's verdict: `ReconcileFailed` (see `check_threshold`) before anything else, then
    `ReconcileSkipped` when markets were skipped and none compared; else a summary to return."""
    check_threshold(results, max_mismatch_rate)
    compared = [r for r in results if r.compared]
    skipped = [r for r in results if r.skipped]
    if skipped and not compared:
        # Each note is f"{SKIPPED_NOTE} ({why})" (reconcile_day): name every distinct why once.
        reasons = sorted({(r.note or "").removeprefix(f"{SKIPPED_NOTE} (").removesuffix(")") for r in skipped})
        markets = ", ".join(f"{r.exchange} {r.symbol} {r.trade_date.isoformat()}" for r in skipped)
        why = "; ".join(reasons)
        raise ReconcileSkipped(f"{SKIPPED_NOTE}: {len(skipped)} market(s) not compared ({markets}): {why}")
    return {
        "checked": len(compared),
        "skipped": len(skipped),
        "partial": sum(r.partial for r in compared),
        "not_covered": sum(r.not_covered for r in compared),
        "max_mismatch_rate": max_mismatch_rate,
    }


# --- PostgreSQL ---------------------------------------------------------------------------------------

# The day's curated 1m candles. The base interval may be 1 second (CANDLELAKE_CANDLE_INTERVAL): its
# candles are rolled up to minutes by the rollup rules (prices over parts with trades; a minute without
# any keeps the previous close its empty parts carry). At a 1-minute base each group is one row.
# A minute is partial when a part is, or when parts are absent and our coverage does not hold the whole
# minute (absent parts inside coverage are quiet ones the batch had no close to carry into). A candle
# curated before coverage existed (coverage NULL) is taken as complete.
_CANDLES_SQL = """
WITH seen AS (SELECT market_coverage(%(exchange)s, %(symbol)s, %(start)s, %(end)s) AS covered)
SELECT date_bin('1 minute', open_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS minute,
       coalesce((array_agg(open ORDER BY open_time) FILTER (WHERE trades > 0))[1],
                (array_agg(open ORDER BY open_time))[1]),
       coalesce(max(high) FILTER (WHERE trades > 0), max(high)),
       coalesce(min(low) FILTER (WHERE trades > 0), min(low)),
       coalesce((array_agg(close ORDER BY open_time DESC) FILTER (WHERE trades > 0))[1],
                (array_agg(close ORDER BY open_time DESC))[1]),
       sum(volume), sum(quote_volume), sum(trades)::bigint, sum(taker_buy_volume), sum(taker_buy_quote_volume),
       CASE WHEN coalesce(bool_or(coverage = 'partial'), false)
         OR (count(*) * max(extract(epoch FROM close_time - open_time) * 1000 + 1) < 60000
             AND NOT (SELECT covered FROM seen) @> tstzrange(
                 date_bin('1 minute', open_time, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
                 date_bin('1 minute', open_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') + interval '1 minute', '[)'))
            THEN 'partial' ELSE 'complete' END
  FROM candles
 WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND open_time >= %(start)s AND open_time < %(end)s
   AND state = 'curated'
 GROUP BY 1
 ORDER BY 1
"""
_SYMBOLS_SQL = """
SELECT DISTINCT symbol FROM candles
 WHERE exchange = %s AND open_time >= %s AND open_time < %s AND state = 'curated'
 ORDER BY 1
"""
_RECORD_SQL = """
INSERT INTO kline_reconciliations (run_id, exchange, symbol, trade_date, source, klines, candles, matched,
                                   mismatched, missing_candles, missing_klines, match_rate, examples, partial,
                                   not_covered)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
RETURNING reconcile_id
"""


def curated_candles(conn: psycopg2.extensions.connection, exchange: str, symbol: str, day: date) -> list[Candle]:
    """The day's curated candles as 1m candles, each with its coverage, partial or complete (see `_CANDLES_SQL`)."""
    start, end = day_bounds(day)
    with conn.cursor() as cur:
        cur.execute(_CANDLES_SQL, {"exchange": exchange, "symbol": symbol, "start": start, "end": end})
        return [Candle(*row) for row in cur.fetchall()]


def covered_spans(conn: psycopg2.extensions.connection, exchange: str, symbol: str, day: date) -> list[Span]:
    """The market's merged coverage of the day (sql/schema.sql `market_coverage`: gaps not backfilled cut out)."""
    start, end = day_bounds(day)
    with conn.cursor() as cur:
        return load_coverage(cur, exchange, start, end, [symbol])[symbol]


def curated_symbols(conn: psycopg2.extensions.connection, exchange: str, day: date) -> list[str]:
    """The symbols of `exchange` with curated candles on `day`."""
    start, end = day_bounds(day)
    with conn.cursor() as cur:
        cur.execute(_SYMBOLS_SQL, (exchange, start, end))
        return [row[0] for row in cur.fetchall()]


def record(conn: psycopg2.extensions.connection, run_id: str, result: ReconcileResult) -> int:
    """Insert `result` into `kline_reconciliations` and commit; return its id."""
    with conn, conn.cursor() as cur:
        cur.execute(
            _RECORD_SQL,
            (
                run_id,
                result.exchange,
                result.symbol,
                result.trade_date,
                result.source,
                result.klines,
                result.candles,
                result.matched,
                result.mismatched,
                result.missing_candles,
                result.missing_klines,
                result.match_rate,
                Json(list(result.examples)),
                result.partial,
                result.not_covered,
            ),
        )
        row = cur.fetchone()
    assert row is not None  # INSERT ... RETURNING returns the row
    return int(row[0])


def reconcile_day(
    settings: Settings,
    exchange: str,
    day: date,
    symbols: Sequence[str] | None,
    source: str,
    files_dir: str | Path | None = None,
    run_id: str = "manual",
) -> list[ReconcileResult]:
    """Reconcile `exchange`'s curated 1m candles of `day` with its klines from `source` (candlelake.sources.klines:
    'auto', 'rest' or 'files'; `files_dir` a folder, glob or file, default CANDLELAKE_KLINE_FILES).

    `symbols` None means every symbol with curated candles that day. Raises `ReconcileError` when the
    klines cannot be had (exchange down or failing, unknown symbol, no kline file where files were
    asked for); a REST API that cannot be reached at all gives a `skipped` result per symbol, and an
    exchange without klines one result per symbol (or one for '*'), both with a `note` that says so.
    """
    try:
        klines = kline_source(settings, exchange, source, files_dir)
    except KlineError as error:
        raise ReconcileError(str(error)) from None
    if klines is None:
        note = f"no kline source for exchange {exchange} (klines come from {', '.join(KLINE_EXCHANGES)} only)"
        log.info("%s", note)
        return [ReconcileResult(exchange, s, day, source, note=note) for s in (symbols or ["*"])]
    results = []
    conn = psycopg2.connect(settings.pg_dsn(), connect_timeout=10, application_name="candlelake-reconcile")
    try:
        wanted = [s.strip().upper() for s in symbols] if symbols else curated_symbols(conn, exchange, day)
        conn.commit()
        for symbol in wanted:
            try:
                used, theirs = klines.day_klines(symbol, day)
            except KlineSourceUnreachable as error:
                note = f"{SKIPPED_NOTE} ({error})"
                results.append(ReconcileResult(exchange, symbol, day, "rest", note=note, skipped=True))
                log.warning("%s", results[-1].text())
                continue
            except (KlineError, ExchangeError) as error:
                raise ReconcileError(
                    f"klines of {exchange} {symbol} on {day.isoformat()} ({source}): {error}"
                ) from None
            ours = curated_candles(conn, exchange, symbol, day)
            spans = covered_spans(conn, exchange, symbol, day)
            conn.commit()
            result = compare(exchange, symbol, day, used, ours, theirs, spans)
            result = replace(result, reconcile_id=record(conn, run_id, result))
            log.info("%s", result.text())
            results.append(result)
    finally:
        klines.close()
        conn.close()
    return results


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _example_text(example: Mapping[str, Any]) -> str:
    return f"{example['open_time']} {example['field']}: ours {example['ours']}, theirs {example['theirs']}"
