"""Training a challenger and judging it on held-out later data against the champion and the baselines.

Pure: bars in, fitted models and verdicts out. candlelake.analytics.registry logs the outcome to MLflow
and moves the aliases; the `train_models` DAG runs both on the curated candles.

The history is cut by time: the last `HELD_OUT_FRACTION` of its span is held out, and nothing of it is
seen in training. Both models are judged there, on the same data as the champion and the baselines:

- the anomaly detector on the held-out bars with pumps and dumps injected at known minutes (seeded, so a
  challenger and the champion face the same events), at a fixed alert budget calibrated on the training
  span (candlelake.analytics.evaluation); its baseline is the z-score rules;
- the trend classifier on the held-out samples, trained on samples whose label ends before the cut (the
  gap is the label horizon); its baselines are the majority class, the last move and a logistic
  regression.

A challenger is promoted only when it beats every baseline and the champion (`decide`).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from sklearn.ensemble import IsolationForest

from candlelake.analytics import detector, trend
from candlelake.analytics.evaluation import Result, evaluate
from candlelake.analytics.features import BASELINE_MINUTES, HISTORY_MINUTES, MINUTE_US, Bar, Features, features
from candlelake.analytics.injection import Event, inject, spaced_events
from candlelake.analytics.rules import Rules

HELD_OUT_FRACTION = 0.2
ALERTS_PER_DAY = 5.0
# Events the held-out span gets, at most one per two hours of it (they must not share a baseline hour).
EVENT_SIZES = (0.02, 0.03)
EVENT_SPACING_MINUTES = 2 * BASELINE_MINUTES
EVENT_SEED = 20191011
# The held-out span must hold its baseline hour and at least one event's slot.
MIN_HELD_OUT_MINUTES = BASELINE_MINUTES + EVENT_SPACING_MINUTES

History = Mapping[str, Sequence[Bar]]
"""Each market's ("exchange:symbol") closed 1m bars, in time order."""


class Beats(Protocol):
    def beats(self, other: Any, /) -> bool: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    promote: bool
    reason: str


def decide(challenger: Beats, champion: Beats | None, baselines: Mapping[str, Beats]) -> Verdict:
    """Promote only a challenger that beats every baseline and the champion, on the same held-out data."""
    for name, baseline in baselines.items():
        if not challenger.beats(baseline):
            return Verdict(False, f"does not beat the {name} baseline")
    if champion is not None and not challenger.beats(champion):
        return Verdict(False, "does not beat the champion")
    if champion is None:
        return Verdict(True, "beats every baseline and there is no champion yet")
    return Verdict(True, "beats the champion and every baseline")


def held_out_cut(history: History, fraction: float = HELD_OUT_FRACTION) -> int:
    """The minute (epoch microseconds) from which the last `fraction` of the history's span is held out."""
    starts = [bars[0].open_time_us for bars in history.values() if bars]
    ends = [bars[-1].open_time_us for bars in history.values() if bars]
    if not starts:
        raise ValueError("there are no candles to train on")
    first, last = min(starts), max(ends)
    cut = last - int((last - first) * fraction)
    cut -= cut % MINUTE_US
    if last - cut < MIN_HELD_OUT_MINUTES * MINUTE_US:
        raise ValueError(
            f"{(last - first) // MINUTE_US + 1} minutes of candles are too few to hold out "
            f"{MIN_HELD_OUT_MINUTES} minutes ({fraction:.0%}) for judging a model; "
            f"train on at least {int(MIN_HELD_OUT_MINUTES / fraction)} minutes"
        )
    return cut


@dataclass
class DetectorReport:
    model: IsolationForest
    challenger: Result
    baselines: dict[str, Result]
    champion: Result | None
    verdict: Verdict
    params: dict[str, float | int | str] = field(default_factory=dict)


def _split_features(bars: Sequence[Bar], cut: int) -> tuple[list[Features], list[Features]]:
    every = list(features(bars))
    return [f for f in every if f.open_time_us < cut], [f for f in every if f.open_time_us >= cut]


def _first_at(bars: Sequence[Bar], time_us: int) -> int:
    """The index of the first of `bars` (time order) opening at or after `time_us`."""
    return bisect.bisect_left(bars, time_us, key=lambda b: b.open_time_us)


def injected_held_out(history: History, cut: int, seed: int = EVENT_SEED) -> list[tuple[list[Features], list[Event]]]:
    """Per market with room for one: the held-out features with pumps and dumps injected, and the events."""
    out = []
    for n, bars in enumerate(history[k] for k in sorted(history)):
        held = bars[_first_at(bars, cut) :]
        slots = (len(held) - BASELINE_MINUTES) // EVENT_SPACING_MINUTES
        if slots < 1:
            continue
        events = spaced_events(held, slots, EVENT_SIZES, seed=seed + n, spacing_minutes=EVENT_SPACING_MINUTES)
        # A held-out bar's features look back an hour and a minute at most, and an injected event at the
        # hour before it: the bars from then on are all the features of the held-out span need.
        tail = bars[_first_at(bars, cut - HISTORY_MINUTES * MINUTE_US) :]
        _, injected = _split_features(inject(tail, events), cut)
        out.append((injected, events))
    return out


def train_detector(
    history: History,
    champion: IsolationForest | None = None,
    *,
    alerts_per_day: float = ALERTS_PER_DAY,
    trees: int = 200,
    seed: int = 0,
) -> DetectorReport:
    """A challenger Isolation Forest fitted on the history before the cut, judged after it."""
    cut = held_out_cut(history)
    calibration = [_split_features(bars, cut)[0] for bars in history.values()]
    model = detector.fit(
        [f for series in calibration for f in series], alerts_per_day=alerts_per_day, trees=trees, seed=seed
    )
    held_out = injected_held_out(history, cut)
    if not held_out:
        raise ValueError("no market has a held-out span long enough to inject an event into")
    rules = Rules()

    def judged(name: str, forest: IsolationForest) -> Result:
        return evaluate(
            name, lambda bars: detector.scores(forest, bars), calibration, held_out, alerts_per_day=alerts_per_day
        )

    baselines = {
        "rules": evaluate(
            "rules",
            lambda bars: [rules.score("", "", b) for b in bars],
            calibration,
            held_out,
            alerts_per_day=alerts_per_day,
        )
    }
    challenger = judged("challenger", model)
    reigning = judged("champion", champion) if champion is not None else None
    params: dict[str, float | int | str] = {
        "trees": trees,
        "seed": seed,
        "alerts_per_day": alerts_per_day,
        "held_out_from_us": cut,
        "markets": len(history),
        "training_bars": sum(len(c) for c in calibration),
        "event_sizes": ",".join(str(s) for s in EVENT_SIZES),
        "features": ",".join(detector.VECTOR),
    }
    return DetectorReport(model, challenger, baselines, reigning, decide(challenger, reigning, baselines), params)


@dataclass
class TrendReport:
    model: Any
    challenger: trend.Score
    baselines: dict[str, trend.Score]
    champion: trend.Score | None
    verdict: Verdict
    params: dict[str, float | int | str] = field(default_factory=dict)


def train_trend(history: History, champion: Any | None = None, *, seed: int = 0) -> TrendReport:
    """A challenger random forest trained on the samples whose label ends before the cut, judged after it."""
    cut = held_out_cut(history)
    data = trend.combine([trend.samples(bars) for bars in history.values()])
    train, test = trend.split(data, cut)
    if len(set(train.y.tolist())) < 2 or len(test) == 0:
        raise ValueError(
            f"{len(train)} training and {len(test)} held-out samples: too few (or of one class) to train a "
            "trend classifier"
        )
    model = trend.fitted("random_forest", train, seed)
    logistic = trend.fitted("logistic", train, seed)
    baselines = {
        "majority": trend.score(test.y, trend.predict_baseline("majority", train, test)),
        "last_move": trend.score(test.y, trend.predict_baseline("last_move", train, test)),
        "logistic": trend.score(test.y, logistic.predict(test.x)),
    }
    challenger = trend.score(test.y, model.predict(test.x))
    reigning = trend.score(test.y, np.asarray(champion.predict(test.x))) if champion is not None else None
    params: dict[str, float | int | str] = {
        "seed": seed,
        "horizon_minutes": trend.HORIZON_MINUTES,
        "held_out_from_us": cut,
        "markets": len(history),
        "training_samples": len(train),
        "held_out_samples": len(test),
        "features": ",".join(trend.VECTOR),
        **{
            f"rf_{k}": v
            for k, v in model.get_params().items()
            if k in ("n_estimators", "max_depth", "min_samples_leaf", "max_samples")
        },
    }
    return TrendReport(model, challenger, baselines, reigning, decide(challenger, reigning, baselines), params)
