"""
### data_quality

Recomputes each compacted day's candles and validates the trades and the candles with Great
Expectations before anything is published: write, audit, publish.

Runs when `lake_compaction` updates the `curated_trades` asset, for the days that compaction covered;
trigger it by hand with `exchange` and `trade_date` to re-check one day.

- `plan_days`: the (exchange, day) pairs of the triggering asset events, or the form's, grouped by
  exchange: each Spark step below runs once per exchange for all of its days
- `recompute_candles`: **write**: `spark-submit jobs/batch_candles.py --stage`: each day's 1m candles
  from the lake's trades (late trades included, empty minutes filled), staged beside the lake
- `validate_day`: **audit**: `spark-submit jobs/validate_day.py`: the trades suite (no nulls, price and
  quantity positive, unique trade ids, times inside the day) and the candles suite (low <= open, close
  <= high, volumes and counts not negative, unique keys, no missing minute, equal to a recomputation
  from the trades)
- `publish_report`: emits the `validated_candles` asset, which starts `load_curated_candles`
  (**publish**)

A failed expectation fails `validate_day` without a retry, its log lists what failed, and the load
never starts: the staged candles stay unpublished. Every validation is kept (table `quality_runs` and
the Great Expectations result store) and the Data Docs HTML site is rebuilt in
`CANDLELAKE_REPORTS_DIR/data_docs/index.html`, which the dashboard links to.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Param, dag, get_current_context, task

from candlelake.nightly.chain import CURATED_TRADES, SPARK_CONN_ID, VALIDATED_CANDLES, spark_env

JOBS = Path(__file__).resolve().parents[1] / "jobs"


@dag(
    dag_id="data_quality",
    schedule=[Asset(CURATED_TRADES)],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["candlelake", "quality", "nightly"],
    doc_md=__doc__,
    params={
        "exchange": Param("", type="string", description="Manual runs: the exchange (blank: every compacted one)."),
        "trade_date": Param("", type="string", description="Manual runs: the UTC day, YYYY-MM-DD."),
    },
)
def data_quality() -> None:
    @task
    def plan_days() -> list[dict[str, Any]]:
        """The days to check, one entry per exchange with all its days: one Spark job (JVM start) each."""
        from airflow.sdk.exceptions import AirflowSkipException

        from candlelake.config import load_settings
        from candlelake.nightly.chain import days_for_run

        context = get_current_context()
        days = days_for_run(load_settings(), context["params"], context["triggering_asset_events"])
        if not days:
            raise AirflowSkipException("no day to check: trigger with trade_date (and exchange) in the form")
        run_id = context["run_id"]
        print("checking " + ", ".join(str(d) for d in days))
        by_exchange: dict[str, list[str]] = {}
        for d in days:
            by_exchange.setdefault(d.exchange, []).append(d.trade_date.isoformat())
        return [
            {
                "exchange": exchange,
                "days": dates,
                "args": ["--exchange", exchange, *(a for d in dates for a in ("--date", d)), "--run-id", run_id],
            }
            for exchange, dates in by_exchange.items()
        ]

    recompute_candles = SparkSubmitOperator.partial(
        task_id="recompute_candles",
        application=str(JOBS / "batch_candles.py"),
        conn_id=SPARK_CONN_ID,
        name="candlelake-recompute",
        driver_memory="2g",
        env_vars=spark_env(),
        execution_timeout=timedelta(hours=2),
    )

    @task(execution_timeout=timedelta(hours=2))
    def validate_day(batch: dict[str, Any]) -> dict[str, Any]:
        """spark-submit the validation of one exchange's days; a failed expectation fails at once (no retry)."""
        from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        from candlelake.config import load_settings
        from candlelake.nightly.chain import DayKey, describe_failures, failed_validations, parse_day

        context = get_current_context()
        keys = [DayKey(batch["exchange"], parse_day(d)) for d in batch["days"]]
        hook = SparkSubmitHook(
            conn_id=SPARK_CONN_ID,
            name="candlelake-validate",
            driver_memory="2g",
            env_vars=spark_env(),
            application_args=list(batch["args"]),
        )
        try:
            hook.submit(str(JOBS / "validate_day.py"))
        except AirflowException:
            settings = load_settings()
            failed = {key: failed_validations(settings, key, context["run_id"]) for key in keys}
            if any(failed.values()):
                text = "\n".join(f"{key}: validation failed\n{describe_failures(f)}" for key, f in failed.items() if f)
                raise AirflowFailException(text) from None
            raise  # the job itself broke (no result recorded): worth the retry
        return {"days": [str(k) for k in keys], "valid": True}

    @task(outlets=[Asset(VALIDATED_CANDLES)])
    def publish_report(batches: list[dict[str, Any]]) -> dict[str, Any]:
        from candlelake.config import load_settings
        from candlelake.nightly.chain import DayKey, event_extra, parse_day

        context = get_current_context()
        keys = [DayKey(b["exchange"], parse_day(d)) for b in batches for d in b["days"]]
        docs = load_settings().reports_dir / "data_docs" / "index.html"
        print(f"validated {', '.join(str(k) for k in keys)}; Data Docs: {docs}")
        context["outlet_events"][Asset(VALIDATED_CANDLES)].extra = event_extra(keys, context["run_id"])
        return {"days": [str(k) for k in keys], "data_docs": str(docs)}

    batches = plan_days()
    staged = recompute_candles.expand(application_args=batches.map(lambda b: [*b["args"], "--stage"]))
    validated = validate_day.expand(batch=batches)
    staged >> validated >> publish_report(batches)


data_quality_dag = data_quality()

if __name__ == "__main__":
    data_quality_dag.test()
