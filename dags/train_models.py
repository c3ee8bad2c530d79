"""
### train_models

Trains the market-analytics models from the curated 1m candles and tracks them in MLflow (the `mlflow`
part of the platform serves its UI; `candlelake up` prints the URL).

- `train_anomaly_detector`: an Isolation Forest over each closed bar's features, judged on the held-out
  last 20 % of the history with pumps and dumps injected at known minutes, at 5 alerts per market-day,
  against the z-score rules and the current champion
- `train_trend_classifier`: a random forest saying whether the close 15 minutes later is higher, judged
  on the held-out samples (a gap of the label horizon before them) against the majority class, the last
  move, a logistic regression and the current champion

Each run logs its parameters, metrics and model (skops) to MLflow and registers a version with the alias
`challenger`. The alias `champion`, which the live scorer loads, moves to it only when it beats the
champion and every baseline on the same held-out data; the task log and the version's
`candlelake.verdict` tag say why it did or did not. A task is skipped, not failed, when the curated
history is too short to train and judge a model (a new platform). Runs daily at CANDLELAKE_TRAINING_AT
(default 03:00 UTC, after the nightly chain; "off": by hand only).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from candlelake.config import read_training_at
from candlelake.nightly.chain import daily_cron

TRAINING_CRON = daily_cron(read_training_at())


def _train(which: str) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowSkipException

    from candlelake.analytics.nightly_training import NotEnoughHistory, train
    from candlelake.config import load_settings

    params = get_current_context()["params"]
    end = datetime.fromisoformat(params["end"]).replace(tzinfo=UTC) if params["end"] else None
    try:
        logged = train(
            load_settings(), which, days=int(params["days"]) or None, end=end, exchanges=params["exchanges"] or None
        )
    except NotEnoughHistory as exc:
        raise AirflowSkipException(f"skipped: {exc}") from None
    print(logged.summary())
    return {
        "model": logged.model,
        "version": logged.version,
        "run_id": logged.run_id,
        "promoted": logged.promoted,
        "reason": logged.reason,
        "champion_version": logged.champion_version,
    }


@dag(
    dag_id="train_models",
    schedule=CronDataIntervalTimetable(TRAINING_CRON, timezone="UTC") if TRAINING_CRON else None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2)},
    tags=["candlelake", "analytics", "nightly"],
    doc_md=__doc__,
    params={
        "exchanges": Param([], type="array", description="Exchanges whose curated candles to learn from; empty: all."),
        "end": Param(
            "",
            type="string",
            description="Learn from the days before this UTC day (YYYY-MM-DD); empty: until now.",
        ),
        "days": Param(
            0,
            type="integer",
            minimum=0,
            description="Days of curated candles to learn from; 0: CANDLELAKE_TRAINING_DAYS.",
        ),
    },
)
def train_models() -> None:
    @task(execution_timeout=timedelta(hours=2))
    def train_anomaly_detector() -> dict[str, Any]:
        return _train("detector")

    @task(execution_timeout=timedelta(hours=2))
    def train_trend_classifier() -> dict[str, Any]:
        return _train("trend")

    train_anomaly_detector()
    train_trend_classifier()


train_models()
