"""The registry of exchanges and producer sources: every name, URL setting, symbol rule and REST history.

Like cryptofeed's exchange map, this is the one place that knows which exchanges exist. The producer,
the backfills, the replay, the reconciliation and the CLI and DAG forms read their choices from here,
so a new exchange is one `Exchange` entry (plus its adapters in `candlelake.sources`), not an edit of
every if-chain.

    exchange   a market whose trades we key as `exchange:symbol` (binance, binance-usdm, coinbase)
    source     what `candlelake produce --source` runs: an exchange's WebSocket trades, a REST price
               poller (binance-rest, coingecko: price points, never trades) or the simulator

This module is data and imports nothing of candlelake, so every layer can read it; the adapters it
names are built by candlelake.sources.rest_api (REST) and candlelake.runs.producer (feeds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from candlelake.config import Settings


def binance_symbol(symbol: str) -> str:
    """`XRP/ETH`, `xrp-eth` and `xrpeth` are all Binance's `XRPETH`."""
    return symbol.replace("/", "").replace("-", "").strip().upper()


def coinbase_product(symbol: str) -> str:
    """Coinbase names products `BTC-USD`."""
    return symbol.strip().upper()


def coingecko_id(symbol: str) -> str:
    """CoinGecko's coin ids are lower case: `bitcoin`, `ethereum`."""
    return symbol.strip().lower()


COINGECKO_TICKERS: dict[str, str] = {
    "bitcoin": "BTC",
    "ethereum": "ETH",
    "binancecoin": "BNB",
    "solana": "SOL",
    "ripple": "XRP",
    "cardano": "ADA",
    "dogecoin": "DOGE",
    "tron": "TRX",
    "avalanche-2": "AVAX",
    "chainlink": "LINK",
    "polkadot": "DOT",
    "litecoin": "LTC",
}
"""The `coingecko` source's default coins: CoinGecko's coin id and the ticker its price points are
named by (`bitcoin` -> `BTC-USD`, as Coinbase names its products). CoinGecko's ids are not tickers
(`avalanche-2` is AVAX, `binancecoin` BNB), so the map is written out, not derived."""


def coingecko_symbol(coin_id: str, currency: str = "usd") -> str:
    """A CoinGecko price point's symbol: `<TICKER>-<CURRENCY>` for a mapped coin, else `<id>-<currency>`."""
    ticker = COINGECKO_TICKERS.get(coin_id)
    return f"{ticker}-{currency.upper()}" if ticker else f"{coin_id}-{currency.lower()}"


@dataclass(frozen=True)
class Exchange:
    """A market whose trades candlelake keys, checks, fills and reconciles.

    `api` is the protocol family its WebSocket and REST endpoints speak (the adapters in
    candlelake.sources: `binance` for spot and USD-M futures alike, `coinbase`); `ws_url` and `rest_url`
    name the `Settings` fields holding its endpoints (so tests point them at local servers); `klines`
    says whether its REST API serves klines to reconcile against.
    """

    name: str
    api: Literal["binance", "coinbase"]
    ws_url: str
    rest_url: str
    normalize_symbol: Callable[[str], str]
    klines: bool
    symbol_example: str

    def rest_base(self, settings: Settings) -> str:
        return str(getattr(settings, self.rest_url))

    def ws_base(self, settings: Settings) -> str:
        return str(getattr(settings, self.ws_url))


EXCHANGES: dict[str, Exchange] = {
    e.name: e
    for e in (
        Exchange("binance", "binance", "binance_ws_url", "binance_rest_url", binance_symbol, True, "BTCUSDT"),
        Exchange(
            "binance-usdm", "binance", "binance_usdm_ws_url", "binance_usdm_rest_url", binance_symbol, True, "BTCUSDT"
        ),
        Exchange("coinbase", "coinbase", "coinbase_ws_url", "coinbase_rest_url", coinbase_product, False, "BTC-USD"),
    )
}
EXCHANGE_NAMES: tuple[str, ...] = tuple(EXCHANGES)
KLINE_EXCHANGES: tuple[str, ...] = tuple(name for name, e in EXCHANGES.items() if e.klines)

SourceKind = Literal["trades", "prices", "simulated"]


@dataclass(frozen=True)
class Source:
    """What one producer process runs (`candlelake produce --source NAME`).

    `exchange` is the market its records are keyed by; `kind` says what it yields: exchange trades
    (gap-tracked, backfilled, checked against the exchange's symbol list, covered as `live`),
    price points (no trades, no coverage) or simulated trades (covered as `simulator`).
    """

    name: str
    exchange: str
    kind: SourceKind
    default_symbols: tuple[str, ...]
    normalize_symbol: Callable[[str], str]

    @property
    def live(self) -> bool:
        """Trades from a real exchange: ids are tracked, gaps recorded and filled, symbols checked."""
        return self.kind == "trades"

    @property
    def market(self) -> Exchange | None:
        return EXCHANGES.get(self.exchange)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("simulator", "simulator", "simulated", ("BTCUSDT", "ETHUSDT"), binance_symbol),
        Source("binance", "binance", "trades", ("BTCUSDT", "ETHUSDT"), binance_symbol),
        Source("binance-usdm", "binance-usdm", "trades", ("BTCUSDT", "ETHUSDT"), binance_symbol),
        Source("coinbase", "coinbase", "trades", ("BTC-USD", "ETH-USD"), coinbase_product),
        Source("binance-rest", "binance", "prices", ("BTCUSDT", "ETHUSDT"), binance_symbol),
        Source("coingecko", "coingecko", "prices", tuple(COINGECKO_TICKERS), coingecko_id),
    )
}
SOURCE_NAMES: tuple[str, ...] = tuple(SOURCES)


def exchange(name: str) -> Exchange:
    """The registered exchange `name`; ValueError naming the choices otherwise."""
    try:
        return EXCHANGES[name]
    except KeyError:
        raise ValueError(f"exchange {name!r} is not one of {', '.join(EXCHANGE_NAMES)}") from None


def source(name: str) -> Source:
    """The registered producer source `name`; ValueError naming the choices otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r}; choose one of {', '.join(SOURCE_NAMES)}") from None
