"""Replay recorded trades into Kafka: `candlelake replay FILE`, through the live producer's validation.

The file formats and their reading are candlelake.sources.recordings'. `replay` drops ids seen earlier in
the same replay, paces, sends, and reports progress; `run` is the `candlelake replay` command: it records
the file's coverage once Kafka acknowledged every trade, and runs the nightly chain for history older
than the live stream's watermark (candlelake.runs.history_chain).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol

from candlelake import coverage
from candlelake.config import Settings
from candlelake.sources.fields import Rejection
from candlelake.sources.recordings import CSV_FORMATS, Recording, ReplayError, SeenIds, open_recording, read
from candlelake.trade import Trade
from candlelake.util import first_line, to_us


class TradeSink(Protocol):
    def send(self, trade: Trade) -> None: ...


class RejectionSink(Protocol):
    def send(self, rejection: Rejection) -> None: ...


@dataclass
class ReplaySummary:
    path: Path
    format: str
    lines: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    skipped: int = 0
    first_trade_us: int | None = None
    last_trade_us: int | None = None
    elapsed_s: float = 0.0
    delivered: int | None = None
    delivery_failures: int = 0
    # (exchange, symbol) -> [first, last] trade time (us) of the accepted trades: the file's coverage.
    markets: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    older: int = 0  # accepted trades older than `horizon_us`, the live stream's watermark
    horizon_us: int | None = None
    covered: list[coverage.Interval] = field(default_factory=list)  # what was recorded, once delivered
    holes: coverage.IdHoles = field(default_factory=coverage.IdHoles)  # where the file's ids skip

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def text(self) -> str:
        rejected = sum(self.rejected.values())
        reasons = ", ".join(f"{code} {n}" for code, n in sorted(self.rejected.items(), key=lambda kv: (-kv[1], kv[0])))
        delivered = "" if self.delivered is None else f", delivered {self.delivered}"
        failures = f", delivery failures {self.delivery_failures}" if self.delivery_failures else ""
        span = (
            f"{_iso(self.first_trade_us)} .. {_iso(self.last_trade_us)}"
            if self.first_trade_us is not None and self.last_trade_us is not None
            else "-"
        )
        return "\n".join(
            [
                f"replayed {self.path} ({self.format}): {self.lines} lines in {self.elapsed_s:.1f}s",
                f"  accepted    {self.accepted} ({self.rate:.0f} trades/s){delivered}{failures}",
                f"  rejected    {rejected}" + (f" ({reasons})" if reasons else ""),
                f"  duplicates  {self.duplicates}",
                f"  skipped     {self.skipped}",
                f"  trade time  {span}",
            ]
        )


def _iso(us: int | None) -> str:
    if us is None:
        return "-"
    seconds, micros = divmod(us, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros).isoformat().replace("+00:00", "Z")


def replay(
    recording: Recording,
    trades: TradeSink,
    rejections: RejectionSink,
    rate: float | None = None,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float = 5.0,
    horizon_us: int | None = None,
) -> ReplaySummary:
    """Send every new trade to `trades` and every rejection to `rejections`; at most `rate` trades/s.

    Trades older than `horizon_us` (the live stream's watermark) are counted in `older`.
    """
    summary = ReplaySummary(recording.path, recording.format, horizon_us=horizon_us)
    seen = SeenIds()
    started = time.monotonic()
    next_send = started
    next_report = started + progress_every_s
    for item in read(recording):
        if isinstance(item, Rejection):
            summary.rejected[item.code] += 1
            rejections.send(item)
        elif not seen.add(item.key, item.trade_id):
            summary.duplicates += 1
        else:
            if rate:
                next_send += 1 / rate
                delay = next_send - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            trades.send(item)
            summary.accepted += 1
            t = item.trade_time_us
            summary.first_trade_us = t if summary.first_trade_us is None else min(summary.first_trade_us, t)
            summary.last_trade_us = t if summary.last_trade_us is None else max(summary.last_trade_us, t)
            span = summary.markets.setdefault((item.exchange, item.symbol), [t, t])
            span[0], span[1] = min(span[0], t), max(span[1], t)
            summary.holes.add((item.exchange, item.symbol), item.trade_id, t)
            if horizon_us is not None and t < horizon_us:
                summary.older += 1
        if progress is not None and time.monotonic() >= next_report:
            elapsed = time.monotonic() - started
            progress(
                f"replay: {recording.lines} lines read, {summary.accepted / elapsed:.0f} trades/s, "
                f"{summary.accepted} accepted, {sum(summary.rejected.values())} rejected"
            )
            next_report += progress_every_s
    summary.lines = recording.lines
    summary.skipped = recording.skipped
    summary.elapsed_s = time.monotonic() - started
    return summary


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(
    settings: Settings,
    path: str,
    exchange: str | None,
    symbol: str | None,
    rate: float | None,
    say: Callable[[str], None],
    chain: bool = True,
    chain_timeout_s: float = 3600.0,
) -> int:
    """`candlelake replay`: 0 when every accepted trade and rejection was delivered (and, for trades older
    than the live stream, their curated candles were made when `chain`), 1 otherwise."""
    from candlelake.ingest.counters import Counters
    from candlelake.ingest.dead_letter import DeadLetterSink
    from candlelake.ingest.kafka_sinks import KafkaTradeSink
    from candlelake.runs import history_chain

    if rate is not None and not rate > 0:
        raise ReplayError(f"--rate {rate}: give a positive number of trades per second")
    if not chain_timeout_s > 0:
        raise ReplayError(f"--chain-timeout {chain_timeout_s / 60:g}: give a positive number of minutes")
    recording = open_recording(path, exchange, symbol)
    horizon = to_us(history_chain.stream_horizon(settings))
    counters = Counters()
    trades = KafkaTradeSink(settings, counters, client_id="candlelake-replay", per_trade=False)
    try:
        dead_letters = DeadLetterSink(settings, client_id="candlelake-replay-dead-letter")
    except BaseException:
        trades.close()
        raise
    try:
        summary = replay(recording, trades, dead_letters, rate, progress=_stderr, horizon_us=horizon)
    finally:
        # Closing flushes: every record handed to a client is delivered or counted as failed.
        trades.close()
        dead_letters.close()
        dead_letters.flush_counts(settings.pg_dsn())  # never raises: a warning, the topic has them all
    summary.delivered = counters.produced
    summary.delivery_failures = counters.delivery_failures + dead_letters.failures
    if summary.delivery_failures == 0:
        record_coverage(settings, recording, summary)
    say(summary.text())
    if summary.delivery_failures:
        return 1
    if not summary.older:
        return 0
    say(
        f"{summary.older} of {summary.accepted} trades are older than the live stream's watermark "
        f"({_iso(horizon)}): the stream lands them in the lake but builds no live candle from them; their "
        "candles come from the nightly chain"
    )
    ok = True
    for market_exchange, symbols, days in history_days(summary):
        if not chain:
            span = f"{days[0].isoformat()} .. {days[-1].isoformat()}"
            say(f"  --no-chain: trigger lake_compaction for {market_exchange} {span} (wait_for_lake off) to make them")
            continue
        try:
            offsets = _end_offsets(settings)
            outcome = history_chain.run_chain(
                settings, market_exchange, symbols, days, offsets, _stderr, timeout_s=chain_timeout_s
            )
        except history_chain.ChainError as exc:
            say(f"the chain did not run: {exc}")
            ok = False
            continue
        for dag_id, (run_id, state) in outcome.runs.items():
            say(f"  {dag_id:<22} {state:<8} {run_id}")
        for day in outcome.candles:
            say(day.text())
        ok = ok and outcome.succeeded
    return 0 if ok else 1


def history_days(summary: ReplaySummary) -> list[tuple[str, list[str], list[date]]]:
    """Per exchange of the replayed trades: its symbols and the UTC days from its first to its last trade."""
    from candlelake.runs.history_chain import days_between

    by_exchange: dict[str, list[tuple[str, list[int]]]] = {}
    for (market_exchange, market_symbol), span in sorted(summary.markets.items()):
        by_exchange.setdefault(market_exchange, []).append((market_symbol, span))
    found = []
    for market_exchange, markets in by_exchange.items():
        first = min(span[0] for _, span in markets)
        last = max(span[1] for _, span in markets)
        found.append((market_exchange, [s for s, _ in markets], days_between(first, last)))
    return found


def _end_offsets(settings: Settings) -> dict[int, int]:
    from candlelake.runs.range_backfill import topic_end_offsets

    return topic_end_offsets(settings)


def record_coverage(settings: Settings, recording: Recording, summary: ReplaySummary) -> None:
    """Record what the file covered, once all of it was delivered (a lost trade would make it a lie).

    The source names the file, so replaying it again writes the same rows: nothing changes.
    """
    spans = {market: (first, last) for market, (first, last) in summary.markets.items()}
    # Only an exchange's own dump is cut at the day or month its name says; a capture spans its trades.
    dump = recording.path.name if recording.format in CSV_FORMATS.values() else ""
    intervals = coverage.recording_intervals(spans, dump, f"replay:{recording.path.name}", summary.holes.holes)
    try:
        coverage.record_dsn(settings.pg_dsn(), intervals)
    except Exception as exc:  # the trades are in Kafka; the candles will say partial until it is recorded
        _stderr(
            f"replay: could not record the file's coverage ({first_line(exc)}); its candles "
            "stay partial or absent until it is: replay the file again once PostgreSQL is up"
        )
        return
    summary.covered = intervals
