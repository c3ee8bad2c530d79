"""A fake Binance REST API (spot `/api/v3` or USD-M `/fapi/v1`) serving a recording as a live market.

It shares a `LiveReplay` with the fake WebSocket server, so it serves only the trades that have
happened by now, with their times moved like the WebSocket's. Endpoints, as Binance answers them:

- `aggTrades?symbol=&fromId=&startTime=&endTime=&limit=` (limit default 500, at most 1000): records are
  the recorded `aggTrade` events without `e`, `E` and `s`, ascending by id;
- `exchangeInfo` (spot: `symbol=` or `symbols=["A","B"]`, all when neither; USD-M: always all): the
  recording's symbols, status TRADING; an unknown symbol is `400 {"code":-1121,"msg":"Invalid symbol."}`;
- `ticker/price` (spot: `symbol=`, `symbols=[...]` or all; USD-M: `symbol=` or all, with `time`): the
  last price traded so far. A symbol with no trade yet is left out (the real API always has a price);
- `klines?symbol=&interval=1m&startTime=&endTime=&limit=` (limit default 500, at most 1000): the
  recorded 1m klines given as `klines` (historical: their times are not moved), ascending; `startTime`
  and `endTime` bound the open time, inclusive; neither: the most recent. `klines_from_csv` reads a
  data.binance.vision kline CSV into the arrays Binance sends. The fake needs no `replay` for klines.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.fakes.recording import LiveReplay, binance_shifted
from tests.fakes.rest import FakeRestServer, Reply, json_reply

PREFIXES = {"binance": "/api/v3", "binance-usdm": "/fapi/v1"}
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
QUOTES = ("USDT", "BUSD", "USDC", "BTC", "ETH", "BNB")
INVALID_SYMBOL = {"code": -1121, "msg": "Invalid symbol."}
REST_DROPS = ("e", "E", "s")  # event type, event time and symbol: not in REST records
KLINE_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")


def error(code: int, msg: str, status: int = 400) -> Reply:
    return json_reply({"code": code, "msg": msg}, status)


class FakeBinanceRest(FakeRestServer):
    def __init__(
        self,
        replay: LiveReplay | None,
        exchange: str = "binance",
        klines: Mapping[str, Sequence[Sequence[Any]]] | None = None,
        port: int = 0,
    ) -> None:
        if exchange not in PREFIXES:
            raise ValueError(f"exchange must be one of {', '.join(PREFIXES)}")
        super().__init__(port)
        self.replay = replay
        self.exchange = exchange
        self.prefix = PREFIXES[exchange]
        # symbol -> [(frame index, aggTrade event)], in frame order
        self._events: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._klines = {symbol: sorted(rows, key=lambda r: r[0]) for symbol, rows in (klines or {}).items()}
        for index, frame in enumerate(replay.recording.frames if replay else ()):
            data = frame.payload.get("data", frame.payload)
            if isinstance(data, dict) and data.get("e") == "aggTrade":
                self._events.setdefault(data["s"], []).append((index, data))

    @property
    def symbols(self) -> list[str]:
        return sorted(set(self._events) | set(self._klines))

    def happened(self, symbol: str) -> list[dict[str, Any]]:
        """The REST records of `symbol`'s trades that have happened, ascending by id, times shifted."""
        count = self.replay.happened() if self.replay else 0
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
        if endpoint == "klines":
            return self._klines_reply(params)
        return Reply(404, "<html><body><h2>404 Not found</h2></body></html>")

    def _agg_trades(self, params: dict[str, str]) -> Reply:
        symbol = params.get("symbol", "")
        if not symbol:
            return error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if symbol not in self.symbols:
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
            if any(s not in self.symbols for s in asked):
                return json_reply(INVALID_SYMBOL, 400)
        else:
            asked = self.symbols
        return json_reply(
            {
                "timezone": "UTC",
                "serverTime": (self.replay.recording.first_time_us + self.replay.shift_us) // 1000
                if self.replay
                else int(time.time() * 1000),
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
        if any(s not in self.symbols for s in asked):
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

    def _klines_reply(self, params: dict[str, str]) -> Reply:
        symbol, interval = params.get("symbol", ""), params.get("interval", "")
        if not symbol or not interval:
            missing = "symbol" if not symbol else "interval"
            return error(-1102, f"Mandatory parameter '{missing}' was not sent, was empty/null, or malformed.")
        if symbol not in self._klines:
            return json_reply(INVALID_SYMBOL, 400)
        if interval not in KLINE_INTERVALS:
            return error(-1120, "Invalid interval.")
        if interval != "1m":
            return error(-1120, f"fake exchange: only 1m klines are recorded, not {interval}")
        limit = min(int(params.get("limit", DEFAULT_LIMIT)), MAX_LIMIT)
        rows = self._klines[symbol]
        if "startTime" in params:
            rows = [r for r in rows if r[0] >= int(params["startTime"])]
        if "endTime" in params:
            rows = [r for r in rows if r[0] <= int(params["endTime"])]
        if "startTime" in params:
            return json_reply(rows[:limit])
        return json_reply(rows[-limit:])  # no start: the most recent klines (up to endTime)


def klines_from_csv(path: Path) -> list[list[Any]]:
    """A data.binance.vision kline CSV (no header, ms times) as Binance's REST arrays: times and the trade
    count as numbers, prices and volumes as the file's own decimal strings."""
    with path.open(newline="") as f:
        return [[int(r[0]), *r[1:6], int(r[6]), r[7], int(r[8]), r[9], r[10], r[11]] for r in csv.reader(f) if r]


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
