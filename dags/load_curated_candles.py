"""
### load_curated_candles

Publishes the validated candles of each day into PostgreSQL as **curated**: the nightly final word.

Runs when `data_quality` updates the `validated_candles` asset, for the days it validated; trigger it
by hand with `exchange` and `trade_date` to publish one staged day again.

- `plan_days`: the (exchange, day) pairs of the triggering asset events, or the form's
- `load_candles`: one mapped task per day: COPY the staged candles into a staging table, compare with
  what PostgreSQL holds, upsert them as `curated` in one transaction
- `report_load`: logs how many candles each day inserted and changed; emits the `curated_candles` asset
  for `reconcile_klines`

A day is loaded only when its staged candles are exactly the ones Great Expectations passed (same
fingerprint in `quality_runs`); otherwise the task fails without a retry and says so. Candles whose
values the batch changed (trades that arrived after the live candle closed, a trade the stream
dropped) are the late-data corrections: counted in `curated_loads.changed`, each one kept with its
values before and after in `candle_corrections`. Loading the same day twice changes nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from candlelake.nightly.chain import CURATED_CANDLES, VALIDATED_CANDLES


@dag(
    dag_id="load_curated_candles",
    schedule=[Asset(VALIDATED_CANDLES)],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["candlelake", "postgres", "nightly"],
    doc_md=__doc__,
    params={
        "exchange": Param("", type="string", description="Manual runs: the exchange (blank: every staged one)."),
        "trade_date": Param("", type="string", description="Manual runs: the UTC day, YYYY-MM-DD."),
    },
)
def load_curated_candles() -> None:
    @task
    def plan_days() -> list[dict[str, str]]:
        from airflow.sdk.exceptions import AirflowSkipException

        from candlelake.config import load_settings
        from candlelake.nightly.chain import days_for_run

        context = get_current_context()
        days = days_for_run(load_settings(), context["params"], context["triggering_asset_events"])
        if not days:
            raise AirflowSkipException("no day to load: trigger with trade_date (and exchange) in the form")
        return [d.as_dict() for d in days]

    @task(execution_timeout=timedelta(minutes=30))
    def load_candles(day: dict[str, str]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from candlelake.config import load_settings
        from candlelake.nightly.chain import DayKey
        from candlelake.nightly.curated_load import NotValidated, load_day

        key = DayKey.from_dict(day)
        try:
            result = load_day(load_settings(), key.exchange, key.trade_date, get_current_context()["run_id"])
        except NotValidated as exc:
            raise AirflowFailException(f"{key}: not loaded: {exc}") from None
        print(f"{key}: {result.text()}")
        return {**key.as_dict(), **result.as_dict()}

    @task(outlets=[Asset(CURATED_CANDLES)])
    def report_load(results: list[dict[str, Any]]) -> dict[str, Any]:
        from candlelake.nightly.chain import DayKey, event_extra

        context = get_current_context()
        keys = [DayKey.from_dict(r) for r in results]
        for r in results:
            print(
                f"{r['exchange']} {r['trade_date']}: {r['candles']} curated candles, {r['inserted']} new, "
                f"{r['changed']} changed by the batch (late-data corrections), {r['unchanged']} unchanged"
            )
        context["outlet_events"][Asset(CURATED_CANDLES)].extra = event_extra(keys, context["run_id"])
        return {"changed": sum(int(r["changed"]) for r in results), "days": [str(k) for k in keys]}

    report_load(load_candles.expand(day=plan_days()))


load_curated_candles_dag = load_curated_candles()

if __name__ == "__main__":
    load_curated_candles_dag.test()
