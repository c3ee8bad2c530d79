"""
### platform_health

Checks every five minutes that the platform's moving parts are alive, and keeps the answers.

| task | healthy when |
|---|---|
| `check_postgres` | the platform database answers a query |
| `check_kafka` | the broker answers and the `trades` topic exists |
| `check_producer` | a producer wrote its heartbeat to `producer_health` within `producer_max_age_s` |
| `check_stream` | every streaming query wrote to `stream_progress` within `stream_max_age_s` |

`record_checks` then writes one `health_checks` row per component for this run and **fails the run if
any check failed**, naming what is down.

The checks never fail themselves (a part that is down is a result, not an error), so every result is
recorded; `record_checks` runs even if a check task crashed and records that as unhealthy. A failed run
is not retried: retrying cannot start a stopped producer. Start what is down with `candlelake up`.

Unlike the data DAGs, this one is about the present, not a data interval: each run checks "now".
Trigger it by hand (with other freshness limits in the form) to check the platform on demand.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task


@dag(
    dag_id="platform_health",
    schedule=timedelta(minutes=5),
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # A run that outlives the next one's start is stuck; every check has short timeouts.
    dagrun_timeout=timedelta(minutes=4),
    default_args={"retries": 1, "retry_delay": timedelta(seconds=15), "execution_timeout": timedelta(minutes=2)},
    tags=["candlelake", "health"],
    doc_md=__doc__,
    params={
        "producer_max_age_s": Param(
            60, type="integer", minimum=1, description="A producer heartbeat older than this many seconds means down."
        ),
        "stream_max_age_s": Param(
            180, type="integer", minimum=1, description="Streaming progress older than this many seconds means down."
        ),
    },
)
def platform_health() -> None:
    @task
    def check_postgres() -> dict[str, Any]:
        from candlelake.config import load_settings
        from candlelake.platform.health import check_postgres

        return check_postgres(load_settings()).as_dict()

    @task
    def check_kafka() -> dict[str, Any]:
        from candlelake.config import load_settings
        from candlelake.platform.health import check_kafka

        return check_kafka(load_settings()).as_dict()

    @task
    def check_producer() -> dict[str, Any]:
        from candlelake.config import load_settings
        from candlelake.platform.health import check_producer

        max_age = float(get_current_context()["params"]["producer_max_age_s"])
        return check_producer(load_settings(), max_age).as_dict()

    @task
    def check_stream() -> dict[str, Any]:
        from candlelake.config import load_settings
        from candlelake.platform.health import check_stream

        max_age = float(get_current_context()["params"]["stream_max_age_s"])
        return check_stream(load_settings(), max_age).as_dict()

    # all_done: record what we know even when a check task itself crashed (its result is then None).
    @task(trigger_rule="all_done")
    def record_checks(
        postgres: dict[str, Any] | None,
        kafka: dict[str, Any] | None,
        producer: dict[str, Any] | None,
        stream: dict[str, Any] | None,
    ) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from candlelake.config import load_settings
        from candlelake.platform import health

        results = {"postgres": postgres, "kafka": kafka, "producer": producer, "stream": stream}
        checks = [
            health.CheckResult.from_dict(result)
            if result
            else health.CheckResult(name, False, "the check task itself failed; see its log")
            for name, result in results.items()
        ]
        run_id = get_current_context()["run_id"]
        health.record_checks(load_settings(), run_id, checks)
        summary = health.summarize(checks)
        if not all(c.healthy for c in checks):
            # AirflowFailException: fail without the retry, which could not bring a part back anyway.
            raise AirflowFailException(summary)
        return {"run_id": run_id, "summary": summary}

    record_checks(postgres=check_postgres(), kafka=check_kafka(), producer=check_producer(), stream=check_stream())


platform_health_dag = platform_health()

if __name__ == "__main__":
    platform_health_dag.test()
