"""The models in MLflow: training runs logged, versions registered, and the `champion` alias moved only
when candlelake.analytics.training says so.

Tracking and the model registry live in a PostgreSQL database of the platform (`CANDLELAKE_MLFLOW_DB`),
artifacts in a local folder (`CANDLELAKE_MLFLOW_ARTIFACTS_DIR`): a training task and the live scorer talk
to the store directly, no MLflow server needed (the `mlflow` platform part serves the UI over the same
store). Telemetry is off.

Every trained model is registered and gets the `challenger` alias; `champion` moves to it only when it
beats the champion and the baselines on held-out later data. The live scorer loads
`models:/<name>@champion`, so a refused challenger never scores a bar.

Models are stored with skops, not pickle. Trees (an Isolation Forest's, a random forest's) are held in
`sklearn.tree._tree.Tree`, which skops does not trust by default because it indexes its nodes unchecked:
we trust it here because only our own training task writes this store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from candlelake.analytics.training import DetectorReport, TrendReport, Verdict
from candlelake.config import Settings

DETECTOR_MODEL = "candlelake-anomaly-detector"
TREND_MODEL = "candlelake-trend-classifier"
EXPERIMENTS = {DETECTOR_MODEL: "candlelake-anomaly-detection", TREND_MODEL: "candlelake-trend"}
CHAMPION = "champion"
CHALLENGER = "challenger"
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


@dataclass(frozen=True, slots=True)
class Logged:
    """What a training run left in MLflow."""

    model: str
    run_id: str
    version: str
    promoted: bool
    reason: str
    champion_version: str | None

    def summary(self) -> str:
        verdict = "promoted to champion" if self.promoted else f"kept as challenger ({self.reason})"
        reigning = f"; champion is version {self.champion_version}" if self.champion_version else "; no champion"
        return f"{self.model} version {self.version} (run {self.run_id}): {verdict}{reigning}"


def use(settings: Settings) -> Any:
    """Point MLflow at the platform's store, telemetry off; return the `mlflow` module (imported late: it
    takes seconds, which nothing that does not train or score should pay)."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ.setdefault("DO_NOT_TRACK", "true")
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    return mlflow


def _experiment_id(settings: Settings, model: str) -> str:
    mlflow = use(settings)
    client = mlflow.MlflowClient()
    name = EXPERIMENTS[model]
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = settings.mlflow_artifacts_dir / name
    location.mkdir(parents=True, exist_ok=True)
    return str(client.create_experiment(name, artifact_location=location.as_uri()))


def champion(settings: Settings, model: str) -> tuple[Any, str] | None:
    """The champion of `model` and its version, or None when none has been promoted yet."""
    mlflow = use(settings)
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None  # no such model, or no champion alias yet
    loaded = mlflow.sklearn.load_model(f"models:/{model}@{CHAMPION}")
    return loaded, str(version.version)


def _log(
    settings: Settings,
    model: str,
    fitted: Any,
    params: dict[str, float | int | str],
    metrics: dict[str, float],
    verdict: Verdict,
) -> Logged:
    mlflow = use(settings)
    client = mlflow.MlflowClient()
    with mlflow.start_run(experiment_id=_experiment_id(settings, model)) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.set_tags({"candlelake.verdict": verdict.reason, "candlelake.promoted": str(verdict.promote).lower()})
        info = mlflow.sklearn.log_model(
            fitted,
            name="model",
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            registered_model_name=model,
        )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(model, CHALLENGER, version)
    client.set_model_version_tag(model, version, "candlelake.verdict", verdict.reason)
    if verdict.promote:
        client.set_registered_model_alias(model, CHAMPION, version)
    try:
        reigning: str | None = str(client.get_model_version_by_alias(model, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        reigning = None
    return Logged(model, run.info.run_id, version, verdict.promote, verdict.reason, reigning)


def log_detector(settings: Settings, report: DetectorReport) -> Logged:
    metrics: dict[str, float] = {}
    for prefix, result in (("", report.challenger), *((f"{k}_", v) for k, v in report.baselines.items())):
        metrics |= _detector_metrics(prefix, result)
    if report.champion is not None:
        metrics |= _detector_metrics("champion_", report.champion)
    return _log(settings, DETECTOR_MODEL, report.model, report.params, metrics, report.verdict)


def _detector_metrics(prefix: str, result: Any) -> dict[str, float]:
    out = {
        f"{prefix}recall": result.recall,
        f"{prefix}false_alerts_per_day": result.false_alerts_per_day,
        f"{prefix}events": float(result.events),
    }
    if result.median_delay_minutes is not None:
        out[f"{prefix}median_delay_minutes"] = float(result.median_delay_minutes)
    return out


def log_trend(settings: Settings, report: TrendReport) -> Logged:
    metrics = {"balanced_accuracy": report.challenger.balanced_accuracy, "accuracy": report.challenger.accuracy}
    for name, score in report.baselines.items():
        metrics |= {f"{name}_balanced_accuracy": score.balanced_accuracy, f"{name}_accuracy": score.accuracy}
    if report.champion is not None:
        metrics |= {"champion_balanced_accuracy": report.champion.balanced_accuracy}
    return _log(settings, TREND_MODEL, report.model, report.params, metrics, report.verdict)
