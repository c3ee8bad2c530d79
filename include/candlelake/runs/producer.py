"""The producer process: one source's connector(s) -> the pipeline -> Kafka, with health in PostgreSQL.

    candlelake produce --source binance --symbols BTCUSDT,ETHUSDT
    candlelake produce --source coinbase --symbols BTC-USD
    candlelake produce --source binance-rest --symbols BTCUSDT      (price points, no trades)
    candlelake produce --source coingecko --symbols bitcoin,ethereum (price points, no trades)
    candlelake produce --source simulator --rate 50

Every source runs through the same path (candlelake.ingest.pipeline): dedupe, gap tracking, dead
letters, Kafka. Live exchange sources also keep a gap ledger in PostgreSQL and backfill their gaps
from the exchange's REST API as soon as a gap is declared; they start from the last trade id the
previous run sent (table ingest_positions), so ids missed while the producer was down are a gap too.
SIGTERM or SIGINT stops the feeds, flushes Kafka (every trade handed to the client is delivered or
recorded as a failed delivery) and writes the final counters. Dead-letter counts per reason go to
PostgreSQL (dead_letter_counts) on every health beat and at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from candlelake.config import ConfigError, Settings
from candlelake.ingest.kafka_sinks import make_trade_sink
from candlelake.ingest.pipeline import Counters, Pipeline, TradeHistory, price_point_json
from candlelake.sources.events import Emit
from candlelake.trade import Trade

if TYPE_CHECKING:
    from candlelake.sources.websocket_feed import FeedSettings

log = logging.getLogger(__name__)

EXCHANGE_SOURCES = ("binance", "binance-usdm", "coinbase")
PRICE_SOURCES = ("binance-rest", "coingecko")
DEFAULT_SYMBOLS = {
    "binance": ["BTCUSDT", "ETHUSDT"],
    "binance-usdm": ["BTCUSDT", "ETHUSDT"],
    "coinbase": ["BTC-USD", "ETH-USD"],
    "binance-rest": ["BTCUSDT", "ETHUSDT"],
    "coingecko": ["bitcoin", "ethereum"],
}

__all__ = ["Counters", "HealthReporter", "KafkaTradeSink", "run"]


class Connector(Protocol):
    async def run(self, emit: Emit, stop: asyncio.Event) -> None: ...


class KafkaTradeSink:
    """A Kafka trade sink that counts deliveries into `counters` (replay, backfill, tests, benchmarks).

    With `per_trade=False` (replay) successes are counted in bulk when the sink closes, not one report
    per trade; failures are still reported one by one.
    """

    def __init__(
        self, settings: Settings, counters: Counters, client_id: str = "candlelake-producer", per_trade: bool = True
    ) -> None:
        self.counters = counters
        self.per_trade = per_trade or settings.kafka_client != "confluent"
        if self.per_trade:
            self._sink = make_trade_sink(settings, self.counters.count_delivered, self._failed, client_id)
        else:
            from candlelake.ingest.kafka_sinks import ConfluentSink

            self._sink = ConfluentSink(
                settings, self.counters.count_delivered, self._failed, client_id, report_successes=False
            )

    def _failed(self, trade: Trade, error: str) -> None:
        with self.counters.lock:
            self.counters.delivery_failures += 1
        log.error("delivery failed for %s trade %s: %s", trade.key, trade.trade_id, error)

    def send(self, trade: Trade) -> None:
        self._sink.send(trade)

    def flush(self, timeout: float | None = None) -> None:
        self._sink.flush(timeout)

    def close(self) -> None:
        self._sink.close()  # flushes: afterwards every trade is delivered or reported as failed
        if not self.per_trade:
            with self.counters.lock:
                self.counters.produced = self._sink.sent - self.counters.delivery_failures  # type: ignore[attr-defined]


class KafkaPriceSink:
    """Price points to the `prices` topic with kafka-python (a few per second at most)."""

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaProducer

        self.topic = settings.prices_topic
        self.failures = 0
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id="candlelake-prices",
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
        )

    def send(self, point: Any) -> None:
        future = self._producer.send(self.topic, key=point.key.encode(), value=price_point_json(point))
        future.add_errback(self._failed)

    def _failed(self, error: BaseException) -> None:
        self.failures += 1
        log.error("price point delivery failed: %s", error)

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()


class HealthReporter(threading.Thread):
    """Upserts this producer's counters into `producer_health` every few seconds; never kills the producer."""

    UPSERT = """
        INSERT INTO producer_health (producer, source, pid, started_at, heartbeat_at, received, produced,
                                     rejected, duplicates, delivery_failures, gaps, missing_ids, backfilled,
                                     reconnects, prices, last_trade_time, last_price)
        VALUES (%(producer)s, %(source)s, %(pid)s, %(started_at)s, now(), %(received)s, %(produced)s,
                %(rejected)s, %(duplicates)s, %(delivery_failures)s, %(gaps)s, %(missing_ids)s, %(backfilled)s,
                %(reconnects)s, %(prices)s, %(last_trade_time)s, %(last_price)s)
        ON CONFLICT (producer) DO UPDATE SET
            source = EXCLUDED.source, pid = EXCLUDED.pid, started_at = EXCLUDED.started_at,
            heartbeat_at = EXCLUDED.heartbeat_at, received = EXCLUDED.received, produced = EXCLUDED.produced,
            rejected = EXCLUDED.rejected, duplicates = EXCLUDED.duplicates,
            delivery_failures = EXCLUDED.delivery_failures, gaps = EXCLUDED.gaps,
            missing_ids = EXCLUDED.missing_ids, backfilled = EXCLUDED.backfilled,
            reconnects = EXCLUDED.reconnects, prices = EXCLUDED.prices,
            last_trade_time = EXCLUDED.last_trade_time, last_price = EXCLUDED.last_price
    """

    def __init__(
        self,
        settings: Settings,
        counters: Counters,
        producer: str,
        source: str,
        also: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="health-reporter", daemon=True)
        self.settings = settings
        self.counters = counters
        self.producer = producer
        self.source = source
        self.also = also  # more bookkeeping on the same beat (trade-id positions, dead-letter counts)
        self.started_at = datetime.now(UTC)
        self.stopped = threading.Event()

    def report(self) -> None:
        import psycopg2

        row = self.counters.snapshot()
        row["last_trade_time"] = json.dumps(row["last_trade_time"])
        row["last_price"] = json.dumps(row["last_price"])
        row.update(producer=self.producer, source=self.source, pid=os.getpid(), started_at=self.started_at)
        with psycopg2.connect(self.settings.pg_dsn(), connect_timeout=3) as conn, conn.cursor() as cur:
            cur.execute(self.UPSERT, row)
        conn.close()
        if self.also is not None:
            self.also()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.health_interval_s):
            try:
                self.report()
            except Exception as exc:
                log.warning("could not record producer health: %s", str(exc).strip().splitlines()[0])

    def stop(self) -> None:
        self.stopped.set()
        try:
            self.report()
        except Exception as exc:
            log.warning("could not record final producer health: %s", exc)


class SimulatorFeed:
    """Simulated trades in real time (trade time = now), as a connector."""

    def __init__(self, symbols: list[str], rate: float, seed: int, limit: int | None = None) -> None:
        from candlelake.sources.simulator import Simulator

        now_us = time.time_ns() // 1000
        # Ids continue upward across restarts (the base grows 1,000 per millisecond of wall time), so a
        # restarted simulator never reuses an id that dedupe would then throw away.
        self.sim = Simulator(symbols, rate, seed=seed, start_time_us=now_us, first_trade_id=now_us // 1000 * 1000)
        self.limit = limit
        self.sent = 0

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        from candlelake.sources.events import Reconnected

        loop = asyncio.get_running_loop()
        # Every trade of these markets comes from here: the run is their coverage.
        emit(Reconnected(self.sim.exchange, "simulator", True, self.sim.symbols))
        next_at = loop.time()
        while not stop.is_set() and (self.limit is None or self.sent < self.limit):
            next_at += self.sim.next_gap_us() / 1e6
            delay = next_at - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            stamp = time.time_ns() // 1000
            emit(self.sim.next_trade(stamp, stamp))
            self.sent += 1
        stop.set()  # a limited run ends the producer


def _symbols(source: str, symbols: list[str] | None, settings: Settings) -> list[str]:
    chosen = symbols or settings.producer_symbols or DEFAULT_SYMBOLS.get(source, [])
    if source in ("binance", "binance-usdm", "binance-rest"):
        from candlelake.sources.binance import normalize_symbol

        return [normalize_symbol(s) for s in chosen]
    if source == "coinbase":
        return [s.strip().upper() for s in chosen]
    return [s.strip().lower() for s in chosen]


def exchange_of(source: str) -> str:
    return "binance" if source == "binance-rest" else source


def histories(settings: Settings, exchange: str) -> dict[str, TradeHistory]:
    """The REST trade history that backfills an exchange's gaps."""
    if exchange in ("binance", "binance-usdm"):
        from candlelake.sources.binance_rest import BinanceRest

        url = settings.binance_rest_url if exchange == "binance" else settings.binance_usdm_rest_url
        return {exchange: BinanceRest(exchange, url)}
    if exchange == "coinbase":
        from candlelake.sources.coinbase_rest import CoinbaseRest

        return {exchange: CoinbaseRest(settings.coinbase_rest_url)}
    return {}


def check_symbols(settings: Settings, source: str, symbols: list[str]) -> None:
    """Refuse unknown symbols before connecting, with the exchange's own list as the judge.

    When the exchange cannot be asked (offline), the feed starts anyway: messages for symbols it does
    not carry never come, and the health counters show it.
    """
    from candlelake.sources.http import ExchangeUnavailable

    exchange = exchange_of(source)
    try:
        if exchange in ("binance", "binance-usdm"):
            from candlelake.sources.binance_rest import BinanceRest

            url = settings.binance_rest_url if exchange == "binance" else settings.binance_usdm_rest_url
            unknown = BinanceRest(exchange, url).unknown_symbols(symbols)
        elif exchange == "coinbase":
            from candlelake.sources.coinbase_rest import CoinbaseRest

            unknown = CoinbaseRest(settings.coinbase_rest_url).unknown_products(symbols)
        else:
            return
    except ExchangeUnavailable as exc:
        log.warning("could not check the symbols with %s (%s); starting anyway", exchange, exc)
        return
    if unknown:
        raise ConfigError(f"{exchange} does not list {', '.join(unknown)}; check the spelling (e.g. BTCUSDT, BTC-USD)")


def feed_settings(settings: Settings, watchdog_s: float) -> FeedSettings:
    from candlelake.sources.websocket_feed import FeedSettings

    return FeedSettings(watchdog_s=watchdog_s, lifetime_s=settings.ws_lifetime_s, overlap_s=settings.ws_overlap_s)


def connectors(
    settings: Settings, source: str, symbols: list[str], rate: float, seed: int, limit: int | None
) -> list[Connector]:
    if source == "simulator":
        return [SimulatorFeed(symbols, rate, seed, limit)]
    if source in ("binance", "binance-usdm"):
        from candlelake.sources.binance_ws import BinanceTradeFeed

        url = settings.binance_ws_url if source == "binance" else settings.binance_usdm_ws_url
        market: Literal["binance", "binance-usdm"] = "binance" if source == "binance" else "binance-usdm"
        return [
            BinanceTradeFeed(market, symbols, base_url=url, settings=feed_settings(settings, settings.ws_watchdog_s))
        ]
    if source == "coinbase":
        from candlelake.sources.coinbase_ws import CoinbaseMatchesFeed

        # Coinbase sends a heartbeat per product every second: ten silent seconds mean a dead feed.
        watchdog = min(settings.ws_watchdog_s, 10.0)
        return [CoinbaseMatchesFeed(symbols, url=settings.coinbase_ws_url, settings=feed_settings(settings, watchdog))]
    if source == "binance-rest":
        from candlelake.sources.binance_rest import BinanceRest
        from candlelake.sources.pollers import PricePoller

        rest = BinanceRest("binance", settings.binance_rest_url)
        return [PricePoller(lambda: rest.prices(symbols), settings.poll_interval_s, name="binance-rest")]
    if source == "coingecko":
        from candlelake.sources.pollers import CoinGeckoPrices, PricePoller

        gecko = CoinGeckoPrices(settings.coingecko_url)
        return [PricePoller(lambda: gecko.prices(symbols), settings.poll_interval_s, name="coingecko")]
    raise ConfigError(
        f"unknown source {source!r}; choose one of simulator, {', '.join(EXCHANGE_SOURCES + PRICE_SOURCES)}"
    )


def run(
    settings: Settings, source: str, symbols: list[str] | None, rate: float, seed: int, limit: int | None = None
) -> int:
    """The producer process: run the source until a signal (or `limit`), flush, report; trades produced."""
    from candlelake.coverage import CoverageStore
    from candlelake.ingest.dead_letter import DeadLetterSink
    from candlelake.ingest.gaps import GapLedger

    chosen = _symbols(source, symbols, settings)
    if not chosen:
        raise ConfigError(f"no symbols for {source}: give --symbols or CANDLELAKE_PRODUCER_SYMBOLS")
    live = source in EXCHANGE_SOURCES
    if source in EXCHANGE_SOURCES:
        check_symbols(settings, source, chosen)
    feeds = connectors(settings, source, chosen, rate, seed, limit)

    counters = Counters()
    ledger = GapLedger(settings.pg_dsn()) if live else None
    # Price points are no trades: they cover nothing.
    store = CoverageStore(settings.pg_dsn()) if source not in PRICE_SOURCES else None
    dead_letters = DeadLetterSink(settings, client_id=f"candlelake-{source}-dead-letter")
    prices = KafkaPriceSink(settings) if source in PRICE_SOURCES else None
    pipeline = Pipeline(
        counters,
        dead_letters,
        prices=prices,
        ledger=ledger,
        histories=histories(settings, source) if live and settings.auto_backfill else {},
        grace_s=settings.gap_grace_s,
        track_gaps=live,
        source=f"{source}@{socket.gethostname()}",
        coverage=store,
        coverage_kind="live" if live else "simulator",
    )
    pipeline.attach(make_trade_sink(settings, pipeline.delivered, pipeline.delivery_failed, f"candlelake-{source}"))
    if ledger is not None:
        try:
            for symbol, last in ledger.positions(source).items():
                if symbol in chosen:
                    pipeline.tracker.seed(source, symbol, last)
        except Exception as exc:
            log.warning("could not read the last trade ids of the previous run (%s)", exc)

    def beat() -> None:  # more bookkeeping on the health beat; flush_counts never raises
        dead_letters.flush_counts(settings.pg_dsn())
        pipeline.save_positions()

    reporter = HealthReporter(settings, counters, producer=f"{source}@{socket.gethostname()}", source=source, also=beat)
    reporter.start()
    log.info("producing %s for %s into %s", source, ",".join(chosen), settings.kafka_bootstrap)
    try:
        asyncio.run(_serve(pipeline, feeds))
    finally:
        pipeline.trades.close()  # flushes: every trade handed to the client is delivered or recorded
        dead_letters.close()  # flushes: every dead letter is acknowledged (and counted) or failed
        dead_letters.flush_counts(settings.pg_dsn())
        if prices is not None:
            prices.close()
        pipeline.maintain()  # the ledger rows of failures found while flushing
        pipeline.close_coverage()
        if store is not None:
            store.close()
        reporter.stop()
        if ledger is not None:
            ledger.close_connection()
        log.info("producer stopped: %s", counters.snapshot())
    return counters.produced


async def _serve(pipeline: Pipeline, feeds: list[Connector]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(feed.run(pipeline.emit, stop)) for feed in feeds]
    tasks.append(asyncio.create_task(_maintain(pipeline, stop)))
    tasks.append(asyncio.create_task(_backfill(pipeline, stop)))
    await stop.wait()
    done, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None:
            log.error("a producer task failed: %s", task.exception())


async def _maintain(pipeline: Pipeline, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.to_thread(pipeline.maintain)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _backfill(pipeline: Pipeline, stop: asyncio.Event) -> None:
    """Fill declared gaps one at a time; a failed attempt stays open in the ledger for a later run."""
    while not stop.is_set():
        gap = await asyncio.to_thread(pipeline.next_backfill, 0.5)
        if gap is None:
            continue
        try:
            sent, not_found = await asyncio.to_thread(pipeline.backfill, gap)
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning(
                "backfill of %s:%s %d..%d failed: %s", gap.exchange, gap.symbol, gap.first_id, gap.last_id, message
            )
            if pipeline.ledger is not None and gap.gap_id is not None:
                await asyncio.to_thread(pipeline.ledger.note_attempt, gap.gap_id, f"backfill failed: {message}")
            continue
        log.info(
            "backfilled %s:%s %d..%d: %d sent, %d not found",
            gap.exchange,
            gap.symbol,
            gap.first_id,
            gap.last_id,
            sent,
            not_found,
        )
        if pipeline.ledger is not None and gap.gap_id is not None:
            await asyncio.to_thread(pipeline.ledger.close, gap.gap_id, sent, not_found)
