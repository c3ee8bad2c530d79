"""
### reconcile_klines

Compares the curated 1m candles with the exchange's own klines and reports the match rate per symbol
and day: the proof that candlelake's candles are the exchange's, digit for digit.

Runs when `load_curated_candles` updates the `curated_candles` asset, for the days it loaded; trigger it
by hand to check any day.

- `plan_days`: the (exchange, day) pairs of the triggering asset events, or the form's
- `reconcile_day`: one mapped task per day: take the klines (kline files in data.binance.vision format
  from the form's `files_dir` or CANDLELAKE_KLINE_FILES where they have the day, else the exchange's
  REST API) and compare open, high, low, close, volume (and quote and taker-buy volumes where the kline
  has them) with the curated candles
- `check_match_rate`: fails when a symbol's share of mismatching covered minutes is above
  `max_mismatch_rate`; skipped ("skipped: no kline source") when no kline source could be reached

Only covered minutes are judged: a candle whose interval was not fully observed (coverage `partial`)
is counted as partial and a kline in a minute we did not cover as not covered, neither a mismatch.
Every comparison is kept in `kline_reconciliations` (match rate, counts, up to 10 examples of what
differed). Exchanges without klines (the simulator) are reported as such and not failed. Without
internet (the offline default) and without kline files, the REST API cannot be reached: the run ends
with `check_match_rate` skipped, not failed, and says so.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from candlelake.nightly.chain import CURATED_CANDLES


@dag(
    dag_id="reconcile_klines",
    schedule=[Asset(CURATED_CANDLES)],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["candlelake", "quality", "nightly"],
    doc_md=__doc__,
    params={
        "exchange": Param("", type="string", description="Manual runs: the exchange, e.g. binance."),
        "trade_date": Param("", type="string", description="Manual runs: the UTC day, YYYY-MM-DD."),
        "symbols": Param([], type="array", description="Symbols to compare. Empty: every curated symbol of the day."),
        "source": Param(
            "auto",
            type="string",
            enum=["auto", "rest", "files"],
            description="auto: kline files where they have the day, else the exchange's REST API; or only one.",
        ),
        "files_dir": Param(
            "",
            type="string",
            description=(
                "data.binance.vision kline files (BTCUSDT-1m-2026-11-30.zip or .csv): a folder, a glob or a "
                "file. Empty: CANDLELAKE_KLINE_FILES."
            ),
        ),
        "max_mismatch_rate": Param(
            -1.0,
            type="number",
            description="Largest share of differing minutes per symbol; -1: CANDLELAKE_RECONCILE_MAX_MISMATCH_RATE.",
        ),
    },
)
def reconcile_klines() -> None:
    @task
    def plan_days() -> list[dict[str, str]]:
        from airflow.sdk.exceptions import AirflowSkipException

        from candlelake.config import load_settings
        from candlelake.nightly.chain import days_for_run

        context = get_current_context()
        days = days_for_run(load_settings(), context["params"], context["triggering_asset_events"])
        if not days:
            raise AirflowSkipException("no day to reconcile: trigger with exchange and trade_date in the form")
        return [d.as_dict() for d in days]

    @task(execution_timeout=timedelta(minutes=30))
    def reconcile_day(day: dict[str, str]) -> list[dict[str, Any]]:
        from candlelake.config import load_settings
        from candlelake.nightly.chain import DayKey
        from candlelake.nightly.reconcile import reconcile_day as reconcile

        context = get_current_context()
        params = context["params"]
        key = DayKey.from_dict(day)
        files = str(params["files_dir"]).strip() or None
        results = reconcile(
            load_settings(),
            key.exchange,
            key.trade_date,
            symbols=[str(s).upper() for s in params["symbols"]] or None,
            source=params["source"],
            files_dir=files,
            run_id=context["run_id"],
        )
        for result in results:
            print(result.text())
        return [r.as_dict() for r in results]

    @task
    def check_match_rate(per_day: list[list[dict[str, Any]]]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from candlelake.config import load_settings
        from candlelake.nightly.reconcile import ReconcileFailed, ReconcileResult, ReconcileSkipped, check_results

        limit = float(get_current_context()["params"]["max_mismatch_rate"])
        if limit < 0:
            limit = load_settings().reconcile_max_mismatch_rate
        results = [ReconcileResult.from_dict(r) for day in per_day for r in day]
        try:
            return check_results(results, limit)
        except ReconcileFailed as exc:
            raise AirflowFailException(str(exc)) from None
        except ReconcileSkipped as exc:
            raise AirflowSkipException(str(exc)) from None

    check_match_rate(reconcile_day.expand(day=plan_days()))


reconcile_klines_dag = reconcile_klines()

if __name__ == "__main__":
    reconcile_klines_dag.test()
