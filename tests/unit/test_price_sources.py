"""The price sources' defaults: CoinGecko's coins and their names, and the pollers' backoff."""

from __future__ import annotations

import pytest

from candlelake.exchanges import COINGECKO_TICKERS, SOURCES, coingecko_symbol
from candlelake.sources.pollers import MAX_BACKOFF, PricePoller

pytestmark = pytest.mark.unit


def test_coingecko_follows_a_dozen_coins_named_by_their_tickers() -> None:
    coins = SOURCES["coingecko"].default_symbols
    assert len(coins) >= 10 and set(coins) == set(COINGECKO_TICKERS)
    symbols = [coingecko_symbol(coin) for coin in coins]
    assert len(set(symbols)) == len(symbols)  # no two coins share a name
    assert all(s.endswith("-USD") and s.split("-")[0].isupper() for s in symbols)
    assert coingecko_symbol("avalanche-2") == "AVAX-USD" and coingecko_symbol("bitcoin", "eur") == "BTC-EUR"
    assert coingecko_symbol("no-such-coin") == "no-such-coin-usd"  # unmapped: CoinGecko's id, as before


def test_a_poller_waits_twice_as_long_per_failure_in_a_row_up_to_its_cap() -> None:
    poller = PricePoller(lambda: [], 30.0)
    waits = []
    for failures in range(6):
        poller.failures_in_a_row = failures
        waits.append(poller.wait_s())
    assert waits == [30.0, 60.0, 120.0, 240.0, 240.0, 240.0] and MAX_BACKOFF == 8
