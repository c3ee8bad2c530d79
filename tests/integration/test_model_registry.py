"""Nightly training on curated candles in PostgreSQL, logged to a real MLflow store, promoted by the rule.

Binance's XRP/ETH 1m klines of 2019-10-11 to 13 (tests/fixtures/klines) are loaded as one exchange's
curated candles. The store is MLflow's own (SQLite here, in a folder of the test, with its artifacts
beside it; the platform's default is a PostgreSQL database), so the platform's registry is not touched.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest
from psycopg2.extras import execute_values

from candlelake.analytics import registry
from candlelake.analytics.nightly_training import NotEnoughHistory, train
from candlelake.config import Settings
from candlelake.sources.klines import read_kline_file

pytestmark = pytest.mark.integration

KLINES = Path(__file__).resolve().parents[1] / "fixtures" / "klines"
DAYS = ("2019-10-11", "2019-10-12", "2019-10-13")
END = datetime(2019, 10, 14, tzinfo=UTC)


@pytest.fixture(scope="module")
def curated(services: Settings, module_exchange: str) -> str:
    rows = [
        (module_exchange, "XRPETH", k.open_time, k.close_time, k.open, k.high, k.low, k.close, k.volume, k.trades)
        for day in DAYS
        for k in read_kline_file(KLINES / f"XRPETH-1m-{day}.csv")
    ]
    with psycopg2.connect(services.pg_dsn()) as conn, conn.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO candles (exchange, symbol, open_time, close_time, open, high, low, close, volume, "
            "quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, state, coverage) VALUES %s",
            rows,
            template="(%s, %s, %s, %s, %s, %s, %s, %s, %s, 0, %s, 0, 0, 'curated', 'complete')",
        )
    conn.close()
    return module_exchange


@pytest.fixture(scope="module")
def store(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    folder = tmp_path_factory.mktemp("mlflow")
    return dataclasses.replace(
        services, mlflow_tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", mlflow_artifacts_dir=folder / "artifacts"
    )


def test_training_registers_the_detector_promotes_it_and_refuses_one_no_better(store, curated) -> None:
    first = train(store, "detector", days=3, end=END, exchanges=[curated])
    assert (first.version, first.promoted, first.champion_version) == ("1", True, "1"), first.summary()

    mlflow = registry.use(store)
    client = mlflow.MlflowClient()
    run = client.get_run(first.run_id)
    assert run.data.metrics["recall"] > run.data.metrics["rules_recall"]
    assert run.data.params["features"].split(",")[0] == "log_return_1m"
    assert run.data.tags["candlelake.promoted"] == "true"
    assert (store.mlflow_artifacts_dir / registry.EXPERIMENTS[registry.DETECTOR_MODEL]).is_dir()

    # The same data and seed again: a challenger equal to its champion is registered but not promoted.
    second = train(store, "detector", days=3, end=END, exchanges=[curated])
    assert (second.version, second.promoted, second.reason) == ("2", False, "does not beat the champion")
    assert str(client.get_model_version_by_alias(registry.DETECTOR_MODEL, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(registry.DETECTOR_MODEL, "challenger").version) == "2"
    assert client.get_model_version(registry.DETECTOR_MODEL, "2").tags["candlelake.verdict"] == second.reason

    # The scorer's load: models:/<name>@champion, a fitted forest read back with skops.
    model, version = registry.champion(store, registry.DETECTOR_MODEL)
    assert version == "1" and model.n_estimators == 200 and hasattr(model, "estimators_")


def test_the_trend_classifier_is_registered_whatever_its_verdict(store, curated) -> None:
    logged = train(store, "trend", days=3, end=END, exchanges=[curated])
    client = registry.use(store).MlflowClient()
    metrics = client.get_run(logged.run_id).data.metrics
    assert {"balanced_accuracy", "majority_balanced_accuracy", "last_move_balanced_accuracy"} <= set(metrics)
    assert metrics["majority_balanced_accuracy"] == 0.5
    # Balanced accuracy first, accuracy on a tie, strictly better than each baseline (there is no champion).
    beats_all = all(
        (metrics["balanced_accuracy"], metrics["accuracy"])
        > (metrics[f"{b}_balanced_accuracy"], metrics[f"{b}_accuracy"])
        for b in ("majority", "last_move", "logistic")
    )
    assert logged.promoted == beats_all, logged.summary()
    assert str(client.get_model_version_by_alias(registry.TREND_MODEL, "challenger").version) == logged.version


def test_no_curated_history_is_a_clear_skip_not_a_crash(store, curated) -> None:
    with pytest.raises(NotEnoughHistory, match="no curated candles between 2019-10-10"):
        train(store, "detector", days=1, end=datetime(2019, 10, 11, tzinfo=UTC), exchanges=[curated])
    with pytest.raises(NotEnoughHistory, match="too few to hold out"):
        train(store, "detector", days=1, end=datetime(2019, 10, 11, 5, tzinfo=UTC), exchanges=[curated])
