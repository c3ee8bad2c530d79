"""A seeded market simulator for offline demos and tests.

Each symbol's price follows a geometric random walk quantized to its tick; trades arrive as a Poisson
process (exponential gaps) at a configurable total rate, spread over the symbols; sizes are log-normal,
quantized to a lot step. The same seed, start time and first trade id give the same trades, byte for
byte, which lets tests know exactly what they produced. `SimulatorFeed` runs it in real time for the
producer.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from candlelake.sources.events import Emit, Reconnected
from candlelake.trade import Trade
from candlelake.util import now_us

EXCHANGE = "simulator"
_START_PRICES = {"BTCUSDT": "60000", "ETHUSDT": "3000", "SOLUSDT": "150", "XRPUSDT": "0.5", "DOGEUSDT": "0.15"}


@dataclass
class _Market:
    symbol: str
    price: Decimal
    tick: Decimal
    lot: Decimal
    next_id: int


def _tick_for(price: Decimal) -> Decimal:
    # About six significant digits, like most exchange tick sizes.
    exponent = math.floor(math.log10(float(price))) - 5
    return Decimal(1).scaleb(min(exponent, -2))


class Simulator:
    """Generates trades; `trades()` is infinite, `take(n)` finite. Not thread-safe."""

    def __init__(
        self,
        symbols: list[str],
        rate: float,
        seed: int = 42,
        start_time_us: int = 0,
        first_trade_id: int = 1,
        exchange: str = EXCHANGE,
        volatility: float = 0.0005,
    ) -> None:
        if not symbols:
            raise ValueError("the simulator needs at least one symbol")
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"the trade rate must be a positive number of trades per second, not {rate}")
        self.rate = rate
        self.exchange = exchange
        self.volatility = volatility
        self._rng = random.Random(seed)
        self._clock_us = start_time_us
        self._markets = []
        for symbol in symbols:
            price = Decimal(_START_PRICES.get(symbol.upper(), "100"))
            self._markets.append(_Market(symbol.upper(), price, _tick_for(price), Decimal("0.00001"), first_trade_id))

    @property
    def symbols(self) -> tuple[str, ...]:
        """The markets it trades, as its trades name them."""
        return tuple(m.symbol for m in self._markets)

    def next_gap_us(self) -> int:
        """Microseconds until the next trade (exponential with mean 1/rate)."""
        return max(0, int(self._rng.expovariate(self.rate) * 1_000_000))

    def next_trade(self, trade_time_us: int, ingest_time_us: int | None = None) -> Trade:
        market = self._rng.choice(self._markets)
        step = self._rng.gauss(0.0, self.volatility)
        raw = Decimal(repr(float(market.price) * math.exp(step)))
        price = max(market.tick, raw.quantize(market.tick))
        market.price = price
        qty = Decimal(repr(self._rng.lognormvariate(-3.0, 1.2))).quantize(market.lot)
        qty = max(qty, market.lot)
        trade = Trade(
            exchange=self.exchange,
            symbol=market.symbol,
            trade_id=market.next_id,
            price=price,
            qty=qty,
            trade_time_us=trade_time_us,
            is_buyer_maker=self._rng.random() < 0.5,
            ingest_time_us=ingest_time_us if ingest_time_us is not None else trade_time_us,
            source="simulator",
        )
        market.next_id += 1
        return trade

    def trades(self) -> Iterator[Trade]:
        """Trades with simulated times: a Poisson process starting at `start_time_us`."""
        while True:
            self._clock_us += self.next_gap_us()
            yield self.next_trade(self._clock_us)

    def take(self, n: int) -> list[Trade]:
        iterator = self.trades()
        return [next(iterator) for _ in range(n)]


class SimulatorFeed:
    """Simulated trades in real time (trade time = now), as a producer connector (`--source simulator`)."""

    def __init__(self, symbols: list[str], rate: float, seed: int, limit: int | None = None) -> None:
        started_us = now_us()
        # Ids continue upward across restarts (the base grows 1,000 per millisecond of wall time), so a
        # restarted simulator never reuses an id that dedupe would then throw away.
        self.sim = Simulator(
            symbols, rate, seed=seed, start_time_us=started_us, first_trade_id=started_us // 1000 * 1000
        )
        self.limit = limit
        self.sent = 0

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
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
            stamp = now_us()
            emit(self.sim.next_trade(stamp, stamp))
            self.sent += 1
        stop.set()  # a limited run ends the producer
