"""
### stream_supervisor

Every two minutes: is the producer alive and sending, is the streaming job alive and keeping up? A
dead or stuck one is restarted, and every check is kept.

One task, `supervise_components`, checks both in turn (under a lock that `start_stream` and
`stop_stream` share, so a stop pressed during a restart waits and then wins):

- the producer: its process and its heartbeat and counters in `producer_health`; restarted when there
  is no process, or no heartbeat for `CANDLELAKE_SUPERVISOR_PRODUCER_MAX_AGE_S`;
- the streaming job: its process; per query the last batch time, input vs processing rate, rows
  dropped by the watermark, and how far its Kafka offsets trail the topic's end; restarted when there
  is no process, or no batch or idle report for `CANDLELAKE_SUPERVISOR_BATCH_MAX_AGE_S`. Falling behind
  (processing slower than input while trailing the topic) is reported, not restarted.

The streaming job is relaunched with the apache-spark provider's SparkSubmitHook (connection
`candlelake_spark`), detached from the task, under the same pid file and log as `candlelake up`
starts it; the producer with the source and symbols last given to `start_stream`. A component that
`stop_stream` stopped is left alone. Each check is a row in `supervisor_checks` (state, action, plain
words, metrics). A restart that does not bring the component back fails the task.

Like `platform_health`, this DAG is about the present: each run checks "now", never a data interval.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task


@dag(
    dag_id="stream_supervisor",
    schedule=timedelta(minutes=2),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # A restart of the streaming job takes up to a few minutes; a run must not pile onto the next.
    dagrun_timeout=timedelta(minutes=10),
    default_args={"retries": 1, "retry_delay": timedelta(seconds=20), "execution_timeout": timedelta(minutes=8)},
    tags=["candlelake", "health", "stream"],
    doc_md=__doc__,
)
def stream_supervisor() -> None:
    @task
    def supervise_components() -> list[dict[str, Any]]:
        """Observe, decide, restart and record, the producer first; fail (no retry) when a restart failed."""
        from airflow.sdk.exceptions import AirflowFailException

        from candlelake.config import load_settings
        from candlelake.platform.supervisor import summarize, supervise

        checks = supervise(load_settings(), get_current_context()["run_id"])
        for check in checks:
            print(f"{check.component}: {check.state}, {check.action}: {check.detail}")
        failed = [c for c in checks if c.action == "restart_failed"]
        if failed:
            raise AirflowFailException("; ".join(f"{c.component}: {c.detail}" for c in failed))
        print(summarize(checks))
        return [c.as_dict() for c in checks]

    supervise_components()


stream_supervisor_dag = stream_supervisor()

if __name__ == "__main__":
    stream_supervisor_dag.test()
