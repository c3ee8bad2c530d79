"""A fake Binance REST API (spot `/api/v3` or USD-M `/fapi/v1`) serving a recording as a live market.

It shares a `LiveReplay` with the fake WebSocket server, so it serves only the trades that have
happened by now, with their times moved like the WebSocket's. Endpoints, as Binance answers them:

- `aggTrades?symbol=&fromId=&startTime=&endTime=&limit=` (limit default 500, at most 1000): records are
  the recorded `aggTrade` events without `e`, `E` and `s`, ascending by id;
- `exchangeInfo` (spot: `symbol=` or `symbols=["A","B"]`, all when neither; USD-M: always all): the
  recording's symbols, status TRADING; an unknown symbol is `400 {"code":-1121,"msg":"Invalid symbol."}`;
- `ticker/price` (spot: `symbol=`, `symbols=[...]` or all; USD-M: `symbol=` or all, with `time`): the
  last price traded so far. A symbol with no trade yet is left out (the real API always has a price).
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.recording import LiveReplay, binance_shifted
from tests.fakes.rest import FakeRestServer, Reply, json_reply

PREFIXES = {"binance": "/api/v3", "binance-usdm": "/fapi/v1"}
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
QUOTES = ("USDT", "BUSD", "USDC", "BTC", "ETH", "BNB")
INVALID_SYMBOL = {"code": -1121, "msg": "Invalid symbol."}
REST_DROPS = ("e", "E", "s")  # event type, event time and symbol: not in REST records


def error(code: int, msg: str, status: int = 400) -> Reply:
    return json_reply({"code": code, "msg": msg}, status)


class FakeBinanceRest(FakeRestServer):
    def __init__(self, replay: LiveReplay, exchange: str = "binance") -> None:
        if exchange not in PREFIXES:
            raise ValueError(f"exchange must be one of {', '.join(PREFIXES)}")
        super().__init__()
        self.replay = replay
        self.exchange = exchange
        self.prefix = PREFIXES[exchange]
        # symbol -> [(frame index, aggTrade event)], in frame order
        self._events: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for index, frame in enumerate(replay.recording.frames):
            data = frame.payload.get("data", frame.payload)
            if isinstance(data, dict) and data.get("e") == "aggTrade":
                self._events.setdefault(data["s"], []).append((index, data))

    @property
    def symbols(self) -> list[str]:
        return sorted(self._events)

    def happened(self, symbol: str) -> list[dict[str, Any]]:
        """The REST records of `symbol`'s trades that have happened, ascending by id, times shifted."""
        count = self.replay.happened()
        by_id: dict[int, dict[str, Any]] = {}
        for index, event in self._events.get(symbol, []):
            if index < count:
                shifted = binance_shifted(event, self.replay.shift_us)
                by_id[event["a"]] = {k: v for k, v in shifted.items() if k not in REST_DROPS}
        return [by_id[a] for a in sorted(by_id)]

    def rate_limit_body(self) -> Any:
        return {
            "code": -1003,
            "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. "
            "Please use WebSocket Streams for live updates to avoid polling the API.",
        }

    def ban_body(self) -> Any:
        return {
            "code": -1003,
            "msg": "Way too many requests; IP(127.0.0.1) banned. "
            "Please use WebSocket Streams for live updates to avoid bans.",
        }

    def fail_body(self) -> Any:
        return {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}

    def route(self, path: str, params: dict[str, str]) -> Reply:
        if not path.startswith(self.prefix + "/"):
            return Reply(404, "<html><body><h2>404 Not found</h2></body></html>")
        endpoint = path[len(self.prefix) + 1 :]
        if endpoint == "aggTrades":
            return self._agg_trades(params)
        if endpoint == "exchangeInfo":
            return self._exchange_info(params)
        if endpoint == "ticker/price":
            return self._ticker_price(params)
        return Reply(404, "<html><body><h2>404 Not found</h2></body></html>")

    def _agg_trades(self, params: dict[str, str]) -> Reply:
        symbol = params.get("symbol", "")
        if not symbol:
            return error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if symbol not in self._events:
            return json_reply(INVALID_SYMBOL, 400)
        limit = min(int(params.get("limit", DEFAULT_LIMIT)), MAX_LIMIT)
        records = self.happened(symbol)
        if "fromId" in params:
            records = [r for r in records if r["a"] >= int(params["fromId"])]
        if "startTime" in params:
            records = [r for r in records if r["T"] >= int(params["startTime"])]
        if "endTime" in params:
            records = [r for r in records if r["T"] <= int(params["endTime"])]
        if "fromId" in params or "startTime" in params:
            return json_reply(records[:limit])
        return json_reply(records[-limit:])  # neither: the most recent trades

    def _exchange_info(self, params: dict[str, str]) -> Reply:
        if self.exchange == "binance" and ("symbol" in params or "symbols" in params):
            asked = [params["symbol"]] if "symbol" in params else json.loads(params["symbols"])
            if any(s not in self._events for s in asked):
                return json_reply(INVALID_SYMBOL, 400)
        else:
            asked = self.symbols
        return json_reply(
            {
                "timezone": "UTC",
                "serverTime": (self.replay.recording.first_time_us + self.replay.shift_us) // 1000,
                "rateLimits": [],
                "exchangeFilters": [],
                "symbols": [_symbol_info(s, self.exchange) for s in asked],
            }
        )

    def _ticker_price(self, params: dict[str, str]) -> Reply:
        if "symbol" in params:
            asked = [params["symbol"]]
        elif "symbols" in params and self.exchange == "binance":
            asked = json.loads(params["symbols"])
        else:
            asked = self.symbols
        if any(s not in self._events for s in asked):
            return json_reply(INVALID_SYMBOL, 400)
        entries = []
        for symbol in asked:
            records = self.happened(symbol)
            if not records:
                continue
            last = records[-1]  # the highest id is the latest trade
            entry: dict[str, Any] = {"symbol": symbol, "price": last["p"]}
            if self.exchange == "binance-usdm":
                entry["time"] = last["T"]
            entries.append(entry)
        if "symbol" in params:
            return json_reply(entries[0]) if entries else json_reply(INVALID_SYMBOL, 400)
        return json_reply(entries)


def _symbol_info(symbol: str, exchange: str) -> dict[str, Any]:
    quote = next((q for q in QUOTES if symbol.endswith(q) and len(symbol) > len(q)), "")
    info: dict[str, Any] = {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": symbol[: len(symbol) - len(quote)] if quote else symbol,
        "quoteAsset": quote,
    }
    if exchange == "binance-usdm":
        info["contractType"] = "PERPETUAL"
    return info
