"""Small helpers every stage shares, importable without Spark or a database."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_ONE_MS = timedelta(milliseconds=1)


def utc(moment: datetime) -> datetime:
    """An aware datetime as UTC; a naive one is taken to be UTC already (PostgreSQL and Spark hand out both)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def to_us(moment: datetime) -> int:
    """Epoch microseconds of a datetime, exactly: integer arithmetic, no float on the way."""
    return (utc(moment) - EPOCH) // _ONE_US


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds of a datetime, exactly (what exchanges' REST APIs take)."""
    return (utc(moment) - EPOCH) // _ONE_MS


def from_us(us: int) -> datetime:
    """Epoch microseconds -> aware UTC datetime, exactly."""
    return EPOCH + timedelta(microseconds=us)


def now_us() -> int:
    """The wall clock in epoch microseconds (ingest times, heartbeats)."""
    return time.time_ns() // 1000


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def first_line(exc: BaseException) -> str:
    """An exception as one line for a log or a message: its text's first line, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def one_line(exc: BaseException, limit: int | None = 300, *, typed: bool = False) -> str:
    """An exception's whole text on one line (every run of whitespace, line breaks too, one space), at most
    `limit` characters, `typed` with its type's name in front; its type's name alone when it has no text.

    Where `first_line` would drop what a multi-line message says after its first line (a status check,
    a warning that names the cause and the remedy on two lines).
    """
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    if typed:
        text = f"{type(exc).__name__}: {text}"
    return text if limit is None else text[:limit]


_UNIT_MICROS = {
    "millisecond": 1_000,
    "second": 1_000_000,
    "minute": 60_000_000,
    "hour": 3_600_000_000,
    "day": 86_400_000_000,
}


def interval_micros(interval: str) -> int:
    """A fixed interval as Spark's `window()` spells it ("1 minute", "5 minutes", "45 minutes") -> microseconds.

    Only fixed-length units: weeks start on Monday and months vary, neither is an epoch multiple.
    """
    parts = interval.strip().lower().split()
    if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) <= 0:
        raise ValueError(f"interval {interval!r}: expected '<positive integer> <unit>', e.g. '1 minute'")
    unit = parts[1].removesuffix("s")
    if unit not in _UNIT_MICROS:
        raise ValueError(f"interval {interval!r}: the unit must be one of {', '.join(_UNIT_MICROS)}")
    return int(parts[0]) * _UNIT_MICROS[unit]
