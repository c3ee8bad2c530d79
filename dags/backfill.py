"""
### backfill

Fills missing trades and brings the affected days' curated candles up to date. Trigger it by hand
from the form.

- `fill_trades`: `source=rest`: the gap ledger's open id gaps of the exchange (and symbols), fetched
  from the exchange's REST API; `source=files`: trades in data.binance.vision files (a file or a folder
  on the worker) inside `start` .. `end`. Progress is in the task log
- `wait_for_lake`: waits until the streaming job's lake query has read every backfilled trade from Kafka
- `recompute_days`: runs `lake_compaction` for the days the trades belong to (one run per stretch of
  consecutive days, at most 31 each) and waits for it; `data_quality`, `load_curated_candles` and
  `reconcile_klines` follow through the assets

Backfilled trades travel the live path (Kafka, the streaming job's dedupe, the lake), so a trade
that was already there is not counted twice. Gaps the exchange could not serve stay open in the
ledger with a note (`candlelake gaps` lists them) and the task says so.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, PokeReturnValue, dag, get_current_context, task

from candlelake.exchanges import EXCHANGE_NAMES


@dag(
    dag_id="backfill",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["candlelake", "backfill"],
    doc_md=__doc__,
    params={
        "exchange": Param("binance", type="string", enum=list(EXCHANGE_NAMES)),
        "symbols": Param([], type="array", description="Symbols, e.g. BTCUSDT. Empty: every symbol with open gaps."),
        "start": Param(
            "", type="string", description="Start (UTC), e.g. 2026-11-30 or 2026-11-30T12:00Z. Needed for files."
        ),
        "end": Param("", type="string", description="End (UTC, exclusive). Needed for files."),
        "source": Param(
            "rest",
            type="string",
            enum=["rest", "files"],
            description="rest: the gap ledger's open gaps from the exchange's API; files: data.binance.vision files.",
        ),
        "files": Param(
            "", type="string", description="For source=files: a file or folder of trades/aggTrades CSV or zip."
        ),
    },
)
def backfill() -> None:
    @task(execution_timeout=timedelta(hours=4))
    def fill_trades() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from candlelake.config import ConfigError, load_settings
        from candlelake.runs.range_backfill import parse_request, run_request

        p = get_current_context()["params"]
        try:
            request = parse_request(p["exchange"], list(p["symbols"]), p["start"], p["end"], p["source"], p["files"])
        except ConfigError as exc:
            raise AirflowFailException(str(exc)) from None
        outcome = run_request(load_settings(), request, say=print)
        for error in outcome.errors:
            print(f"not filled: {error}")
        return {**outcome.as_dict(), "exchange": request.exchange}

    @task.sensor(poke_interval=10, timeout=3600, mode="poke")
    def wait_for_lake(filled: dict[str, Any]) -> PokeReturnValue:
        from candlelake.config import load_settings
        from candlelake.nightly.chain import compaction_runs, lake_offsets_reached

        if not filled["sent"]:
            return PokeReturnValue(is_done=True, xcom_value=[])
        wanted = {int(p): int(o) for p, o in filled["offsets"].items()}
        done, detail = lake_offsets_reached(load_settings(), wanted)
        print(detail)
        runs = compaction_runs(filled["exchange"], filled["days"])
        if done:
            for conf in runs:
                print(f"next: lake_compaction of {filled['exchange']} {conf['trade_date']} .. {conf['through_date']}")
        return PokeReturnValue(is_done=done, xcom_value=runs)

    recompute_days = TriggerDagRunOperator.partial(
        task_id="recompute_days",
        trigger_dag_id="lake_compaction",
        wait_for_completion=True,
        poke_interval=10,
        allowed_states=["success"],
        failed_states=["failed"],
        execution_timeout=timedelta(hours=4),
    )

    recompute_days.expand(conf=wait_for_lake(fill_trades()))


backfill_dag = backfill()

if __name__ == "__main__":
    backfill_dag.test()
