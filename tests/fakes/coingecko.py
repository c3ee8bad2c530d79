"""A fake CoinGecko `/simple/price` that writes prices as JSON numbers with every digit it was given.

`FakeCoinGecko({"bitcoin": {"usd": Decimal("67187.335893656639182501")}})` answers
`/simple/price?ids=bitcoin&vs_currencies=usd&include_last_updated_at=true&precision=full` with
`{"bitcoin":{"usd":67187.335893656639182501,"last_updated_at":1711356300}}`: a JSON number longer than a
binary float holds, so a client that parses it through `float` loses digits and a test sees it.
Without `precision=full` prices are rounded to two decimals. Unknown coin ids and currencies are left
out, as CoinGecko does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from tests.fakes.rest import FakeRestServer, Reply, json_reply


class FakeCoinGecko(FakeRestServer):
    def __init__(self, prices: Mapping[str, Mapping[str, Decimal | str]], last_updated_at: int | None = None) -> None:
        super().__init__()
        self._prices_lock = threading.Lock()
        self._prices = {coin: {vs: Decimal(p) for vs, p in quotes.items()} for coin, quotes in prices.items()}
        updated = int(time.time()) if last_updated_at is None else last_updated_at
        self._updated = dict.fromkeys(self._prices, updated)

    def set_price(self, coin: str, currency: str, price: Decimal | str, last_updated_at: int | None = None) -> None:
        with self._prices_lock:
            self._prices.setdefault(coin, {})[currency] = Decimal(price)
            self._updated[coin] = int(time.time()) if last_updated_at is None else last_updated_at

    def rate_limit_body(self) -> Any:
        return {
            "status": {
                "error_code": 429,
                "error_message": "You've exceeded the Rate Limit. Please visit "
                "https://www.coingecko.com/en/api/pricing to subscribe to our API plans for higher rate limits.",
            }
        }

    def route(self, path: str, params: dict[str, str]) -> Reply:
        if path.rstrip("/") != "/simple/price":
            return json_reply({"error": "Not Found"}, 404)
        if not params.get("ids") or not params.get("vs_currencies"):
            return json_reply({"error": "Missing parameter ids or vs_currencies"}, 400)
        currencies = params["vs_currencies"].split(",")
        with_time = params.get("include_last_updated_at") == "true"
        full = params.get("precision") == "full"
        coins = []
        with self._prices_lock:
            for coin in params["ids"].split(","):
                quotes = self._prices.get(coin)
                if quotes is None:
                    continue
                fields = [f"{json.dumps(vs)}:{_number(quotes[vs], full)}" for vs in currencies if vs in quotes]
                if with_time:
                    fields.append(f'"last_updated_at":{self._updated[coin]}')
                coins.append(f"{json.dumps(coin)}:{{{','.join(fields)}}}")
        return Reply(200, "{" + ",".join(coins) + "}")


def _number(price: Decimal, full: bool) -> str:
    """The price as a JSON number: every digit with `precision=full`, else rounded to cents as CoinGecko's default."""
    return format(price if full else price.quantize(Decimal("0.01")), "f")
