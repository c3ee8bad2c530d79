"""How well a detector finds injected events, at a fixed alert budget: recall per event, delay, false alerts.

The protocol (docs/analytics.md has the figures):

1. A detector scores every bar; a larger score is more unusual; None is a bar it cannot score.
2. Its threshold is set on clean data *before* the evaluated span (never on the span itself): the score
   that `alerts_per_day` bars per market and day pass. Every detector gets the same budget, so a comparison of
   recall is a comparison at the same cost in alerts.
3. On the evaluated span with events injected: an event is found when a bar inside it (from its start
   to its end plus `grace_minutes`) passes the threshold; its delay is the minutes from its start to the
   first such bar. Recall is per event, never per bar and never point-adjusted: a long event found
   once counts once, a short one missed counts as missed.
4. False alerts per market-day: bars past the threshold outside every event, on the evaluated span.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from candlelake.analytics.detector import MINUTES_PER_DAY
from candlelake.analytics.features import MINUTE_US, Features
from candlelake.analytics.injection import Event

Scorer = Callable[[Sequence[Features]], list[float | None]]
"""A detector as the evaluation sees it: the score of each bar of a history, None where it has none."""


@dataclass(frozen=True, slots=True)
class Result:
    detector: str
    alerts_per_day_budget: float
    threshold: float
    events: int
    found: int
    delays_minutes: tuple[int, ...]
    false_alerts_per_day: float
    days: float

    @property
    def recall(self) -> float:
        return self.found / self.events if self.events else 0.0

    @property
    def median_delay_minutes(self) -> float | None:
        return statistics.median(self.delays_minutes) if self.delays_minutes else None

    def beats(self, other: Result) -> bool:
        """More events found at the same budget; on a tie, fewer false alerts."""
        return (self.recall, -self.false_alerts_per_day) > (other.recall, -other.false_alerts_per_day)

    def as_dict(self) -> dict[str, float | int | str | None]:
        return {
            "detector": self.detector,
            "alerts_per_day_budget": self.alerts_per_day_budget,
            "threshold": self.threshold,
            "events": self.events,
            "found": self.found,
            "recall": self.recall,
            "median_delay_minutes": self.median_delay_minutes,
            "max_delay_minutes": max(self.delays_minutes) if self.delays_minutes else None,
            "false_alerts_per_day": self.false_alerts_per_day,
            "days": self.days,
        }


def threshold_at_budget(clean_scores: Sequence[float | None], alerts_per_day: float) -> float:
    """The score that `alerts_per_day` bars per 1,440 of `clean_scores` reach (ties may let a few more)."""
    known = sorted((s for s in clean_scores if s is not None), reverse=True)
    if not known:
        raise ValueError("no bar of the calibration span could be scored: no threshold can be set")
    allowed = int(alerts_per_day * len(clean_scores) / MINUTES_PER_DAY)
    if allowed <= 0:
        return known[0] + abs(known[0]) * 1e-9 + 1e-12  # above everything seen: no alert at all
    return known[min(allowed, len(known)) - 1]


def evaluate(
    name: str,
    score: Scorer,
    calibration: Sequence[Sequence[Features]],
    injected: Sequence[tuple[Sequence[Features], Sequence[Event]]],
    *,
    alerts_per_day: float = 5.0,
    grace_minutes: int = 2,
) -> Result:
    """`name`'s recall per event on `injected` (per market: the features of its bars with events put in,
    and those events), at the one threshold that gives `alerts_per_day` per market-day on `calibration`
    (per market: clean features of an earlier span)."""
    threshold = threshold_at_budget([s for series in calibration for s in score(series)], alerts_per_day)
    delays: list[int] = []
    events = false = minutes = 0
    for bars, market_events in injected:
        fired = [b.open_time_us for b, s in zip(bars, score(bars), strict=True) if s is not None and s >= threshold]
        windows = [(e.start_us, e.end_us + grace_minutes * MINUTE_US) for e in market_events]
        for start, end in windows:
            hits = [t for t in fired if start <= t < end]
            if hits:
                delays.append((min(hits) - start) // MINUTE_US)
        false += sum(1 for t in fired if not any(start <= t < end for start, end in windows))
        events += len(market_events)
        minutes += len(bars)
    days = minutes / MINUTES_PER_DAY
    return Result(
        name, alerts_per_day, threshold, events, len(delays), tuple(delays), false / days if days else 0.0, days
    )
