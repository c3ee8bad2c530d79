"""The trend classifier: will a market's close be higher `HORIZON_MINUTES` from now? Judged walk-forward.

A sample is one closed bar: its features (candlelake.analytics.features) and, as label, whether the close
`HORIZON_MINUTES` later is above its own (1) or not (0: lower or unchanged). A bar whose later minute
nobody watched has no label and is no sample.

Validation never shuffles time. `walk_forward` cuts the samples into consecutive blocks; each block is
scored by models trained only on samples before it, and a training sample must end (its label's minute)
before the block starts: the gap is the label horizon, so no label overlaps the block it is tested on.

Every model is compared with three baselines on the same folds: the training span's majority class, the
last move (up if the last `HORIZON_MINUTES` went up: momentum), and a logistic regression on the same
features. docs/analytics.md reports the figures, including when the forest does not beat them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from candlelake.analytics.features import MINUTE_US, Bar, Features, features

HORIZON_MINUTES = 15
VECTOR = (
    "log_return_1m",
    "move_15m",
    "distance_5m",
    "distance_15m",
    "volatility_15m",
    "return_z",
    "volume_z",
    "trades_z",
)
"""The classifier's inputs, in order."""
MODELS = ("random_forest", "logistic")
BASELINES = ("majority", "last_move", "logistic")


@dataclass(frozen=True, slots=True)
class Samples:
    """Labelled samples of one or more markets, in time order of their bars."""

    times_us: np.ndarray
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def where(self, mask: np.ndarray) -> Samples:
        return Samples(self.times_us[mask], self.x[mask], self.y[mask])


def samples(bars: Sequence[Bar]) -> Samples:
    """The labelled samples of one market's bars (time order)."""
    close_at = {b.open_time_us: b.close for b in bars}
    times, rows, labels = [], [], []
    for bar in features(bars):
        later = close_at.get(bar.open_time_us + HORIZON_MINUTES * MINUTE_US)
        earlier = close_at.get(bar.open_time_us - HORIZON_MINUTES * MINUTE_US)
        row = _row(bar, earlier)
        if later is None or row is None:
            continue
        times.append(bar.open_time_us)
        rows.append(row)
        labels.append(1 if later > bar.close else 0)
    return Samples(
        np.array(times, dtype=np.int64), np.array(rows, dtype=float).reshape(-1, len(VECTOR)), np.array(labels)
    )


def combine(parts: Sequence[Samples]) -> Samples:
    """Samples of several markets as one set, in time order (a stable sort keeps each market's order)."""
    times = np.concatenate([p.times_us for p in parts])
    order = np.argsort(times, kind="stable")
    return Samples(
        times[order], np.concatenate([p.x for p in parts])[order], np.concatenate([p.y for p in parts])[order]
    )


def _row(bar: Features, earlier: object) -> list[float] | None:
    if bar.ma_5m is None or bar.ma_15m is None or earlier is None or not bar.ma_5m or not bar.ma_15m:
        return None
    values = [
        bar.log_return_1m,
        float(bar.close / earlier) - 1.0 if earlier else None,  # type: ignore[operator]
        float(bar.close / bar.ma_5m) - 1.0,
        float(bar.close / bar.ma_15m) - 1.0,
        bar.volatility_15m,
        bar.return_z,
        bar.volume_z,
        bar.trades_z,
    ]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values if v is not None]


TREE_SAMPLES = 100_000
"""The most samples one tree of the forest is grown on (a bootstrap draw of that many): past it a tree's
cost grows with the history (a year of 10 markets is 4 million samples) and its splits barely change."""


def random_forest(seed: int = 0) -> RandomForestClassifier:
    # Shallow and with leaves of at least 20 samples: minute returns are mostly noise, and a deep forest
    # learns the noise of its training days (measured: deeper trees scored worse on later blocks).
    return RandomForestClassifier(n_estimators=200, max_depth=6, min_samples_leaf=20, random_state=seed, n_jobs=1)


def logistic(seed: int = 0) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))


FACTORIES: dict[str, Callable[[int], ClassifierMixin | Pipeline]] = {
    "random_forest": random_forest,
    "logistic": logistic,
}


def fitted(name: str, train: Samples, seed: int = 0) -> ClassifierMixin | Pipeline:
    """Model `name` (MODELS) fitted on `train`; a forest's trees on `TREE_SAMPLES` each at most."""
    model = FACTORIES[name](seed)
    if isinstance(model, RandomForestClassifier) and len(train) > TREE_SAMPLES:
        model.set_params(max_samples=TREE_SAMPLES)
    return model.fit(train.x, train.y)


def predict_baseline(name: str, train: Samples, test: Samples) -> np.ndarray:
    """The predictions of a baseline that needs no fitting: the majority class, or the last move."""
    if name == "majority":
        return np.full(len(test), int(np.mean(train.y) > 0.5))
    if name == "last_move":
        return (test.x[:, VECTOR.index("move_15m")] > 0).astype(int)
    raise ValueError(f"unknown baseline {name!r}")


@dataclass(frozen=True, slots=True)
class Score:
    """A model's predictions on held-out samples, scored: balanced accuracy first (a majority guess gets
    0.5 whatever the class balance), accuracy second."""

    balanced_accuracy: float
    accuracy: float
    samples: int

    def beats(self, other: Score) -> bool:
        return (self.balanced_accuracy, self.accuracy) > (other.balanced_accuracy, other.accuracy)


def score(y_true: np.ndarray, y_pred: np.ndarray) -> Score:
    return Score(float(balanced_accuracy_score(y_true, y_pred)), float(accuracy_score(y_true, y_pred)), len(y_true))


def split(data: Samples, test_start_us: int, test_end_us: int | None = None) -> tuple[Samples, Samples]:
    """Training samples whose label ends before `test_start_us` (the gap), and the test samples from it."""
    train = data.where(data.times_us + HORIZON_MINUTES * MINUTE_US < test_start_us)
    end = np.iinfo(np.int64).max if test_end_us is None else test_end_us
    return train, data.where((data.times_us >= test_start_us) & (data.times_us < end))


def walk_forward(data: Samples, folds: int = 4, seed: int = 0) -> dict[str, list[Score]]:
    """Each model's and baseline's score on each of `folds` later blocks, trained on what came before.

    The samples are cut into `folds + 1` blocks of equal count; the first is only ever training data."""
    if len(data) < 10 * (folds + 1):
        raise ValueError(f"{len(data)} samples are too few for {folds} walk-forward folds")
    edges = [int(data.times_us[len(data) * k // (folds + 1)]) for k in range(1, folds + 1)] + [None]
    # The logistic regression is a model and a baseline: one set of scores serves both.
    results: dict[str, list[Score]] = {name: [] for name in (*MODELS, *BASELINES)}
    for start, end in itertools.pairwise(edges):
        assert start is not None
        train, test = split(data, start, end)
        if len(set(train.y.tolist())) < 2 or not len(test):
            continue
        for name in MODELS:
            model = fitted(name, train, seed)
            results[name].append(score(test.y, model.predict(test.x)))
        for name in ("majority", "last_move"):
            results[name].append(score(test.y, predict_baseline(name, train, test)))
    return results


def mean(scores: Sequence[Score]) -> Score:
    """The folds' mean, weighted by their samples."""
    total = sum(s.samples for s in scores)
    if not total:
        return Score(0.0, 0.0, 0)
    return Score(
        sum(s.balanced_accuracy * s.samples for s in scores) / total,
        sum(s.accuracy * s.samples for s in scores) / total,
        total,
    )
