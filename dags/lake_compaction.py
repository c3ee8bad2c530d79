"""
### lake_compaction

Every night (at `CANDLELAKE_NIGHTLY_AT`, 00:00 UTC by default), rewrites yesterday's small Parquet files
into the curated area, one exchange at a time.

The streaming job lands a file per partition per micro-batch: thousands of small files a day. This DAG
compacts one UTC day (the run's data interval, or `trade_date` in the form) into a few files of about
`CANDLELAKE_COMPACTION_TARGET_MB`, sorted by symbol and trade time, with duplicate trade ids removed.

- `wait_for_lake`: waits until the streaming job's lake query has reported after the day's end plus
  `settle_minutes`, so late trades are in
- `plan_compaction`: the days (`trade_date` .. `through_date` to catch up several) and the exchanges
  with trades on them (or the form's)
- `compact_partition`: `spark-submit jobs/compact_lake.py`, one mapped task per exchange, all of the
  run's days in one job
- `record_compaction`: logs files, bytes and rows before and after; emits the `curated_trades` asset for
  `data_quality`
- `expire_bronze`: deletes the stream's files of days older than `CANDLELAKE_BRONZE_RETENTION_DAYS`
  whose curated manifest covers every batch

Compaction reads only committed data (the lake query's commit log and its batch records, never a file
listing), never touches the streaming job's checkpoint, verifies row counts and a checksum before it
switches the day's manifest, and may be killed at any moment and rerun: a rerun with nothing new is
`skipped`. Every attempt is recorded in the table `lake_compactions`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, CronDataIntervalTimetable, Param, PokeReturnValue, dag, get_current_context, task

from candlelake.config import read_nightly_at
from candlelake.nightly.chain import CURATED_TRADES, SPARK_CONN_ID, daily_cron, spark_env

JOBS = Path(__file__).resolve().parents[1] / "jobs"
# Airflow fixes a schedule when it parses the file, so CANDLELAKE_NIGHTLY_AT (default 00:00 UTC; "off": by
# hand only) is read here, and only it: no other setting, no database. The tasks read the rest.
NIGHTLY_CRON = daily_cron(read_nightly_at())


@dag(
    dag_id="lake_compaction",
    # The interval [day 00:00, next day 00:00) UTC by default: each run compacts the day its data
    # interval starts on.
    schedule=CronDataIntervalTimetable(NIGHTLY_CRON, timezone="UTC") if NIGHTLY_CRON else None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["candlelake", "lake", "nightly"],
    doc_md=__doc__,
    params={
        "trade_date": Param(
            "",
            type="string",
            description="UTC day to compact, YYYY-MM-DD. Blank: the data interval's day (yesterday, nightly).",
        ),
        "through_date": Param(
            "", type="string", description="Optional last day (inclusive) to compact several days in one run."
        ),
        "exchanges": Param(
            [], type="array", description="Exchanges to compact. Empty: every exchange with trades on those days."
        ),
        "wait_for_lake": Param(
            True, type="boolean", description="Wait until the streaming job has landed the last day's late trades."
        ),
        "settle_minutes": Param(
            15, type="integer", minimum=0, description="Minutes after the last day's end before its lake is complete."
        ),
    },
)
def lake_compaction() -> None:
    @task.sensor(poke_interval=60, timeout=3 * 3600, mode="reschedule")
    def wait_for_lake() -> PokeReturnValue:
        from candlelake.config import load_settings
        from candlelake.nightly.chain import lake_settled, run_days
        from candlelake.util import day_bounds

        context = get_current_context()
        params = context["params"]
        if not params["wait_for_lake"]:
            return PokeReturnValue(is_done=True)
        last = run_days(params["trade_date"], params["through_date"], context.get("data_interval_start"))[-1]
        _, end = day_bounds(last)
        done, detail = lake_settled(load_settings(), end + timedelta(minutes=int(params["settle_minutes"])))
        print(detail)
        return PokeReturnValue(is_done=done)

    @task
    def plan_compaction() -> list[list[str]]:
        """One spark-submit per exchange, for every day of the run (one JVM start per exchange, not per day)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from candlelake.config import load_settings
        from candlelake.nightly.chain import bronze_exchanges, run_days

        context = get_current_context()
        params = context["params"]
        days = run_days(params["trade_date"], params["through_date"], context.get("data_interval_start"))
        wanted = [str(e).strip() for e in params["exchanges"] if str(e).strip()]
        settings = load_settings()
        exchanges = wanted or sorted({e for day in days for e in bronze_exchanges(settings, day)})
        if not exchanges:
            raise AirflowSkipException(f"no exchange landed trades on {', '.join(map(str, days))}: nothing to compact")
        print(f"compacting {', '.join(map(str, days))} for {', '.join(exchanges)}")
        dates = [arg for day in days for arg in ("--date", day.isoformat())]
        return [["--exchange", e, *dates, "--run-id", context["run_id"]] for e in exchanges]

    compact_partition = SparkSubmitOperator.partial(
        task_id="compact_partition",
        application=str(JOBS / "compact_lake.py"),
        conn_id=SPARK_CONN_ID,
        name="candlelake-compaction",
        driver_memory="2g",
        env_vars=spark_env(),
        execution_timeout=timedelta(hours=2),
    )

    @task(outlets=[Asset(CURATED_TRADES)])
    def record_compaction() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from candlelake.config import load_settings
        from candlelake.nightly.chain import DayKey, compaction_report, event_extra, fmt_bytes

        context = get_current_context()
        run_id = context["run_id"]
        rows = compaction_report(load_settings(), run_id)
        for r in rows:
            print(
                f"{r['exchange']} {r['trade_date']}: {r['status']}; files {r['files_before']} -> {r['files_after']}, "
                f"{fmt_bytes(r['bytes_before'])} -> {fmt_bytes(r['bytes_after'])}, rows {r['rows_before']} -> "
                f"{r['rows_after']} ({r['duplicates_dropped'] or 0} duplicates dropped)"
                + (f"; {r['note']}" if r["note"] else "")
            )
        bad = [r for r in rows if r["status"] not in ("switched", "skipped")]
        if bad or not rows:
            raise AirflowFailException(
                "compaction did not finish for "
                + (", ".join(f"{r['exchange']} {r['trade_date']}" for r in bad) or "any day")
            )
        days = [DayKey(r["exchange"], r["trade_date"]) for r in rows]
        context["outlet_events"][Asset(CURATED_TRADES)].extra = event_extra(days, run_id)
        return {"days": [str(d) for d in days]}

    @task
    def expire_bronze() -> list[str]:
        """Delete the stream's small files of days compacted more than CANDLELAKE_BRONZE_RETENTION_DAYS ago."""
        from datetime import timedelta

        from candlelake.config import load_settings
        from candlelake.nightly.chain import run_days
        from candlelake.nightly.compaction import expire_bronze as expire

        context = get_current_context()
        params = context["params"]
        # Keyed by the run's days, not the clock: retention counts from the day after the last one.
        today = run_days(params["trade_date"], params["through_date"], context.get("data_interval_start"))[-1]
        done = expire(load_settings(), today + timedelta(days=1))
        for e in done:
            print(f"{e.exchange} {e.trade_date}: {e.action} ({e.reason}; {e.files} files, {e.bytes} bytes)")
        return [f"{e.exchange} {e.trade_date} {e.action}" for e in done]

    plan = plan_compaction()
    wait_for_lake() >> plan
    compact_partition.expand(application_args=plan) >> record_compaction() >> expire_bronze()


lake_compaction_dag = lake_compaction()

if __name__ == "__main__":
    lake_compaction_dag.test()
