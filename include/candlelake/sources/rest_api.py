"""An exchange's REST API client, chosen by the registry's protocol family (candlelake.exchanges).

It serves the trade history that fills id gaps (`history`) and the symbol list the producer checks
its markets against (`unknown_symbols`).
"""

from __future__ import annotations

from candlelake.config import Settings
from candlelake.exchanges import Exchange
from candlelake.sources.binance_rest import BinanceRest
from candlelake.sources.coinbase_rest import CoinbaseRest

RestApi = BinanceRest | CoinbaseRest


def rest_api(settings: Settings, market: Exchange) -> RestApi:
    """A client of `market`'s REST API at its configured base URL; the caller closes it."""
    if market.api == "coinbase":
        return CoinbaseRest(market.rest_base(settings))
    return BinanceRest(market.name, market.rest_base(settings))


def unknown_symbols(settings: Settings, market: Exchange, symbols: list[str]) -> list[str]:
    """Those of `symbols` the exchange does not list (raises ExchangeUnavailable when it cannot be asked)."""
    api = rest_api(settings, market)
    try:
        return api.unknown_symbols(symbols)
    finally:
        api.close()
