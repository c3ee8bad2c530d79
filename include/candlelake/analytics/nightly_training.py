"""One nightly training of one model: the curated history from PostgreSQL, a challenger trained and judged
(candlelake.analytics.training), the outcome logged to MLflow (candlelake.analytics.registry).

The `train_models` DAG runs this once per model; `NotEnoughHistory` is its "skipped", not a failure: a
new platform has no curated candles yet, and a model judged on a few hours says nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from candlelake.analytics import registry, training
from candlelake.analytics.history import load_history
from candlelake.config import Settings

MODELS = {"detector": registry.DETECTOR_MODEL, "trend": registry.TREND_MODEL}


class NotEnoughHistory(Exception):
    """The curated history cannot train and judge a model; the message says what is missing."""


def train(
    settings: Settings,
    which: str,
    *,
    days: int | None = None,
    end: datetime | None = None,
    exchanges: Sequence[str] | None = None,
) -> registry.Logged:
    """Train `which` ("detector" or "trend") on the last `days` (default CANDLELAKE_TRAINING_DAYS) of
    curated candles before `end` (default now), of every exchange or those named; log it, and promote it
    if it wins."""
    if which not in MODELS:
        raise ValueError(f"unknown model {which!r}: one of {', '.join(MODELS)}")
    end = end or datetime.now(UTC)
    start = end - timedelta(days=days or settings.training_days)
    history = load_history(settings.pg_dsn(), start, end, exchanges)
    if not history:
        raise NotEnoughHistory(f"no curated candles between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC")
    reigning = registry.champion(settings, MODELS[which])
    current = reigning[0] if reigning else None
    try:  # too few bars or samples: the training says how many and why
        report = (
            training.train_detector(history, current) if which == "detector" else training.train_trend(history, current)
        )
    except ValueError as exc:
        raise NotEnoughHistory(str(exc)) from None
    if isinstance(report, training.DetectorReport):
        return registry.log_detector(settings, report)
    return registry.log_trend(settings, report)
