"""Price pollers: connectors that ask a REST API for last prices every few seconds.

They emit `PricePoint`s only: a ticker or an index price is not a trade and has no volume, so a poller
never makes a `Trade` (candles built from trades stay exchange-exact; price points are a reference
line and a liveness signal). A failed poll is logged in one line and the next poll comes at the next
interval: the poller never dies of an exchange outage.

CoinGecko's `/simple/price` answer (with `precision=full` and `include_last_updated_at=true`)::

    {"bitcoin": {"usd": 67187.33589365664, "last_updated_at": 1711356300}}

Prices are JSON numbers there, parsed straight into `Decimal`. A point's exchange is "coingecko" and its
symbol `<coin id>-<vs currency>` ("bitcoin-usd") unless a `symbols` mapping names it
(`{"bitcoin": "BTC-USD"}` gives "BTC-USD" for every vs currency asked; use one currency per poller then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal

from candlelake.price import PricePoint
from candlelake.sources.events import Emit
from candlelake.sources.http import ExchangeUnavailable, RestClient
from candlelake.util import one_line

log = logging.getLogger(__name__)

COINGECKO_URL = "https://api.coingecko.com/api/v3"
COINGECKO = "coingecko"
COINGECKO_SOURCE = "coingecko-simple-price"
MAX_BACKOFF = 8
"""After failed polls in a row, a poller waits at most this many intervals before asking again."""


class CoinGeckoPrices:
    """CoinGecko's aggregated prices (`/simple/price`), exactly as CoinGecko writes them.

    `api_key` (a demo key) is sent as `x-cg-demo-api-key`; the keyless public API works without one.
    Without a `client`, one is made that tries once per call: a poller's next interval is the retry,
    and a 429's `Retry-After` still holds back the next call (the client remembers it).
    """

    def __init__(
        self,
        base_url: str = COINGECKO_URL,
        *,
        vs_currencies: Sequence[str] = ("usd",),
        symbols: Mapping[str, str] | None = None,
        api_key: str | None = None,
        client: RestClient | None = None,
    ) -> None:
        self.vs_currencies = [c.lower() for c in vs_currencies]
        self.symbols = dict(symbols or {})
        headers = {"x-cg-demo-api-key": api_key} if api_key else None
        self._owns_client = client is None
        self.client = client or RestClient(base_url, name=COINGECKO, headers=headers, max_attempts=1)

    def symbol(self, coin: str, currency: str) -> str:
        """The point's symbol: the configured name for `coin`, else `<coin id>-<vs currency>`."""
        return self.symbols.get(coin, f"{coin}-{currency}")

    def prices(self, coins: Iterable[str]) -> list[PricePoint]:
        """One `PricePoint` per coin id (`bitcoin`, `ethereum`) and vs currency that CoinGecko quotes."""
        wanted = list(dict.fromkeys(c.strip().lower() for c in coins))
        if not wanted:
            return []
        answer = self.client.get_json(
            "/simple/price",
            {
                "ids": ",".join(wanted),
                "vs_currencies": ",".join(self.vs_currencies),
                "include_last_updated_at": "true",
                "precision": "full",
            },
        )
        if not isinstance(answer, dict):
            raise ExchangeUnavailable(f"coingecko answered /simple/price with {str(answer)[:200]}")
        points = []
        for coin in wanted:
            quotes = answer.get(coin)
            if not isinstance(quotes, dict):
                continue  # CoinGecko leaves out ids it does not know
            updated = quotes.get("last_updated_at")
            if not isinstance(updated, int) or isinstance(updated, bool):
                raise ExchangeUnavailable(f"coingecko sent no last_updated_at for {coin}: {quotes!r}")
            for currency in self.vs_currencies:
                price = _price(quotes.get(currency))
                if price is not None:
                    points.append(
                        PricePoint(COINGECKO, self.symbol(coin, currency), price, updated * 1_000_000, COINGECKO_SOURCE)
                    )
        return points

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


class PricePoller:
    """A connector: every `interval_s`, call `fetch` (in a worker thread) and emit the `PricePoint`s.

    `fetch` is a blocking call such as `lambda: rest.prices(["BTCUSDT"])` (`BinanceRest.prices`) or
    `lambda: gecko.prices(["bitcoin"])` (`CoinGeckoPrices.prices`); `name` labels its log lines. Polls
    keep a fixed rate (a slow poll shortens the wait after it, never stacks polls). After a failed poll
    (a refusal such as a 429 without Retry-After among them) the wait doubles, up to `MAX_BACKOFF` times
    the interval, and returns to the interval after a poll succeeds: a poller asking again at full rate
    is what keeps a rate limit closed. `stop` ends the loop at once; a poll still in flight finishes in
    its thread and is discarded.
    """

    def __init__(
        self, fetch: Callable[[], Sequence[PricePoint]], interval_s: float = 10.0, *, name: str = "prices"
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.fetch = fetch
        self.interval_s = interval_s
        self.name = name
        self.polls = 0
        self.failures = 0
        self.failures_in_a_row = 0

    def wait_s(self) -> float:
        """The wait from one poll's start to the next: the interval, doubled per failure in a row."""
        return self.interval_s * min(2**self.failures_in_a_row, MAX_BACKOFF)

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        next_poll = time.monotonic()
        while not stop.is_set():
            points = await self._poll(stop)
            if points is None:
                return
            for point in points:
                if isinstance(point, PricePoint):  # a poller never emits trades, whatever fetch returns
                    emit(point)
            next_poll = max(next_poll + self.wait_s(), time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=next_poll - time.monotonic())

    async def _poll(self, stop: asyncio.Event) -> Sequence[PricePoint] | None:
        """One fetch's points ([] when it failed), or None when `stop` was set meanwhile."""
        fetch = asyncio.ensure_future(asyncio.to_thread(self.fetch))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait((fetch, stopping), return_when=asyncio.FIRST_COMPLETED)
        if not fetch.done():
            fetch.add_done_callback(_discard)
            return None
        stopping.cancel()
        self.polls += 1
        try:
            points = fetch.result()
        except Exception as error:  # any failure: log it and poll again after the backed-off wait
            self.failures += 1
            self.failures_in_a_row += 1
            log.warning(
                "%s poll failed, retrying in %g s: %s", self.name, self.wait_s(), one_line(error, None, typed=True)
            )
            return []
        self.failures_in_a_row = 0
        return points


def _discard(task: asyncio.Future[Sequence[PricePoint]]) -> None:
    if not task.cancelled():
        task.exception()  # mark a late failure as seen, so asyncio does not log it as unhandled


def _price(value: object) -> Decimal | None:
    """A quoted price as an exact Decimal (JSON numbers arrive as Decimal or int), None when absent."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        return None
    try:
        price = Decimal(value)
    except ArithmeticError:
        return None
    return price if price.is_finite() and price > 0 else None
