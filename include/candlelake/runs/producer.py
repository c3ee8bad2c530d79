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
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from candlelake.config import ConfigError, Settings
from candlelake.coverage import CoverageStore
from candlelake.exchanges import EXCHANGES, SOURCES, Source, coingecko_symbol
from candlelake.ingest.counters import Counters, DeliveryReports
from candlelake.ingest.dead_letter import DeadLetterSink
from candlelake.ingest.gaps import GapLedger
from candlelake.ingest.health_reporter import HealthReporter
from candlelake.ingest.kafka_sinks import KafkaPriceSink, KafkaTradeSink
from candlelake.ingest.pipeline import Pipeline
from candlelake.sources.events import Emit
from candlelake.sources.rest_api import rest_api, unknown_symbols
from candlelake.util import first_line

if TYPE_CHECKING:
    from candlelake.sources.websocket_feed import FeedSettings

log = logging.getLogger(__name__)

# Coinbase sends a heartbeat per product every second: ten silent seconds mean a dead feed.
COINBASE_WATCHDOG_S = 10.0


class Connector(Protocol):
    async def run(self, emit: Emit, stop: asyncio.Event) -> None: ...


@dataclass(frozen=True)
class SimulatorOptions:
    """`--rate`, `--seed` and `--limit`: only the simulator has them."""

    rate: float
    seed: int
    limit: int | None = None


def choose_symbols(settings: Settings, source: Source, symbols: list[str] | None) -> list[str]:
    """The markets to follow, spelled as the source spells them: given, configured, or the source's defaults."""
    defaults = settings.simulator_symbols if source.kind == "simulated" else list(source.default_symbols)
    chosen = symbols or settings.producer_symbols or defaults
    return [source.normalize_symbol(s) for s in chosen]


def check_symbols(settings: Settings, source: Source, symbols: list[str]) -> None:
    """Refuse unknown symbols before connecting, with the exchange's own list as the judge.

    When the exchange cannot be asked (offline), the feed starts anyway: messages for symbols it does
    not carry never come, and the health counters show it.
    """
    from candlelake.sources.http import ExchangeUnavailable

    market = source.market
    if market is None:
        return
    try:
        unknown = unknown_symbols(settings, market, symbols)
    except ExchangeUnavailable as exc:
        log.warning("could not check the symbols with %s (%s); starting anyway", market.name, exc)
        return
    if unknown:
        raise ConfigError(
            f"{market.name} does not list {', '.join(unknown)}; check the spelling (e.g. {market.symbol_example})"
        )


def feed_settings(settings: Settings, watchdog_s: float) -> FeedSettings:
    from candlelake.sources.websocket_feed import FeedSettings

    return FeedSettings(watchdog_s=watchdog_s, lifetime_s=settings.ws_lifetime_s, overlap_s=settings.ws_overlap_s)


# --- one connector per source --------------------------------------------------------------------------


def _simulator(settings: Settings, source: Source, symbols: list[str], options: SimulatorOptions) -> Connector:
    from candlelake.sources.simulator import SimulatorFeed

    return SimulatorFeed(symbols, options.rate, options.seed, options.limit)


def _binance_trades(settings: Settings, source: Source, symbols: list[str], options: SimulatorOptions) -> Connector:
    from candlelake.sources.binance_ws import BinanceTradeFeed

    market = EXCHANGES[source.exchange]
    return BinanceTradeFeed(
        "binance-usdm" if market.name == "binance-usdm" else "binance",
        symbols,
        base_url=market.ws_base(settings),
        settings=feed_settings(settings, settings.ws_watchdog_s),
    )


def _coinbase_matches(settings: Settings, source: Source, symbols: list[str], options: SimulatorOptions) -> Connector:
    from candlelake.sources.coinbase_ws import CoinbaseMatchesFeed

    watchdog = min(settings.ws_watchdog_s, COINBASE_WATCHDOG_S)
    return CoinbaseMatchesFeed(symbols, url=settings.coinbase_ws_url, settings=feed_settings(settings, watchdog))


def _binance_prices(settings: Settings, source: Source, symbols: list[str], options: SimulatorOptions) -> Connector:
    from candlelake.sources.binance_rest import BinanceRest
    from candlelake.sources.pollers import PricePoller

    rest = BinanceRest("binance", settings.binance_rest_url)
    return PricePoller(lambda: rest.prices(symbols), settings.poll_interval_s, name=source.name)


def _coingecko_prices(settings: Settings, source: Source, symbols: list[str], options: SimulatorOptions) -> Connector:
    from candlelake.sources.pollers import CoinGeckoPrices, PricePoller

    gecko = CoinGeckoPrices(
        settings.coingecko_url,
        symbols={coin: coingecko_symbol(coin) for coin in symbols},
        api_key=settings.coingecko_api_key or None,
    )
    # One request for every coin, every CANDLELAKE_COINGECKO_INTERVAL_S: the keyless API allows a few
    # calls a minute, shared by everyone behind the same address.
    return PricePoller(lambda: gecko.prices(symbols), settings.coingecko_interval_s, name=source.name)


CONNECTORS: dict[str, Callable[[Settings, Source, list[str], SimulatorOptions], Connector]] = {
    "simulator": _simulator,
    "binance": _binance_trades,
    "binance-usdm": _binance_trades,
    "coinbase": _coinbase_matches,
    "binance-rest": _binance_prices,
    "coingecko": _coingecko_prices,
}
assert set(CONNECTORS) == set(SOURCES), "every registered source needs a connector"


# --- the process ---------------------------------------------------------------------------------------


class Producer:
    """One producer process's parts, built for its source, and their orderly close."""

    def __init__(self, settings: Settings, source: Source, symbols: list[str]) -> None:
        self.settings = settings
        self.source = source
        self.name = f"{source.name}@{socket.gethostname()}"
        self.counters = Counters()
        self.ledger = GapLedger(settings.pg_dsn()) if source.live else None
        # Price points are no trades: they cover nothing.
        self.coverage = CoverageStore(settings.pg_dsn()) if source.kind != "prices" else None
        self.dead_letters = DeadLetterSink(settings, client_id=f"candlelake-{source.name}-dead-letter")
        self.prices = KafkaPriceSink(settings) if source.kind == "prices" else None
        reports = DeliveryReports(self.counters, keep_failures=True)
        self.trades = KafkaTradeSink(settings, self.counters, client_id=f"candlelake-{source.name}", reports=reports)
        market = source.market
        backfill = source.live and settings.auto_backfill and market is not None
        self.pipeline = Pipeline(
            self.counters,
            self.trades,
            self.dead_letters,
            deliveries=reports,
            prices=self.prices,
            ledger=self.ledger,
            histories={market.name: rest_api(settings, market)} if backfill and market is not None else {},
            grace_s=settings.gap_grace_s,
            track_gaps=source.live,
            source=self.name,
            coverage=self.coverage,
            coverage_kind="live" if source.live else "simulator",
        )
        self._resume_ids(symbols)
        self.reporter = HealthReporter(settings, self.counters, producer=self.name, source=source.name, also=self._beat)

    def _resume_ids(self, symbols: list[str]) -> None:
        """Start from the last ids the previous run sent, so ids missed while it was down are a gap too."""
        if self.ledger is None:
            return
        try:
            for symbol, last in self.ledger.positions(self.source.name).items():
                if symbol in symbols:
                    self.pipeline.tracker.seed(self.source.name, symbol, last)
        except Exception as exc:
            log.warning("could not read the last trade ids of the previous run (%s)", first_line(exc))

    def _beat(self) -> None:
        """More bookkeeping on the health beat; flush_counts never raises."""
        self.dead_letters.flush_counts(self.settings.pg_dsn())
        self.pipeline.save_positions()

    def close(self) -> None:
        """Flush every sink, then write what flushing learned: nothing handed to a client goes unaccounted."""
        self.trades.close()  # every trade handed to the client is delivered or reported failed
        self.dead_letters.close()  # every dead letter is acknowledged (and counted) or failed
        self.dead_letters.flush_counts(self.settings.pg_dsn())
        if self.prices is not None:
            self.prices.close()
        self.pipeline.maintain()  # the ledger rows of failures found while flushing
        self.pipeline.close_coverage()
        if self.coverage is not None:
            self.coverage.close()
        self.reporter.stop()
        if self.ledger is not None:
            self.ledger.close_connection()


def run(
    settings: Settings, source: str, symbols: list[str] | None, rate: float, seed: int, limit: int | None = None
) -> int:
    """The producer process: run the source until a signal (or `limit`), flush, report; trades produced."""
    chosen_source = SOURCES.get(source)
    if chosen_source is None:
        raise ConfigError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    chosen = choose_symbols(settings, chosen_source, symbols)
    if not chosen:
        raise ConfigError(f"no symbols for {source}: give --symbols or CANDLELAKE_PRODUCER_SYMBOLS")
    if chosen_source.live:
        check_symbols(settings, chosen_source, chosen)
    feed = CONNECTORS[source](settings, chosen_source, chosen, SimulatorOptions(rate, seed, limit))

    producer = Producer(settings, chosen_source, chosen)
    producer.reporter.start()
    log.info("producing %s for %s into %s", source, ",".join(chosen), settings.kafka_bootstrap)
    try:
        asyncio.run(_serve(producer.pipeline, [feed]))
    finally:
        producer.close()
        log.info("producer stopped: %s", producer.counters.snapshot())
    return producer.counters.produced


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
            message = first_line(exc)
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
