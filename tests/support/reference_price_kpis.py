"""The truth for price KPIs: every sliding window's figures by brute force, with exact fractions.

Independent of candlelake.stream.price_kpis' SQL: a point at time t belongs to each window of the grid
(aligned to the epoch, one start every slide) whose span [start, start + length) holds t.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal
from fractions import Fraction

MICROS = 1_000_000

Window = tuple[str, str, int, int]  # exchange, symbol, window minutes, window start (epoch us)
Figures = tuple[Fraction, Decimal, Decimal, int]  # exact mean, min, max, count


def reference_kpis(
    points: Iterable[tuple[str, str, int, Decimal]], windows: Sequence[tuple[int, int]]
) -> dict[Window, Figures]:
    """(exchange, symbol, time in epoch us, price) points, each counted once however often it is given,
    -> the figures of every window of `windows` ((minutes, slide seconds)) that holds one."""
    members: dict[Window, list[Decimal]] = defaultdict(list)
    for exchange, symbol, t, price in set(points):
        for minutes, slide_s in windows:
            slide, length = slide_s * MICROS, minutes * 60 * MICROS
            start = t - t % slide
            while start > t - length:
                members[(exchange, symbol, minutes, start)].append(price)
                start -= slide
    return {
        key: (sum(map(Fraction, prices), Fraction(0)) / len(prices), min(prices), max(prices), len(prices))
        for key, prices in members.items()
    }
