"""
### start_stream

Starts the live path: the producer on the source and symbols of the form, and the Spark streaming job.

- `start_components`: records in `stream_control` that both should run, with these options; starts what
  is not running, restarts the producer when its source or symbols changed, waits until each is healthy

From then on `stream_supervisor` keeps them running with these options. The streaming job is launched
with the apache-spark provider's SparkSubmitHook, detached from the task: it keeps running after the
task ends. Sources: `simulator` (offline), `binance`, `binance-usdm`, `coinbase` (WebSocket trades),
`binance-rest`, `coingecko` (price points). Symbols blank: the source's defaults.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from candlelake.config import PRODUCER_SOURCES


@dag(
    dag_id="start_stream",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=20), "execution_timeout": timedelta(minutes=10)},
    tags=["candlelake", "stream"],
    doc_md=__doc__,
    params={
        "source": Param("simulator", type="string", enum=list(PRODUCER_SOURCES), description="Where trades come from."),
        "symbols": Param(
            [], type="array", description="Symbols, e.g. BTCUSDT (Coinbase: BTC-USD). Empty: the source's defaults."
        ),
    },
)
def start_stream() -> None:
    @task
    def start_components() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from candlelake.config import load_settings
        from candlelake.platform.stream_control import StreamControlError, start_stream

        context = get_current_context()
        params = context["params"]
        symbols = [str(s).strip() for s in params["symbols"] if str(s).strip()]
        try:
            outcome = start_stream(load_settings(), params["source"], symbols, changed_by=context["run_id"])
        except StreamControlError as exc:
            raise AirflowFailException(str(exc)) from None
        print(outcome.summary())
        result: dict[str, Any] = outcome.as_dict()
        return result

    start_components()


start_stream_dag = start_stream()

if __name__ == "__main__":
    start_stream_dag.test()
