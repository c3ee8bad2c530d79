"""The `backfill` DAG's first step: fill what is missing for an exchange, then name the days to recompute.

Two sources:

- `rest`: the gap ledger's open id gaps of the exchange (and symbols), fetched from the exchange's REST
  API exactly as `candlelake backfill` does (candlelake.runs.backfill.run).
- `files`: recorded trades in data.binance.vision format (trades or aggTrades CSV, plain, gzip or zip; a
  file or a folder of them), replayed through the producer's validation; only trades with
  start <= trade_time < end (and of the symbols, when given) are sent.

Either way the trades go into Kafka like live ones, and what they cover is recorded (candlelake.coverage:
a file its day, or its first to its last trade, inside start..end). The streaming job lands them in the
lake, where the nightly chain (compaction, validation, curated load) takes them into the candles of their
days.
`BackfillOutcome.days` are those days; `offsets` are the topic's end offsets once every trade was
acknowledged, so the DAG can wait until the lake query has read that far.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from candlelake import coverage
from candlelake.config import ConfigError, Settings
from candlelake.exchanges import EXCHANGE_NAMES, EXCHANGES
from candlelake.ingest.counters import Counters
from candlelake.ingest.dead_letter import DeadLetterSink
from candlelake.ingest.kafka_sinks import KafkaTradeSink
from candlelake.platform import kafka
from candlelake.runs import backfill
from candlelake.sources.fields import Rejection
from candlelake.sources.recordings import SeenIds, open_recording, read
from candlelake.util import from_us, to_us

SOURCES = ("rest", "files")
# data.binance.vision file names: BTCUSDT-aggTrades-2026-11-30.zip, BTCUSDT-trades-2026-11.zip, ...
FILE_SUFFIXES = (".csv", ".zip", ".gz")


@dataclass(frozen=True)
class BackfillRequest:
    exchange: str
    symbols: tuple[str, ...]
    start: datetime | None
    end: datetime | None
    source: str
    files: Path | None

    def covers(self, trade_time_us: int) -> bool:
        moment = from_us(trade_time_us)
        return (self.start is None or moment >= self.start) and (self.end is None or moment < self.end)


@dataclass
class BackfillOutcome:
    sent: int = 0
    rejected: int = 0
    outside: int = 0
    gaps_filled: int = 0
    gaps_open: int = 0
    days: set[date] = field(default_factory=set)
    offsets: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "rejected": self.rejected,
            "outside": self.outside,
            "gaps_filled": self.gaps_filled,
            "gaps_open": self.gaps_open,
            "days": sorted(d.isoformat() for d in self.days),
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
            "errors": list(self.errors),
        }


def _moment(text: str, name: str) -> datetime | None:
    value = text.strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{name} {text!r} is not a date or date-time: write e.g. 2026-11-30 or 2026-11-30T12:00Z"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_request(
    exchange: str, symbols: Sequence[str], start: str, end: str, source: str, files: str
) -> BackfillRequest:
    """Check the form's values; every problem is a ConfigError a person can act on."""
    if exchange not in EXCHANGES:
        raise ConfigError(f"exchange {exchange!r}: backfill knows {', '.join(EXCHANGE_NAMES)}")
    if source not in SOURCES:
        raise ConfigError(f"source {source!r}: choose rest (the exchange's API) or files (data.binance.vision files)")
    cleaned = tuple(s.strip().upper() if exchange != "coinbase" else s.strip() for s in symbols if s.strip())
    for symbol in cleaned:
        if not symbol.replace("-", "").isalnum() or len(symbol) > 30:
            raise ConfigError(f"symbol {symbol!r} is not a market symbol (e.g. BTCUSDT, or BTC-USD on Coinbase)")
    first, last = _moment(start, "start"), _moment(end, "end")
    if first and last and last <= first:
        raise ConfigError(f"end {end!r} must be after start {start!r}")
    folder = Path(files.strip()) if files.strip() else None
    if source == "files":
        if exchange == "coinbase":
            raise ConfigError("source files reads data.binance.vision files: use exchange binance or binance-usdm")
        if folder is None:
            raise ConfigError("source files needs `files`: a data.binance.vision file or a folder of them")
        if not folder.exists():
            raise ConfigError(f"files {str(folder)!r}: no such file or folder on the Airflow worker")
        if first is None or last is None:
            raise ConfigError("source files needs start and end: only trades inside them are sent")
    return BackfillRequest(exchange, cleaned, first, last, source, folder)


def _files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(FILE_SUFFIXES))


def run_request(settings: Settings, request: BackfillRequest, say: Callable[[str], None] = print) -> BackfillOutcome:
    """Fill what the request names; returns what was sent, the days it touched and the topic's end offsets."""
    outcome = BackfillOutcome()
    if request.source == "rest":
        _from_ledger(settings, request, outcome, say)
    else:
        _from_files(settings, request, outcome, say)
    outcome.offsets = topic_end_offsets(settings)
    say(
        f"backfill: {outcome.sent} trades sent, {outcome.rejected} rejected, {outcome.outside} outside the range; "
        f"days to recompute: {', '.join(sorted(d.isoformat() for d in outcome.days)) or 'none'}"
    )
    return outcome


def _from_ledger(
    settings: Settings, request: BackfillRequest, outcome: BackfillOutcome, say: Callable[[str], None]
) -> None:
    for symbol in request.symbols or (None,):
        summary = backfill.run(settings, request.exchange, symbol, say=say)
        outcome.sent += summary.trades_sent
        outcome.rejected += summary.rejected
        outcome.gaps_filled += summary.filled + summary.unfillable
        outcome.gaps_open += summary.failed
        outcome.errors += summary.errors
        outcome.days |= summary.trade_days


def _from_files(
    settings: Settings, request: BackfillRequest, outcome: BackfillOutcome, say: Callable[[str], None]
) -> None:
    assert request.files is not None  # parse_request makes sure
    files = _files(request.files)
    if not files:
        raise ConfigError(f"files {str(request.files)!r}: no .csv, .zip or .gz file there")
    counters = Counters()
    trades = KafkaTradeSink(settings, counters, client_id="candlelake-backfill-files", per_trade=False)
    dead_letters = DeadLetterSink(settings, client_id="candlelake-backfill-files-dead-letter")
    seen = SeenIds()
    covered: list[coverage.Interval] = []
    try:
        for path in files:
            recording = open_recording(path, request.exchange)
            sent_before = outcome.sent
            spans: dict[tuple[str, str], tuple[int, int]] = {}
            holes = coverage.IdHoles()
            for item in read(recording):
                if isinstance(item, Rejection):
                    dead_letters.send(item)
                    outcome.rejected += 1
                elif (request.symbols and item.symbol not in request.symbols) or not request.covers(item.trade_time_us):
                    outcome.outside += 1
                else:
                    t = item.trade_time_us
                    first, last = spans.get((item.exchange, item.symbol), (t, t))
                    spans[(item.exchange, item.symbol)] = (min(first, t), max(last, t))
                    holes.add((item.exchange, item.symbol), item.trade_id, t)
                    if seen.add(item.key, item.trade_id):
                        trades.send(item)
                        outcome.sent += 1
                        outcome.days.add(from_us(t).date())
            covered += _clipped(
                coverage.recording_intervals(spans, path.name, f"replay:{path.name}", holes.holes), request
            )
            say(f"  {path.name}: {recording.lines} lines, {outcome.sent - sent_before} trades sent")
    finally:
        trades.close()  # flushes: every trade is acknowledged or counted as failed
        dead_letters.close()
        dead_letters.flush_counts(settings.pg_dsn())
    if counters.delivery_failures or dead_letters.failures:
        outcome.errors.append(
            f"{counters.delivery_failures + dead_letters.failures} records were not taken by Kafka; run it again"
        )
        return
    # What the files saw, once all of it is in Kafka (a lost trade would make it a lie).
    coverage.record_dsn(settings.pg_dsn(), covered)


def _clipped(intervals: list[coverage.Interval], request: BackfillRequest) -> list[coverage.Interval]:
    """`intervals` inside the request's [start, end): only trades inside it were sent."""
    assert request.start is not None and request.end is not None  # parse_request makes sure for files
    lo, hi = to_us(request.start), to_us(request.end)
    return [
        dataclasses.replace(i, started_us=max(i.started_us, lo), ended_us=min(i.ended_us, hi))
        for i in intervals
        if i.ended_us > lo and i.started_us < hi
    ]


def topic_end_offsets(settings: Settings) -> dict[int, int]:
    """The `trades` topic's end offset per partition, now; empty when the topic does not exist yet."""
    try:
        return kafka.topic_end_offsets(
            settings.kafka_bootstrap, settings.trades_topic, timeout_ms=30_000, client_id="candlelake-backfill-offsets"
        )
    except kafka.TopicNotFound:
        return {}
