"""Synthetic pumps and dumps injected into real 1m bars at known minutes: the yardstick for a detector.

Real markets carry no labels saying "this was a pump", so a detector is judged on real bars with events
put in where the test knows them. An event bends the closes of a few minutes by a given fraction and
lifts their volume and trade count by a multiple of the hour before, then the price goes back where the
real market was (a pump-and-dump; a dump-and-recover). Everything else stays the real bars, digit for
digit, so what fires outside the events is what the detector would fire on that real day.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal

from candlelake.analytics.features import BASELINE_MINUTES, MINUTE_US, Bar

Direction = Literal["pump", "dump"]


@dataclass(frozen=True, slots=True)
class Event:
    """One injected event: from `start_us`, `minutes` bent minutes, then as many back to the real price."""

    start_us: int
    direction: Direction
    size: float
    """The fraction the price moves at the event's peak: 0.02 = 2 %."""
    minutes: int = 3
    volume_multiple: float = 5.0
    """The bent minutes' volume (and trades) added, as a multiple of the hour before's mean."""

    @property
    def end_us(self) -> int:
        """The open time of the first minute after the event (its way up and back down)."""
        return self.start_us + 2 * self.minutes * MINUTE_US


def inject(bars: Sequence[Bar], events: Sequence[Event]) -> list[Bar]:
    """`bars` (one market, time order) with `events` put in; bars outside every event are unchanged."""
    by_time = {b.open_time_us: i for i, b in enumerate(bars)}
    out = list(bars)
    for event in events:
        first = by_time.get(event.start_us)
        if first is None:
            raise ValueError(f"no bar opens at {event.start_us} (epoch microseconds) to inject an event into")
        before = [b for b in bars[max(0, first - BASELINE_MINUTES) : first]]
        mean_volume = statistics.fmean(float(b.volume or 0) for b in before) if before else 0.0
        mean_trades = statistics.fmean(float(b.trades or 0) for b in before) if before else 0.0
        sign = 1 if event.direction == "pump" else -1
        for step in range(2 * event.minutes):
            index = by_time.get(event.start_us + step * MINUTE_US)
            if index is None:
                continue
            # Up (or down) in `minutes` equal steps to the peak, then back in as many.
            level = (
                (step + 1) / event.minutes if step < event.minutes else (2 * event.minutes - step - 1) / event.minutes
            )
            factor = Decimal(repr(1 + sign * event.size * level))
            bar = out[index]
            lifted = step < event.minutes  # the volume comes with the move, not with the way back
            out[index] = replace(
                bar,
                close=(bar.close * factor).quantize(bar.close) if bar.close != 0 else bar.close,
                volume=_add(bar.volume, event.volume_multiple * max(mean_volume, 1e-12) if lifted else 0.0),
                trades=None
                if bar.trades is None
                else bar.trades + (round(event.volume_multiple * max(mean_trades, 1.0)) if lifted else 0),
            )
    return out


def _add(volume: Decimal | None, extra: float) -> Decimal | None:
    if volume is None or extra == 0:
        return volume
    return volume + Decimal(repr(round(extra, 8)))


def spaced_events(
    bars: Sequence[Bar],
    count: int,
    sizes: Sequence[float],
    *,
    seed: int,
    spacing_minutes: int = 2 * BASELINE_MINUTES,
    minutes: int = 3,
    volume_multiple: float = 5.0,
) -> list[Event]:
    """`count` events at seeded random minutes of `bars`, at least `spacing_minutes` apart and a whole
    baseline hour after the first bar, alternating pump and dump, their sizes drawn from `sizes`."""
    rng = random.Random(seed)
    start, end = bars[0].open_time_us + BASELINE_MINUTES * MINUTE_US, bars[-1].open_time_us
    slots = (end - start) // (spacing_minutes * MINUTE_US)
    if slots < count:
        raise ValueError(f"{count} events {spacing_minutes} minutes apart do not fit into these bars ({slots} fit)")
    chosen = sorted(rng.sample(range(slots), count))
    known = {b.open_time_us for b in bars}
    events = []
    for n, slot in enumerate(chosen):
        # Somewhere in the first half of the slot, on a minute that has a bar.
        offset = rng.randrange(spacing_minutes // 2)
        at = start + (slot * spacing_minutes + offset) * MINUTE_US
        while at not in known:
            at += MINUTE_US
        direction: Direction = "pump" if n % 2 == 0 else "dump"
        events.append(Event(at, direction, rng.choice(list(sizes)), minutes, volume_multiple))
    return events
