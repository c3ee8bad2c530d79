"""Coinbase Exchange REST: a product's trades by trade id (backfill) and product checks.

A `GET /products/BAND-GBP/trades` record::

    {"time": "2021-04-17T16:43:30.244075Z", "trade_id": 881614, "price": "14.7775", "size": "0.04",
     "side": "sell"}

Which side `side` names: Coinbase's reference for this endpoint
(docs.cdp.coinbase.com, Exchange API, "Get product trades") defines it as the side of the *maker*
order, the one resting on the book: `buy` is a down-tick (a resting buy was hit by a seller), `sell` an
up-tick. That is the same convention as the WebSocket `match` message, so the mapping is the one of
`candlelake.sources.coinbase.parse_match`: `side == "buy"` means the buyer was the maker
(`is_buyer_maker` true). Some write-ups call the REST side the taker's; Coinbase's own reference says
otherwise and is followed here (ccxt, which reports takers, likewise inverts the public REST side). A
trade read here and the same trade id received as a `match` therefore agree.

Pagination (Coinbase's cursor scheme): pages come newest first; `after=X` returns trades with
`trade_id < X`, up to `limit` (at most 1000); the `CB-AFTER` response header is the cursor for the next,
older page (the oldest id on this page). A range [first, last] is read from `after=last + 1` down to
`first`, then handed out ascending.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

from candlelake.sources import coinbase
from candlelake.sources.fields import InvalidTrade, Rejection
from candlelake.sources.http import ExchangeRequestError, ExchangeUnavailable, RestClient, json_array_items
from candlelake.trade import Trade

COINBASE_URL = "https://api.exchange.coinbase.com"
BACKFILL_SOURCE = "coinbase-rest-backfill"
PAGE_LIMIT = 1000
MIN_INTERVAL_S = 0.1  # public endpoints allow 10 requests a second per IP
NOT_FOUND = (400, 404)  # 404 {"message": "NotFound"}; a malformed id is a 400


def parse_rest_trade(record: Mapping[str, object], *, product_id: str, source: str) -> Trade:
    """One `/products/{id}/trades` record as a `Trade`: a `match` without the product id (see the module
    doc on `side`), so the WebSocket's own parser reads it."""
    return coinbase.parse_match({**record, "product_id": product_id}, source=source)


class CoinbaseRest:
    """Coinbase Exchange's public REST API. Without a `client`, one is made and closed by `close()`."""

    def __init__(
        self, base_url: str = COINBASE_URL, client: RestClient | None = None, *, page_limit: int = PAGE_LIMIT
    ) -> None:
        if not 1 <= page_limit <= PAGE_LIMIT:
            raise ValueError(f"page_limit must be between 1 and {PAGE_LIMIT}")
        self.page_limit = page_limit
        self._owns_client = client is None
        self.client = client or RestClient(base_url, name="coinbase", min_interval_s=MIN_INTERVAL_S)

    def trades_between(self, product_id: str, first_id: int, last_id: int) -> Iterator[Trade | Rejection]:
        """Trades with ids in [first_id, last_id] of one product, ascending, nothing outside the range.

        Ids not traded yet are simply absent. The pages are read newest first before anything is
        yielded (a gap is small; the order matters more), so the iterator starts after the last request.
        """
        if first_id > last_id:
            return
        path = f"/products/{quote(product_id, safe='')}/trades"
        found: list[tuple[int | None, Trade | Rejection]] = []
        cursor = last_id + 1
        while True:
            response = self.client.get(path, {"limit": self.page_limit, "after": cursor})
            oldest: int | None = None
            for record, raw in json_array_items(response.text):
                trade_id = record.get("trade_id") if isinstance(record, dict) else None
                if isinstance(trade_id, int):
                    oldest = trade_id if oldest is None else min(oldest, trade_id)
                    if not first_id <= trade_id <= last_id:
                        continue
                found.append((trade_id, self._trade_or_rejection(record, raw, product_id)))
            following = _cursor(response.headers.get("CB-AFTER"))
            if oldest is None or oldest <= first_id or following is None or following >= cursor:
                break  # reached the range's start, or no older page
            cursor = following
        # Ascending by id; a record whose id could not be read keeps its place at the start.
        found.sort(key=lambda item: -1 if item[0] is None else item[0])
        for _, event in found:
            yield event

    def unknown_symbols(self, product_ids: Iterable[str]) -> list[str]:
        """The product ids Coinbase does not list (`/products/{id}` answers 404), in the order given."""
        unknown = []
        for product_id in dict.fromkeys(product_ids):
            try:
                product = self.client.get_json(f"/products/{quote(product_id, safe='')}")
            except ExchangeRequestError as error:
                if error.status in NOT_FOUND:
                    unknown.append(product_id)
                    continue
                raise
            if not isinstance(product, dict) or product.get("id") != product_id:
                raise ExchangeUnavailable(f"coinbase answered /products/{product_id} with {str(product)[:200]}")
        return unknown

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    @staticmethod
    def _trade_or_rejection(record: Any, raw: str, product_id: str) -> Trade | Rejection:
        try:
            if not isinstance(record, dict):
                raise InvalidTrade("malformed", f"a trades record is a JSON object, not {type(record).__name__}")
            return parse_rest_trade(record, product_id=product_id, source=BACKFILL_SOURCE)
        except InvalidTrade as error:
            return Rejection(raw=raw, code=error.code, reason=str(error), source=BACKFILL_SOURCE)


def _cursor(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
