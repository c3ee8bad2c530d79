"""The producer pipeline: every connector's events pass here on their way to Kafka.

    connector --emit(event)--> Pipeline --> trades topic          (new trades, once each)
                                        --> dead-letter topic     (rejections, with the reason)
                                        --> prices topic          (price points)
                                        --> gap ledger            (holes, disconnects, failed deliveries)
                                        --> Backfill              (declared gaps, fetched by id over REST)
                                        --> coverage              (connected sessions, filled gaps)

`emit` is thread-safe and does no network I/O of its own beyond handing records to the Kafka client,
so a WebSocket receive loop can call it for every message. Ledger writes and backfills happen on the
maintenance thread (`maintain`, every second), which never blocks a feed; a ledger that cannot be
written (PostgreSQL down) keeps its rows queued and retries. Coverage (candlelake.coverage) follows the
feeds' Reconnected and Disconnect events: a session per market from its connection to the moment the
connection was lost, written every few seconds while it lasts, so a producer killed without a word
leaves coverage up to its last write, and a restart begins a new session.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from candlelake.coverage import Interval, LiveSessions
from candlelake.ingest.counters import Counters, DeliveryReports
from candlelake.ingest.gap_fill import GapFill, TradeHistory
from candlelake.ingest.gaps import DELIVERY, Gap, GapLedger, GapTracker
from candlelake.ingest.kafka_sinks import TradeSink
from candlelake.price import PricePoint
from candlelake.sources.events import Disconnect, Event, Reconnected, TradeIdMark
from candlelake.sources.fields import Rejection
from candlelake.trade import Trade, decimal_text
from candlelake.util import first_line, now_us

log = logging.getLogger(__name__)

# A hole found within this long after a disconnect ended is blamed on that disconnect.
DISCONNECT_BLAME_S = 120.0


class RejectionSink(Protocol):
    def send(self, rejection: Rejection) -> None: ...


class PriceSink(Protocol):
    def send(self, point: PricePoint) -> None: ...


class CoverageWriter(Protocol):
    """Where coverage rows go (candlelake.coverage.CoverageStore); raises when they were not stored."""

    def write(self, intervals: list[Interval]) -> None: ...


class Pipeline:
    """Dedupe, gap tracking and routing of connector events; see the module docstring.

    New trades go to `trades`, rejections to `dead_letters`, price points to `prices`. `deliveries` are
    the callbacks `trades` was built with: the failures it keeps become gaps in the ledger (and are
    backfilled). `ledger` None runs without PostgreSQL (tests, replay): gaps are still tracked and counted.
    `histories` maps an exchange to its REST trade history, used to backfill its gaps automatically.
    `coverage` receives the feeds' sessions (kind `coverage_kind`) every `coverage_every_s`; None
    records none. `now_us` is the wall clock coverage is measured in (epoch microseconds).
    """

    def __init__(
        self,
        counters: Counters,
        trades: TradeSink,
        dead_letters: RejectionSink,
        *,
        deliveries: DeliveryReports | None = None,
        prices: PriceSink | None = None,
        ledger: GapLedger | None = None,
        histories: dict[str, TradeHistory] | None = None,
        grace_s: float = 5.0,
        track_gaps: bool = True,
        source: str = "producer",
        clock: Callable[[], float] = time.monotonic,
        coverage: CoverageWriter | None = None,
        coverage_kind: str = "live",
        coverage_every_s: float = 5.0,
        now_us: Callable[[], int] = now_us,
    ) -> None:
        self.counters = counters
        self.trades = trades
        self.deliveries = deliveries
        self.dead_letters = dead_letters
        self.prices = prices
        self.ledger = ledger
        self.histories = histories or {}
        self.tracker = GapTracker(grace_s)
        self.track_gaps = track_gaps
        self.source = source
        self.clock = clock
        self._lock = threading.Lock()
        self._ledger_queue: deque[Callable[[GapLedger], None]] = deque()
        self._backfills: queue.Queue[Gap] = queue.Queue()
        self._last_disconnect: dict[str, tuple[float, str]] = {}
        self.declared: list[Gap] = []  # every gap declared in this run (tests and summaries read it)
        self.coverage = coverage
        self.sessions = LiveSessions(source, coverage_kind)
        self.coverage_every_s = coverage_every_s
        self.now_us = now_us
        self._coverage_written = float("-inf")
        self._newest: dict[tuple[str, str], tuple[int, int]] = {}  # market -> (id, time) of its newest trade
        self._lost_after: dict[tuple[str, str], tuple[int, int]] = {}  # market -> its newest trade at a loss

    # --- the feed side: called by connectors, any thread -------------------------------------------

    def emit(self, event: Event) -> None:
        if isinstance(event, Trade):
            self._trade(event)
        elif isinstance(event, Rejection):
            with self.counters.lock:
                self.counters.rejected += 1
            self.dead_letters.send(event)
        elif isinstance(event, TradeIdMark):
            if self.track_gaps:
                with self._lock:
                    cause = self._cause(event.exchange, "a heartbeat named trades that never arrived")
                    self.tracker.mark(event.exchange, event.symbol, event.last_trade_id, self.clock(), cause)
        elif isinstance(event, Disconnect):
            self._disconnect(event)
        elif isinstance(event, Reconnected):
            with self._lock:
                self.sessions.connected(event.exchange, event.symbols, self.now_us())
            if not event.first:
                with self.counters.lock:
                    self.counters.reconnects += 1
        elif isinstance(event, PricePoint):
            with self.counters.lock:
                self.counters.prices += 1
                self.counters.last_price[event.key] = decimal_text(event.price)
            if self.prices is not None:
                self.prices.send(event)

    def _trade(self, trade: Trade) -> None:
        with self.counters.lock:
            self.counters.received += 1
        if self.track_gaps:
            with self._lock:
                cause = self._cause(trade.exchange, "trade ids skipped by the exchange stream")
                new = self.tracker.observe(trade.exchange, trade.symbol, trade.trade_id, self.clock(), cause)
                if new and self.coverage is not None:
                    self._follow_ids(trade)
            if not new:
                with self.counters.lock:
                    self.counters.duplicates += 1
                return
        self.trades.send(trade)

    def _follow_ids(self, trade: Trade) -> None:
        """Under the lock: the market's newest trade, and whether it proves a disconnect was quiet.

        Ids rise by one per trade, so when the first trade after a loss is the successor of the last one
        before it, nothing traded in between: that time is covered though no connection watched it (a
        disconnect with trades in it leaves an id gap instead, whose fill covers it).
        """
        key = (trade.exchange, trade.symbol)
        lost = self._lost_after.pop(key, None)
        if lost is not None and trade.trade_id == lost[0] + 1 and trade.trade_time_us >= lost[1]:
            seen = Interval(
                trade.exchange, trade.symbol, f"{self.source}:ids", "live", lost[1], trade.trade_time_us + 1
            )
            self.sessions.add(seen)
        newest = self._newest.get(key)
        if newest is None or trade.trade_id > newest[0]:
            self._newest[key] = (trade.trade_id, trade.trade_time_us)

    def _cause(self, exchange: str, default: str) -> str:
        last = self._last_disconnect.get(exchange)
        if last is not None and self.clock() - last[0] <= DISCONNECT_BLAME_S:
            return f"missed during a disconnect: {last[1]}"
        return default

    def _disconnect(self, event: Disconnect) -> None:
        with self._lock:
            self._last_disconnect[event.exchange] = (self.clock(), event.cause)
            if event.ended_us > event.started_us:  # an overlapping rotation lost nothing
                self.sessions.lost(event.exchange, event.symbols, event.started_us)
                for symbol in event.symbols:  # the last trade before the loss, if any (see _follow_ids)
                    newest = self._newest.get((event.exchange, symbol))
                    if newest is not None:
                        self._lost_after.setdefault((event.exchange, symbol), newest)
        source = self.source

        def write(ledger: GapLedger) -> None:
            ledger.record_disconnect(
                event.exchange, event.symbols, event.started_us, event.ended_us, event.cause, source
            )

        self._ledger_queue.append(write)

    # --- failed deliveries: reported on the Kafka client's thread, recorded by maintenance ------------

    def _record_failed_delivery(self, trade: Trade, error: str) -> None:
        source = self.source

        def write(ledger: GapLedger) -> None:
            gap_id = ledger.record_ids(
                trade.exchange,
                trade.symbol,
                trade.trade_id,
                trade.trade_id,
                f"Kafka delivery failed: {error}",
                source,
                DELIVERY,
            )
            if trade.exchange in self.histories:
                self._backfills.put(
                    Gap(trade.exchange, trade.symbol, trade.trade_id, trade.trade_id, error, gap_id, DELIVERY)
                )

        self._ledger_queue.append(write)

    # --- maintenance: one thread, every second ----------------------------------------------------

    def maintain(self) -> None:
        """Declare overdue holes as gaps, write the ledger, queue backfills. Never raises."""
        now = self.clock()
        if self.deliveries is not None:
            for trade, error in self.deliveries.take_failures():
                self._record_failed_delivery(trade, error)
        with self._lock:
            due = self.tracker.due(now)
            for _, _, hole in due:
                hole.gap_id = -1  # declared; the ledger id follows
            missing = self.tracker.missing_ids()
        with self.counters.lock:
            self.counters.gaps += len(due)
            self.counters.missing_ids = missing
        for exchange, symbol, hole in due:
            gap = Gap(exchange, symbol, hole.first, hole.last, hole.cause)
            log.warning(
                "gap: %s:%s trade ids %d..%d (%d) missing: %s",
                exchange,
                symbol,
                gap.first_id,
                gap.last_id,
                gap.size,
                gap.cause,
            )
            self.declared.append(gap)
            self._ledger_queue.append(self._declare(gap))
        self._flush_ledger()
        if now - self._coverage_written >= self.coverage_every_s:
            self._coverage_written = now
            self.write_coverage()

    def write_coverage(self) -> None:
        """Write the sessions as they stand (open ones up to now); what fails is kept for the next try."""
        if self.coverage is None:
            return
        with self._lock:
            rows = self.sessions.rows(self.now_us())
        if not rows:
            return
        try:
            self.coverage.write(rows)
        except Exception as exc:
            log.warning("could not write coverage (%s); retrying in a few seconds", first_line(exc))
            with self._lock:
                self.sessions.requeue(rows)

    def close_coverage(self) -> None:
        """The feeds stopped: every session ends now, and is written."""
        with self._lock:
            self.sessions.close_all(self.now_us())
        self.write_coverage()

    def _declare(self, gap: Gap) -> Callable[[GapLedger], None]:
        source = self.source

        def write(ledger: GapLedger) -> None:
            gap_id = ledger.record_ids(gap.exchange, gap.symbol, gap.first_id, gap.last_id, gap.cause, source)
            if gap.exchange in self.histories:
                self._backfills.put(Gap(gap.exchange, gap.symbol, gap.first_id, gap.last_id, gap.cause, gap_id))

        if self.ledger is None and gap.exchange in self.histories:
            self._backfills.put(gap)
        return write

    def _flush_ledger(self) -> None:
        if self.ledger is None:
            self._ledger_queue.clear()
            return
        while self._ledger_queue:
            write = self._ledger_queue[0]
            try:
                write(self.ledger)
            except Exception as exc:
                log.warning("could not write the gap ledger (%s); retrying in a second", first_line(exc))
                self.ledger.close_connection()
                return
            self._ledger_queue.popleft()

    def save_positions(self) -> None:
        if self.ledger is not None and self.track_gaps:
            with self._lock:
                highs = self.tracker.highs()
            self.ledger.save_positions(highs)

    # --- backfill ---------------------------------------------------------------------------------

    def next_backfill(self, timeout: float) -> Gap | None:
        try:
            return self._backfills.get(timeout=timeout)
        except queue.Empty:
            return None

    def backfill(self, gap: Gap) -> tuple[int, int]:
        """Fetch a gap's ids from the exchange and send the ones still missing; (sent, not found).

        Ids that arrived from the stream meanwhile are skipped (the tracker knows), so nothing is sent
        twice; ids the exchange does not return are counted as not found. A failed delivery's trade
        passed the tracker when it first came, so its gap is sent whole.
        """
        resend = gap.kind == DELIVERY or not self.track_gaps

        def send(trade: Trade) -> bool:
            with self._lock:
                wanted = resend or self.tracker.is_missing(trade.exchange, trade.symbol, trade.trade_id)
                if wanted and not resend:
                    self.tracker.observe(trade.exchange, trade.symbol, trade.trade_id, self.clock())
            if wanted:
                self.trades.send(trade)
            return wanted

        fill = GapFill(gap)
        fill.run(self.histories[gap.exchange], send, self.emit)
        if not resend:
            with self._lock:
                # Ids the exchange does not have will never come: stop waiting for them.
                self.tracker.forget(gap.exchange, gap.symbol, gap.first_id, gap.last_id)
        with self.counters.lock:
            self.counters.backfilled += fill.sent
        covered = fill.covered(f"{self.source}:backfill")
        if covered is not None:
            with self._lock:
                self.sessions.add(covered)
        return fill.sent, fill.not_found
