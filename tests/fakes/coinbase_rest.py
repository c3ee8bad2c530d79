"""A fake Coinbase Exchange REST API serving a recording's matches as a live market's trade history.

It shares a `LiveReplay` with the fake WebSocket server and serves only the `match`/`last_match` trades
that have happened by now, with times moved like the WebSocket's. Endpoints, as Coinbase answers them:

- `/products/{id}/trades?limit=&after=&before=`: newest first; `after=X` gives trades with
  `trade_id < X`, `before=X` the ones just above X; `limit` defaults to 1000 (at most 1000). Headers
  `CB-BEFORE` (the page's newest id) and `CB-AFTER` (its oldest id, the cursor for the older page).
  A record is `{"time", "trade_id", "price", "size", "side"}`; `side` is the match's: Coinbase documents
  both as the maker order's side;
- `/products/{id}`: the product, or `404 {"message":"NotFound"}` for one not in the recording.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.recording import LiveReplay, coinbase_shifted
from tests.fakes.rest import FakeRestServer, Reply, json_reply

MAX_LIMIT = 1000
TRADE_TYPES = ("match", "last_match")
NOT_FOUND = {"message": "NotFound"}


class FakeCoinbaseRest(FakeRestServer):
    def __init__(self, replay: LiveReplay) -> None:
        super().__init__()
        self.replay = replay
        # product -> [(frame index, match message)], in frame order
        self._matches: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for index, frame in enumerate(replay.recording.frames):
            if frame.payload.get("type") in TRADE_TYPES:
                self._matches.setdefault(frame.payload["product_id"], []).append((index, frame.payload))

    @property
    def products(self) -> list[str]:
        return sorted(self._matches)

    def happened(self, product_id: str) -> list[dict[str, Any]]:
        """The REST records of the product's trades that have happened, newest first, times shifted."""
        count = self.replay.happened()
        by_id: dict[int, dict[str, Any]] = {}
        for index, match in self._matches.get(product_id, []):
            if index < count:
                moved = coinbase_shifted(match, self.replay.shift_us)
                by_id[match["trade_id"]] = {k: moved[k] for k in ("time", "trade_id", "price", "size", "side")}
        return [by_id[i] for i in sorted(by_id, reverse=True)]

    def rate_limit_body(self) -> Any:
        return {"message": "Public rate limit exceeded"}

    def ban_body(self) -> Any:
        return {"message": "Forbidden"}

    def fail_body(self) -> Any:
        return {"message": "Service Unavailable"}

    def route(self, path: str, params: dict[str, str]) -> Reply:
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "products":
            return json_reply({"message": "Route not found"}, 404)
        product_id = parts[1]
        if product_id not in self._matches:
            return json_reply(NOT_FOUND, 404)
        if len(parts) == 2:
            return json_reply(_product(product_id))
        if len(parts) == 3 and parts[2] == "trades":
            return self._trades(product_id, params)
        return json_reply({"message": "Route not found"}, 404)

    def _trades(self, product_id: str, params: dict[str, str]) -> Reply:
        limit = int(params.get("limit", MAX_LIMIT))
        if not 1 <= limit <= MAX_LIMIT:
            return json_reply({"message": "limit must be between 1 and 1000"}, 400)
        records = self.happened(product_id)  # newest first
        if "after" in params:
            page = [r for r in records if r["trade_id"] < int(params["after"])][:limit]
        elif "before" in params:
            page = [r for r in records if r["trade_id"] > int(params["before"])][-limit:]
        else:
            page = records[:limit]
        headers = {}
        if page:
            headers = {"CB-BEFORE": str(page[0]["trade_id"]), "CB-AFTER": str(page[-1]["trade_id"])}
        return json_reply(page, headers=headers)


def _product(product_id: str) -> dict[str, Any]:
    base, quote = product_id.split("-")
    return {
        "id": product_id,
        "base_currency": base,
        "quote_currency": quote,
        "display_name": f"{base}/{quote}",
        "status": "online",
        "trading_disabled": False,
    }
