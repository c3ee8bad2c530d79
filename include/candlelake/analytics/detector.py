"""The learned anomaly detector: an Isolation Forest over a closed bar's features.

Why an Isolation Forest (scikit-learn) and not an online model (river's half-space trees): a batch model
is one versioned thing that MLflow can register, compare on held-out data and promote (`challenger` ->
`champion`); an online model is a different model after every bar, so "the champion" would name nothing
and a bad night could not be refused. It also scores fast enough: docs/analytics.md has the measured
latency per bar and the recall against the rules on injected events.

The forest sees scale-free features only (z-scores, log returns, volatility, distance from the 15-minute
average), so one model serves markets of any price and volume. A bar missing one of them (its hour not
wholly watched, a price-only market without volume) is not scored: the rules still see it.

Its alert budget is its contamination: `fit(..., alerts_per_day=n)` sets the threshold so that n bars a
day of the training history would have fired. `score` > 0 means past that threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import IsolationForest

from candlelake.analytics.features import Features
from candlelake.analytics.rules import Anomaly, Kind, evidence

MINUTES_PER_DAY = 1440
VECTOR = ("log_return_1m", "return_z", "volume_z", "trades_z", "volatility_15m", "distance_15m")
"""The detector's inputs, in order; `vector()` computes them from a bar's Features."""
DETECTOR = "isolation_forest"
# A learned anomaly's kind is read off its features with these (looser than the rules' own thresholds:
# the forest already said the bar is unusual, the kind only says in which way).
KIND_Z = 2.0
MIN_TRAINING_BARS = 120


def vector(bar: Features) -> list[float] | None:
    """The detector's inputs of one bar (VECTOR order), or None when one of them is unknown."""
    if bar.ma_15m is None or bar.ma_15m == 0:
        return None
    values = [
        bar.log_return_1m,
        bar.return_z,
        bar.volume_z,
        bar.trades_z,
        bar.volatility_15m,
        float(bar.close / bar.ma_15m) - 1.0,
    ]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values if v is not None]


def matrix(bars: Sequence[Features]) -> tuple[np.ndarray, list[Features]]:
    """The vectors of the scorable bars, and those bars (in the same order)."""
    kept = [(v, b) for b in bars if (v := vector(b)) is not None]
    rows = np.array([v for v, _ in kept], dtype=float).reshape(-1, len(VECTOR))
    return rows, [b for _, b in kept]


def fit(bars: Sequence[Features], *, alerts_per_day: float = 5.0, trees: int = 200, seed: int = 0) -> IsolationForest:
    """An Isolation Forest fitted on the scorable bars of a (mostly normal) history, its threshold at the
    alert budget: `alerts_per_day` of every 1,440 training bars score past it."""
    rows, _ = matrix(bars)
    if len(rows) < MIN_TRAINING_BARS:
        raise ValueError(
            f"{len(rows)} scorable bars are too few to train a detector on (need at least {MIN_TRAINING_BARS})"
        )
    contamination = min(0.5, alerts_per_day / MINUTES_PER_DAY)
    model = IsolationForest(n_estimators=trees, contamination=contamination, random_state=seed)
    model.fit(rows)
    return model


def scores(model: IsolationForest, bars: Sequence[Features]) -> list[float | None]:
    """Each bar's score (> 0: past the model's threshold; larger: more unusual), None where unscorable."""
    rows, kept = matrix(bars)
    if not kept:
        return [None] * len(bars)
    # decision_function is negative for outliers; its sign flipped, a score above 0 fires.
    found = dict(zip((id(b) for b in kept), (-model.decision_function(rows)).tolist(), strict=True))
    return [found.get(id(b)) for b in bars]


def kind_of(bar: Features) -> Kind | str:
    """In what way a bar the forest found unusual is unusual, read off its z-scores."""
    move = bar.return_z is not None and abs(bar.return_z) >= KIND_Z
    heavy = bar.volume_z is not None and bar.volume_z >= KIND_Z
    if move and heavy:
        return "pump" if (bar.return_z or 0.0) > 0 else "dump"
    if move:
        return "price_move"
    if heavy:
        return "volume_spike"
    return "unusual"


@dataclass
class Detector:
    """A fitted forest scoring one bar at a time, as the live scorer does."""

    model: IsolationForest
    name: str = DETECTOR

    def check(self, exchange: str, symbol: str, bar: Features) -> Anomaly | None:
        return self.check_many([(exchange, symbol, bar)])[0]

    def check_many(self, bars: Sequence[tuple[str, str, Features]]) -> list[Anomaly | None]:
        """Each (exchange, symbol, features)'s anomaly or None, in one call of the forest: its cost is
        per call far more than per row."""
        rows = [vector(bar) for _, _, bar in bars]
        known = [i for i, row in enumerate(rows) if row is not None]
        out: list[Anomaly | None] = [None] * len(bars)
        if not known:
            return out
        scores = -self.model.decision_function(np.array([rows[i] for i in known]))
        for i, score in zip(known, scores.tolist(), strict=True):
            if score > 0:
                exchange, symbol, bar = bars[i]
                out[i] = Anomaly(exchange, symbol, bar.open_time_us, kind_of(bar), score, self.name, evidence(bar))
        return out
