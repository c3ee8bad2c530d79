"""`candlelake backfill`: fill the gap ledger's open gaps from the exchanges' REST APIs.

The running producer backfills each gap as soon as it declares it; this is for what is left: gaps whose
backfill failed (exchange unreachable, rate limited past the producer's patience), failed Kafka
deliveries, and gaps found while no producer was running. An Airflow backfill DAG is to call `run` too.

Only ids inside a gap's range are sent, each once; Spark's dedupe on (exchange, symbol, trade_id) makes a
repeat harmless anyway. A gap is closed 'filled' when the exchange returned every id, 'unfillable' when
it no longer has some (the count is kept), and stays 'open' with a note when the exchange could not be
reached, for the next run. A gap filled whole records the time its trades span as coverage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from candlelake import coverage
from candlelake.config import ConfigError, Settings
from candlelake.exchanges import EXCHANGE_NAMES, EXCHANGES
from candlelake.ingest.counters import Counters
from candlelake.ingest.dead_letter import DeadLetterSink
from candlelake.ingest.gap_fill import GapFill
from candlelake.ingest.gaps import Gap, GapLedger
from candlelake.ingest.kafka_sinks import KafkaTradeSink, TradeSink
from candlelake.ingest.pipeline import RejectionSink
from candlelake.sources.http import ExchangeError
from candlelake.sources.rest_api import rest_api
from candlelake.trade import Trade
from candlelake.util import from_us

log = logging.getLogger(__name__)


@dataclass
class BackfillSummary:
    gaps: int = 0
    filled: int = 0
    unfillable: int = 0
    failed: int = 0
    trades_sent: int = 0
    not_found: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    # The UTC days of the trades sent: the days whose curated candles must be recomputed.
    trade_days: set[date] = field(default_factory=set)

    def text(self) -> str:
        lines = [
            f"backfill: {self.gaps} open gaps; {self.filled} filled, {self.unfillable} unfillable, "
            f"{self.failed} still open",
            f"  trades sent {self.trades_sent}, ids the exchange no longer has {self.not_found}, "
            f"rejected {self.rejected}",
        ]
        lines += [f"  {error}" for error in self.errors]
        return "\n".join(lines)


def run(
    settings: Settings,
    exchange: str | None = None,
    symbol: str | None = None,
    gap_id: int | None = None,
    say: Callable[[str], None] = print,
) -> BackfillSummary:
    """Backfill the open id gaps that match; returns what happened (also said line by line)."""
    if exchange is not None and exchange not in EXCHANGES:
        raise ConfigError(f"--exchange {exchange!r}: backfill knows {', '.join(EXCHANGE_NAMES)}")
    ledger = GapLedger(settings.pg_dsn())
    summary = BackfillSummary()
    try:
        gaps = ledger.open_gaps(exchange, symbol, gap_id)
        summary.gaps = len(gaps)
        if not gaps:
            wanted = " ".join(str(v) for v in (exchange, symbol, gap_id) if v is not None)
            say("backfill: no open gaps" + (f" matching {wanted}" if wanted else ""))
            return summary
        counters = Counters()
        trades = KafkaTradeSink(settings, counters, client_id="candlelake-backfill")
        dead_letters = DeadLetterSink(settings, client_id="candlelake-backfill-dead-letter")
        try:
            for gap in gaps:
                _fill(settings, gap, ledger, trades, dead_letters, summary, say)
        finally:
            trades.close()
            dead_letters.close()
            dead_letters.flush_counts(settings.pg_dsn())
        if counters.delivery_failures:
            summary.errors.append(f"{counters.delivery_failures} trades were not taken by Kafka (recorded in the log)")
    finally:
        ledger.close_connection()
    say(summary.text())
    return summary


def _fill(
    settings: Settings,
    gap: Gap,
    ledger: GapLedger,
    trades: TradeSink,
    dead_letters: RejectionSink,
    summary: BackfillSummary,
    say: Callable[[str], None],
) -> None:
    assert gap.gap_id is not None  # gaps read from the ledger have their id
    market = EXCHANGES.get(gap.exchange)
    if market is None:
        summary.failed += 1
        summary.errors.append(f"gap {gap.gap_id}: no REST history for {gap.exchange}")
        return

    def send(trade: Trade) -> bool:
        trades.send(trade)
        summary.trade_days.add(from_us(trade.trade_time_us).date())
        return True

    fill = GapFill(gap)
    try:
        fill.run(rest_api(settings, market), send, dead_letters.send)
    except ExchangeError as exc:
        summary.failed += 1
        summary.trades_sent += fill.sent
        summary.rejected += fill.rejected
        summary.errors.append(f"gap {gap.gap_id} ({gap.exchange}:{gap.symbol} {gap.first_id}..{gap.last_id}): {exc}")
        ledger.note_attempt(gap.gap_id, f"backfill failed after {fill.sent} trades: {exc}")
        return
    trades.flush()
    ledger.close(gap.gap_id, fill.sent, fill.not_found)
    covered = fill.covered("backfill")
    if covered is not None:
        coverage.record_dsn(settings.pg_dsn(), [covered])
    summary.trades_sent += fill.sent
    summary.rejected += fill.rejected
    summary.not_found += fill.not_found
    if fill.not_found:
        summary.unfillable += 1
    else:
        summary.filled += 1
    ids = f"{gap.exchange}:{gap.symbol} ids {gap.first_id}..{gap.last_id}"
    say(f"  gap {gap.gap_id} {ids}: {fill.sent} sent, {fill.not_found} not found")
