"""How the dashboard prints values: exact decimals, prices, times in the display zone, ages.

Pure functions, no Streamlit, so every page prints the same value the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pandas as pd


def exact(value: object) -> str:
    """A Decimal in plain digits (format "f" never switches to 1E-8), anything else as str()."""
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def price(value: Decimal | None, places: int) -> str:
    """A price rounded to `places` decimals with thousands separators; "-" for none."""
    if value is None:
        return "-"
    return format(value.quantize(Decimal(1).scaleb(-places)), ",f")


def price_places(prices: list[object]) -> int:
    """Decimal places a market's prices use, so averages print like prices, not with 28 digits."""
    exponents = [-int(p.as_tuple().exponent) for p in prices if isinstance(p, Decimal) and p.is_finite()]
    return min(max([0, *exponents]), 18)


def in_zone(t: datetime, tz: str) -> str:
    """A UTC time as the display zone's wall clock, with the zone's abbreviation."""
    local = t.astimezone(ZoneInfo(tz))
    return f"{local:%Y-%m-%d %H:%M} {'UTC' if tz == 'UTC' else local.tzname()}"


def age_seconds(then: datetime | pd.Timestamp | None, now: datetime | None = None) -> float | None:
    """Seconds from `then` to `now` (never negative), None for a missing time."""
    if then is None or pd.isna(then):
        return None
    return max(0.0, ((now or datetime.now(UTC)) - pd.Timestamp(then).to_pydatetime()).total_seconds())


def describe_age(seconds: float | None) -> str:
    """`42 s ago`, `7 min ago`, `3 h ago`, `12 days ago`, or `never`."""
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 172_800:
        return f"{seconds // 3600:.0f} h ago"
    return f"{seconds // 86_400:.0f} days ago"


def describe_duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 20 min`, `2 days 4 h`: a length of time to the unit a person reads."""
    whole = int(seconds)
    if whole < 120:
        return f"{whole} s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86_400
    if whole < 7200:
        return f"{minutes} min"
    if whole < 172_800:
        return f"{hours} h" + (f" {minutes % 60} min" if minutes % 60 else "")
    return f"{days} days" + (f" {hours % 24} h" if hours % 24 else "")
