"""Figures a trader reads off a window of candles: KPI tiles, moving averages, volatility bands, alerts.

Pure functions of candle rows (any bucket): no Streamlit, no database. Money figures stay exact
`Decimal`s (last price, high, low, spread, VWAP are what the exchange printed or exact sums of it);
only the overlays, which are drawn, are floats.

A candle without trades (open = high = low = close = the previous close, zero volume) carries no price
information of its own: it never sets the high, low, first open or average, so a quiet hour does not
drag the figures toward a stale price.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol


class Candle(Protocol):
    """The fields these functions read (named as in candlelake.candle).

    A Protocol rather than `candlelake.candle.Candle` because the dashboard hands in pandas
    `itertuples()` rows of its frame, which are not that record; a `candle.Candle` fits as well.
    """

    open_time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int


@dataclass(frozen=True)
class Kpis:
    """The window's headline figures. Prices are None when no candle in the window has trades."""

    last_price: Decimal | None
    change_pct: Decimal | None  # last close against the first open with trades, in percent
    high: Decimal | None
    low: Decimal | None
    average: Decimal | None  # mean close of the candles with trades
    spread: Decimal | None  # high - low over the window
    spread_pct: Decimal | None  # spread against the low, in percent
    trades: int
    volume: Decimal
    quote_volume: Decimal
    vwap: Decimal | None  # quote volume / volume: the average price paid per unit
    candles: int
    empty_candles: int  # candles without trades


def kpis(candles: Sequence[Candle]) -> Kpis:
    """Headline figures over the window, exact where the inputs are."""
    traded = [c for c in candles if c.trades > 0]
    trades = sum(int(c.trades) for c in candles)
    volume = sum((c.volume for c in candles), Decimal(0))
    quote_volume = sum((c.quote_volume for c in candles), Decimal(0))
    vwap = quote_volume / volume if volume else None
    if not traded:
        # A window of empty candles still has a last price: the close they all repeat.
        last = candles[-1].close if candles else None
        none = None
        n = len(candles)
        return Kpis(last, none, none, none, none, none, none, trades, volume, quote_volume, vwap, n, n)
    high = max(c.high for c in traded)
    low = min(c.low for c in traded)
    first_open = traded[0].open
    last_price = candles[-1].close
    change = (last_price - first_open) / first_open * 100 if first_open else None
    spread = high - low
    return Kpis(
        last_price=last_price,
        change_pct=change,
        high=high,
        low=low,
        average=sum((c.close for c in traded), Decimal(0)) / len(traded),
        spread=spread,
        spread_pct=spread / low * 100 if low else None,
        trades=trades,
        volume=volume,
        quote_volume=quote_volume,
        vwap=vwap,
        candles=len(candles),
        empty_candles=len(candles) - len(traded),
    )


def moving_average(values: Sequence[float], window: int) -> list[float | None]:
    """Simple moving average of the last `window` values; None until `window` values exist."""
    if window < 1:
        raise ValueError(f"a moving average needs a window of at least 1, got {window}")
    out: list[float | None] = []
    total = 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / window if i >= window - 1 else None)
    return out


@dataclass(frozen=True)
class Bands:
    middle: list[float | None]
    upper: list[float | None]
    lower: list[float | None]


def bollinger(values: Sequence[float], window: int = 20, width: float = 2.0) -> Bands:
    """Bollinger bands: the moving average +/- `width` population standard deviations of the window."""
    middle = moving_average(values, window)
    upper: list[float | None] = []
    lower: list[float | None] = []
    for i, mean in enumerate(middle):
        if mean is None:
            upper.append(None)
            lower.append(None)
            continue
        chunk = values[i - window + 1 : i + 1]
        sd = math.sqrt(sum((v - mean) ** 2 for v in chunk) / window)
        upper.append(mean + width * sd)
        lower.append(mean - width * sd)
    return Bands(middle, upper, lower)


def volatility_pct(closes: Sequence[float]) -> float | None:
    """Standard deviation of the bucket-to-bucket log returns, in percent per bucket (None under 3 closes)."""
    returns = [math.log(b / a) for a, b in itertools.pairwise(closes) if a > 0 and b > 0]
    if len(returns) < 2:
        return None
    mean = sum(returns) / len(returns)
    return math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)) * 100


Direction = Literal["above", "below"]


@dataclass(frozen=True)
class Alert:
    """Tell me when the price is `direction` `level`."""

    level: Decimal
    direction: Direction


@dataclass(frozen=True)
class AlertStatus:
    alert: Alert
    # crossed: the last close is beyond the level (since `at`, the first candle of that run);
    # touched: a candle's high (low) reached the level but the price is back on the near side;
    # waiting: not reached within the window.
    state: Literal["crossed", "touched", "waiting"]
    at: datetime | None
    last_price: Decimal | None


def alert_status(candles: Sequence[Candle], alert: Alert) -> AlertStatus:
    """Whether and when the window's prices crossed the alert's level (exact comparisons on Decimals)."""
    traded = [c for c in candles if c.trades > 0]
    last = candles[-1].close if candles else None

    def beyond(price: Decimal) -> bool:
        return price >= alert.level if alert.direction == "above" else price <= alert.level

    if last is not None and beyond(last):
        since = candles[-1].open_time
        for c in reversed(traded):  # walk back over the run of closes beyond the level
            if not beyond(c.close):
                break
            since = c.open_time
        return AlertStatus(alert, "crossed", since, last)
    for c in reversed(traded):
        if beyond(c.high if alert.direction == "above" else c.low):
            return AlertStatus(alert, "touched", c.open_time, last)
    return AlertStatus(alert, "waiting", None, last)
