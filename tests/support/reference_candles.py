"""Candles computed in plain Python with Decimal: the independent truth tests compare against.

Deliberately shares no code with the Spark transform: a bug there cannot hide here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from candlelake.candle import Candle
from candlelake.trade import Trade


@dataclass(frozen=True)
class RefCandle(Candle):
    """A candle (the shared record: the vocabulary, not the computation) with the market it is of."""

    exchange: str = field(kw_only=True)
    symbol: str = field(kw_only=True)


def reference_candles(
    trades: Iterable[Trade], interval_us: int = 60_000_000
) -> dict[tuple[str, str, datetime], RefCandle]:
    """Candles keyed by (exchange, symbol, open_time); duplicates of a trade id count once."""
    unique: dict[tuple[str, str, int], Trade] = {}
    for t in trades:
        unique.setdefault((t.exchange, t.symbol, t.trade_id), t)
    buckets: dict[tuple[str, str, int], list[Trade]] = {}
    for t in unique.values():
        start = t.trade_time_us - t.trade_time_us % interval_us
        buckets.setdefault((t.exchange, t.symbol, start), []).append(t)
    out: dict[tuple[str, str, datetime], RefCandle] = {}
    for (exchange, symbol, start), group in buckets.items():
        group.sort(key=lambda t: (t.trade_time_us, t.trade_id))
        taker_buys = [t for t in group if not t.is_buyer_maker]
        open_time = datetime.fromtimestamp(start // 1_000_000, UTC)
        out[(exchange, symbol, open_time)] = RefCandle(
            exchange=exchange,
            symbol=symbol,
            open_time=open_time,
            open=group[0].price,
            high=max(t.price for t in group),
            low=min(t.price for t in group),
            close=group[-1].price,
            volume=sum((t.qty for t in group), Decimal(0)),
            quote_volume=sum((t.price * t.qty for t in group), Decimal(0)),
            trades=len(group),
            taker_buy_volume=sum((t.qty for t in taker_buys), Decimal(0)),
            taker_buy_quote_volume=sum((t.price * t.qty for t in taker_buys), Decimal(0)),
        )
    return out
