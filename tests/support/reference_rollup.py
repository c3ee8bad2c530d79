"""Candles at any bucket computed directly from trades in plain Python, with Binance's empty intervals.

The independent truth for the SQL rollups (include/candlelake/serve/rollups.py): it shares no code with them
and never looks at base candles. A bucket of `bucket_s` seconds starts at
`origin + floor((t - origin) / bucket_s) * bucket_s` (origin: the epoch, or Monday 1970-01-05 for weeks).
Every bucket from the one holding the first trade to the one holding the last is considered, and judged
by the covered time (`covered_spans`: the coverage intervals less the trade gaps of known times):

- a bucket with trades is a candle; `coverage` is 'complete' when one covered span holds all of it,
  else 'partial';
- a bucket without trades has open = high = low = close = the previous close and zero volume and count,
  `coverage` 'complete', when the base candle (`base_s`) of the last trade before it carries: the covered
  time from that candle's open to the bucket's end is one unbroken stretch that reaches into the candle
  (a watch that began inside it saw its last trade; one that was lost inside it and found again may
  not have); otherwise it is unknown and left out. The nightly batch's rule (candlelake.coverage).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from candlelake.trade import Trade
from tests.support.reference_candles import RefCandle

MONDAY_ORIGIN_S = 4 * 86_400  # 1970-01-05, the first Monday after the epoch
Span = tuple[int, int]  # [start_us, end_us)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RefBucket(RefCandle):
    """A candle of one bucket; its `coverage` says whether the bucket was observed throughout."""


def to_us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def covered_spans(
    intervals: Iterable[tuple[datetime, datetime]], gaps: Iterable[tuple[datetime, datetime]] = ()
) -> list[Span]:
    """The union of half-open coverage `intervals` less the closed trade-gap intervals [start, end], as
    sorted disjoint spans of microseconds (a gap's end instant is itself unseen: [start, end + 1 us))."""
    spans: list[Span] = []
    for start, end in sorted((to_us(a), to_us(b)) for a, b in intervals):
        if end <= start:
            continue
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    for gap_start, gap_end in ((to_us(a), to_us(b) + 1) for a, b in gaps):
        cut: list[Span] = []
        for start, end in spans:
            if gap_end <= start or gap_start >= end:
                cut.append((start, end))
                continue
            if start < gap_start:
                cut.append((start, gap_start))
            if gap_end < end:
                cut.append((gap_end, end))
        spans = cut
    return spans


def _holds(spans: Sequence[Span], start: int, end: int) -> bool:
    return any(a <= start and end <= b for a, b in spans)


def _carries(spans: Sequence[Span], carry_open: int, base_us: int, end: int) -> bool:
    """Does the base candle opening at `carry_open` carry its close to `end` (see the module docstring)?"""
    pieces = [(max(a, carry_open), min(b, end)) for a, b in spans if b > carry_open and a < end]
    return len(pieces) == 1 and pieces[0][1] == end and pieces[0][0] < carry_open + base_us


def reference_rollup(
    trades: Iterable[Trade], bucket_s: int, origin_s: int = 0, *, covered: Sequence[Span], base_s: int = 60
) -> list[RefBucket]:
    """Candles of one market at `bucket_s` seconds, oldest first, quiet intervals filled where covered."""
    unique: dict[int, Trade] = {}
    for t in trades:
        unique.setdefault(t.trade_id, t)
    if not unique:
        return []
    ordered = sorted(unique.values(), key=lambda t: (t.trade_time_us, t.trade_id))
    size_us, origin_us, base_us = bucket_s * 1_000_000, origin_s * 1_000_000, base_s * 1_000_000

    def start_of(t: Trade) -> int:
        return t.trade_time_us - (t.trade_time_us - origin_us) % size_us

    groups: dict[int, list[Trade]] = {}
    for t in ordered:
        groups.setdefault(start_of(t), []).append(t)
    first, last = start_of(ordered[0]), start_of(ordered[-1])
    exchange, symbol = ordered[0].exchange, ordered[0].symbol
    out: list[RefBucket] = []
    previous_close = ordered[0].price
    previous_base = ordered[0].trade_time_us - ordered[0].trade_time_us % base_us
    zero = Decimal(0)
    for start in range(first, last + size_us, size_us):
        open_time = datetime.fromtimestamp(start // 1_000_000, UTC)
        group = groups.get(start)
        if not group:
            if _carries(covered, previous_base, base_us, start + size_us):
                p = previous_close
                out.append(
                    RefBucket(open_time, p, p, p, p, zero, zero, 0, zero, zero, exchange=exchange, symbol=symbol)
                )
            continue
        buys = [t for t in group if not t.is_buyer_maker]
        out.append(
            RefBucket(
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
                coverage="complete" if _holds(covered, start, start + size_us) else "partial",
            )
        )
        previous_close = group[-1].price
        previous_base = group[-1].trade_time_us - group[-1].trade_time_us % base_us
    return out
