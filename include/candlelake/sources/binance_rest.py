"""Binance spot and USD-M futures REST: aggregate trades by id (backfill), symbol checks, last prices.

An `/api/v3/aggTrades` record (USD-M: `/fapi/v1/aggTrades`, without the best-match flag `M`) is the
WebSocket `aggTrade` event without `e`, `E` and `s`::

    {"a": 665076760, "p": "58001.03000000", "q": "0.08620500", "f": 745522877, "l": 745522877,
     "T": 1617566591314, "m": true, "M": true}

`fromId` is inclusive and pages ascend by id, so a range is read by asking from its first id and
continuing after the last id of each page. A spot `/api/v3/ticker/price` entry is
`{"symbol": "BTCUSDT", "price": "58001.03000000"}` (no time: the answer's arrival time is used); USD-M's
`/fapi/v1/ticker/price` adds `"time": 1617647797485` (epoch ms).

`/api/v3/klines` (USD-M `/fapi/v1/klines`) answers arrays of 12 fields (candlelake.sources.klines shows one),
ascending by open time; `startTime` and `endTime` bound the open time, both inclusive, so a range is
read by asking from its start and continuing 1 ms after the last open time of each page.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from candlelake.price import PricePoint
from candlelake.sources.binance import normalize_symbol, parse_trade
from candlelake.sources.fields import InvalidTrade, Rejection, decimal_field, epoch_us
from candlelake.sources.http import ExchangeRequestError, ExchangeUnavailable, RestClient, json_array_items
from candlelake.sources.klines import Kline, KlineFormatError, check_interval, parse_kline
from candlelake.trade import Trade
from candlelake.util import to_ms

SPOT_URL = "https://api.binance.com"
USDM_URL = "https://fapi.binance.com"
BACKFILL_SOURCE = "binance-rest-backfill"
TICKER_SOURCE = "binance-rest-ticker"
PAGE_LIMIT = 1000  # the most aggTrades returns per request
BAD_REQUEST = 400

_MARKETS = {
    # exchange: (live base URL, path prefix)
    "binance": (SPOT_URL, "/api/v3"),
    "binance-usdm": (USDM_URL, "/fapi/v1"),
}


class BinanceRest:
    """One Binance market's REST API (`exchange` "binance" for spot or "binance-usdm" for USD-M futures).

    Without a `client`, one is made for `base_url` (default: the live API) and closed by `close()`.
    """

    def __init__(
        self,
        exchange: str = "binance",
        base_url: str | None = None,
        client: RestClient | None = None,
        *,
        page_limit: int = PAGE_LIMIT,
    ) -> None:
        if exchange not in _MARKETS:
            raise ValueError(f"exchange must be one of {', '.join(_MARKETS)}, not {exchange!r}")
        if not 1 <= page_limit <= PAGE_LIMIT:
            raise ValueError(f"page_limit must be between 1 and {PAGE_LIMIT}")
        live_url, self._prefix = _MARKETS[exchange]
        self.exchange = exchange
        self.page_limit = page_limit
        self._owns_client = client is None
        self.client = client or RestClient(base_url or live_url, name=exchange)

    def trades_between(self, symbol: str, first_id: int, last_id: int) -> Iterator[Trade | Rejection]:
        """Aggregate trades with ids in [first_id, last_id], ascending, nothing outside the range.

        Stops early when the exchange has no more (ids not traded yet): the caller sees which ids came.
        A record that fails validation comes out as a `Rejection` holding its exact JSON text.
        """
        symbol = normalize_symbol(symbol)
        next_id = first_id
        while next_id <= last_id:
            limit = min(self.page_limit, last_id - next_id + 1)
            response = self.client.get(
                f"{self._prefix}/aggTrades", {"symbol": symbol, "fromId": next_id, "limit": limit}
            )
            highest = next_id - 1
            count = 0
            for record, raw in json_array_items(response.text):
                count += 1
                trade_id = record.get("a") if isinstance(record, dict) else None
                if isinstance(trade_id, int) and not next_id <= trade_id <= last_id:
                    continue
                if isinstance(trade_id, int):
                    highest = max(highest, trade_id)
                yield self._trade_or_rejection(record, raw, symbol)
            if count < limit or highest < next_id:
                return  # the exchange has nothing more yet (or sent no usable id to continue from)
            next_id = highest + 1

    def klines(self, symbol: str, interval: str, start: datetime, end: datetime) -> Iterator[Kline]:
        """The klines of `symbol` at `interval` whose open time lies in [start, end), ascending."""
        symbol = normalize_symbol(symbol)
        check_interval(interval)
        next_ms, end_ms = to_ms(start), to_ms(end)
        while next_ms < end_ms:
            page = self.client.get_json(
                f"{self._prefix}/klines",
                {
                    "symbol": symbol,
                    "interval": interval,
                    "startTime": next_ms,
                    "endTime": end_ms - 1,
                    "limit": self.page_limit,
                },
            )
            if not isinstance(page, list):
                raise ExchangeUnavailable(f"{self.exchange} answered klines with {str(page)[:200]}, not a list")
            last_ms = next_ms - 1
            for values in page:
                try:
                    if not isinstance(values, list):
                        raise KlineFormatError("a kline is a JSON array")
                    kline = parse_kline(values)
                except KlineFormatError as error:
                    raise ExchangeUnavailable(f"{self.exchange} sent an unusable kline {values!r}: {error}") from None
                opened = to_ms(kline.open_time)
                if next_ms <= opened < end_ms:
                    last_ms = max(last_ms, opened)
                    yield kline
            if len(page) < self.page_limit or last_ms < next_ms:
                return  # the last page (or nothing usable to continue after)
            next_ms = last_ms + 1

    def unknown_symbols(self, symbols: Iterable[str]) -> list[str]:
        """The symbols this market does not list, in the order given (normalized: `btc/usdt` -> `BTCUSDT`)."""
        wanted = list(dict.fromkeys(normalize_symbol(s) for s in symbols))
        if not wanted:
            return []
        if self.exchange == "binance-usdm":  # no filter parameter: the list of all symbols
            listed = _listed(self.client.get_json(f"{self._prefix}/exchangeInfo"))
            return [s for s in wanted if s not in listed]
        try:
            listed = _listed(self.client.get_json(f"{self._prefix}/exchangeInfo", {"symbols": _json_list(wanted)}))
        except ExchangeRequestError as error:
            if error.status != BAD_REQUEST:
                raise
            # Spot refuses the whole list for one unknown (or malformed) symbol without naming it.
            return [s for s in wanted if not self._is_listed(s)]
        return [s for s in wanted if s not in listed]

    def prices(self, symbols: Iterable[str]) -> list[PricePoint]:
        """The last price of each symbol (a `PricePoint`: no volume), in the order the exchange answers."""
        wanted = list(dict.fromkeys(normalize_symbol(s) for s in symbols))
        if not wanted:
            return []
        if self.exchange == "binance-usdm":
            response = self.client.get(f"{self._prefix}/ticker/price")
        else:
            response = self.client.get(f"{self._prefix}/ticker/price", {"symbols": _json_list(wanted)})
        entries = response.data if isinstance(response.data, list) else [response.data]
        points = []
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("symbol") not in wanted:
                continue
            try:
                price = decimal_field(entry.get("price"), "price")
                time_us = epoch_us(entry["time"], "time") if "time" in entry else response.received_us
            except InvalidTrade as error:
                raise ExchangeUnavailable(f"{self.exchange} sent an unusable ticker {entry!r}: {error}") from None
            points.append(PricePoint(self.exchange, entry["symbol"], price, time_us, TICKER_SOURCE))
        return points

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def _is_listed(self, symbol: str) -> bool:
        try:
            return symbol in _listed(self.client.get_json(f"{self._prefix}/exchangeInfo", {"symbol": symbol}))
        except ExchangeRequestError as error:
            if error.status == BAD_REQUEST:  # -1121 Invalid symbol, -1100 Illegal characters
                return False
            raise

    def _trade_or_rejection(self, record: Any, raw: str, symbol: str) -> Trade | Rejection:
        try:
            if not isinstance(record, dict):
                raise InvalidTrade("malformed", f"an aggTrades record is a JSON object, not {type(record).__name__}")
            return parse_trade(record, exchange=self.exchange, source=BACKFILL_SOURCE, symbol=symbol)
        except InvalidTrade as error:
            return Rejection(raw=raw, code=error.code, reason=str(error), source=BACKFILL_SOURCE)


def _json_list(symbols: list[str]) -> str:
    """Binance's list parameter: a compact JSON array, `["BTCUSDT","ETHUSDT"]`."""
    return json.dumps(symbols, separators=(",", ":"))


def _listed(info: Any) -> set[str]:
    if not isinstance(info, dict) or not isinstance(info.get("symbols"), list):
        raise ExchangeUnavailable(f"exchangeInfo answer has no symbol list: {str(info)[:200]}")
    return {entry["symbol"] for entry in info["symbols"] if isinstance(entry, dict) and "symbol" in entry}
