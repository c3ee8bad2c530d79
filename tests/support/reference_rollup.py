"""Candles at any bucket computed directly from trades in plain Python, with Binance's empty intervals.

The independent truth for the SQL rollups (include/candlelake/rollups.py): it shares no code with them
and never looks at base candles. A bucket of `bucket_s` seconds starts at
`origin + floor((t - origin) / bucket_s) * bucket_s` (origin: the epoch, or Monday 1970-01-05 for weeks).
Every bucket from the one holding the first trade to the one holding the last is emitted; one without
trades has open = high = low = close = the previous close and zero volume and count.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal

from candlelake.trade import Trade
from tests.support.reference_candles import RefCandle

MONDAY_ORIGIN_S = 4 * 86_400  # 1970-01-05, the first Monday after the epoch


def reference_rollup(trades: Iterable[Trade], bucket_s: int, origin_s: int = 0) -> list[RefCandle]:
    """Candles of one market at `bucket_s` seconds, oldest first, empty intervals filled."""
    unique: dict[int, Trade] = {}
    for t in trades:
        unique.setdefault(t.trade_id, t)
    if not unique:
        return []
    ordered = sorted(unique.values(), key=lambda t: (t.trade_time_us, t.trade_id))
    size_us, origin_us = bucket_s * 1_000_000, origin_s * 1_000_000

    def start_of(t: Trade) -> int:
        return t.trade_time_us - (t.trade_time_us - origin_us) % size_us

    groups: dict[int, list[Trade]] = {}
    for t in ordered:
        groups.setdefault(start_of(t), []).append(t)
    first, last = start_of(ordered[0]), start_of(ordered[-1])
    exchange, symbol = ordered[0].exchange, ordered[0].symbol
    out: list[RefCandle] = []
    previous_close = ordered[0].price
    zero = Decimal(0)
    for start in range(first, last + size_us, size_us):
        open_time = datetime.fromtimestamp(start // 1_000_000, UTC)
        group = groups.get(start)
        if not group:
            p = previous_close
            out.append(RefCandle(exchange, symbol, open_time, p, p, p, p, zero, zero, 0, zero, zero))
            continue
        buys = [t for t in group if not t.is_buyer_maker]
        out.append(
            RefCandle(
                exchange=exchange,
                symbol=symbol,
                open_time=open_time,
                open=group[0].price,
                high=max(t.price for t in group),
                low=min(t.price for t in group),
                close=group[-1].price,
                volume=sum((t.qty for t in group), zero),
                quote_volume=sum((t.price * t.qty for t in group), zero),
                trades=len(group),
                taker_buy_volume=sum((t.qty for t in buys), zero),
                taker_buy_quote_volume=sum((t.price * t.qty for t in buys), zero),
            )
        )
        previous_close = group[-1].price
    return out
