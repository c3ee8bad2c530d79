"""What a connector hands the producer pipeline: trades, rejections, and what it knows about gaps.

A connector (a WebSocket feed, a REST poller) turns raw exchange messages into these events and calls
`emit(event)` for each; the pipeline (candlelake.ingest.pipeline) validates nothing twice, removes
duplicates, records gaps and sends trades to Kafka. `emit` is cheap and never blocks on the network, so
a connector may call it from its receive loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from candlelake.price import PricePoint
from candlelake.sources.fields import Rejection
from candlelake.trade import Trade


@dataclass(frozen=True, slots=True)
class Disconnect:
    """A feed had no connection (or no usable one) from `started_us` to `ended_us` (epoch microseconds).

    `cause` says why, for a person reading the gap ledger: "server closed the connection (code 1006)",
    "no message for 30 s (watchdog)", "planned rotation before the 24-hour limit", "serverShutdown notice".
    A planned rotation whose connections overlapped has started_us == ended_us: nothing was missed.
    """

    exchange: str
    symbols: tuple[str, ...]
    started_us: int
    ended_us: int
    cause: str


@dataclass(frozen=True, slots=True)
class TradeIdMark:
    """The exchange says the latest trade of a market is `last_trade_id` (a Coinbase heartbeat).

    Lets the pipeline see trades missing at the end of a stream, before the next trade arrives.
    """

    exchange: str
    symbol: str
    last_trade_id: int


@dataclass(frozen=True, slots=True)
class Reconnected:
    """A feed is connected again (or for the first time when `first` is true); counted as a reconnect.

    From now on the feed delivers every trade of `symbols`: a live coverage session starts for each (a
    Disconnect that ends one comes before this event, with the time the connection was lost).
    """

    exchange: str
    url: str
    first: bool
    symbols: tuple[str, ...] = ()


Event = Trade | Rejection | Disconnect | TradeIdMark | PricePoint | Reconnected
Emit = Callable[[Event], None]
