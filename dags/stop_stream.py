"""
### stop_stream

Stops the live path: the producer and the Spark streaming job, and records in `stream_control` that
they should stay stopped, so `stream_supervisor` does not start them again. `start_stream` undoes it.

Stopping is safe at any moment: the producer flushes what Kafka has not yet acknowledged, and the
streaming job resumes from its checkpoint at the next start without losing or repeating a trade.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task


@dag(
    dag_id="stop_stream",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=20), "execution_timeout": timedelta(minutes=5)},
    tags=["candlelake", "stream"],
    doc_md=__doc__,
)
def stop_stream() -> None:
    @task
    def stop_components() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from candlelake.config import load_settings
        from candlelake.platform.stream_control import StreamControlError, stop_stream

        context = get_current_context()
        try:
            outcome = stop_stream(load_settings(), changed_by=context["run_id"])
        except StreamControlError as exc:
            raise AirflowFailException(str(exc)) from None
        print(outcome.summary())
        result: dict[str, Any] = outcome.as_dict()
        return result

    stop_components()


stop_stream_dag = stop_stream()

if __name__ == "__main__":
    stop_stream_dag.test()
