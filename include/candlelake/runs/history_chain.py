"""History into curated candles: what `candlelake replay` does after a file older than the live stream.

The streaming job's candles close on an event-time watermark: a trade older than it (a file from a past
day) is landed in the lake but builds no live candle. Its candles come from the nightly chain, which this
module runs for the replayed days right away, through Airflow, and follows to the end:

    wait until the lake query has read every replayed record (its Kafka end offsets)
    -> lake_compaction (one run per stretch of consecutive days, the form the backfill DAG uses)
    -> data_quality -> load_curated_candles -> reconcile_klines (started by their assets)

Each downstream run is found by the asset event that started it, whose `extra` names the run that sent
it (candlelake.nightly.chain.event_extra), so another chain running meanwhile is never mistaken for this
one. The chain is idempotent like every DAG of it: replaying the same file again and running it again
changes no candle. The same is done from the Airflow UI with the `backfill` DAG (source files) or a
`lake_compaction` run with the days in its form.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from candlelake.config import Settings
from candlelake.util import first_line, interval_micros

DOWNSTREAM = ("data_quality", "load_curated_candles", "reconcile_klines")
POLL_S = 3.0
PROGRESS_EVERY_S = 15.0


class ChainError(RuntimeError):
    """The chain could not run or did not finish; the message says what to do."""


@dataclass(frozen=True)
class DayCandles:
    """The curated candles of one market and UTC day, by what coverage made of them."""

    symbol: str
    trade_date: date
    candles: int
    complete: int
    partial: int
    quiet: int

    def text(self) -> str:
        return (
            f"  {self.symbol} {self.trade_date.isoformat()}: {self.candles} curated candles "
            f"({self.complete} complete, {self.quiet} of them quiet; {self.partial} partial)"
        )


@dataclass
class ChainOutcome:
    runs: dict[str, tuple[str, str]] = field(default_factory=dict)  # dag_id -> (run_id, state)
    candles: list[DayCandles] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        # reconcile_klines may end skipped (no kline source offline): that is no failure of the chain.
        return all(state in ("success", "skipped") for _, state in self.runs.values())


# --- the stream's horizon ---------------------------------------------------------------------------

_WATERMARK_SQL = """
    SELECT max(watermark) FROM stream_progress
     WHERE query_name = %s AND recorded_at > now() - interval '1 day'
"""


def stream_horizon(settings: Settings) -> datetime:
    """The time before which the live stream builds no candle: its candles query's latest watermark, or,
    when it has none on record (not running), now less the watermark delay it would start with."""
    import psycopg2

    from candlelake.stream.progress import CANDLES_QUERY

    fallback = datetime.now(UTC) - timedelta(microseconds=interval_micros(settings.watermark_delay))
    try:
        conn = psycopg2.connect(settings.pg_dsn(), connect_timeout=5, application_name="candlelake-replay")
    except psycopg2.OperationalError:
        return fallback
    try:
        with conn.cursor() as cur:
            cur.execute(_WATERMARK_SQL, (CANDLES_QUERY,))
            row = cur.fetchone()
    finally:
        conn.close()
    return row[0] if row and row[0] is not None else fallback


def days_between(first_us: int, last_us: int) -> list[date]:
    """Every UTC day from the one of `first_us` to the one of `last_us`."""
    first = datetime.fromtimestamp(first_us / 1e6, UTC).date()
    last = datetime.fromtimestamp(last_us / 1e6, UTC).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# --- the chain --------------------------------------------------------------------------------------


def run_chain(
    settings: Settings,
    exchange: str,
    symbols: Sequence[str],
    days: Sequence[date],
    offsets: dict[int, int],
    say: Callable[[str], None],
    timeout_s: float = 3600.0,
) -> ChainOutcome:
    """Run the nightly chain for `days` of `exchange` once the lake holds `offsets`; follow it; count candles."""
    from candlelake.nightly.chain import compaction_runs
    from candlelake.platform.airflow_client import AirflowClient

    deadline = time.monotonic() + timeout_s
    outcome = ChainOutcome()
    wait_for_lake(settings, offsets, say, deadline)
    with AirflowClient.from_settings(settings) as api:
        try:
            api.health()
        except Exception as exc:
            raise ChainError(
                f"Airflow is not reachable at {settings.airflow_url} ({first_line(exc)}): start it with "
                "`candlelake up`, or run `lake_compaction` for these days from its form later"
            ) from None
        for dag_id in ("lake_compaction", *DOWNSTREAM):
            dag = api.get_dag(dag_id)
            if dag is None:
                raise ChainError(
                    f"Airflow does not list the {dag_id} DAG: is candlelake's dags/ folder its DAG folder?"
                )
            if dag.is_paused:
                raise ChainError(f"the {dag_id} DAG is paused: unpause it in the Airflow UI, then replay again")
        for conf in compaction_runs(exchange, days):
            span = f"{conf['trade_date']} .. {conf['through_date']}"
            run = api.trigger_dag("lake_compaction", conf=conf, note=f"candlelake replay: {exchange} {span}")
            say(f"chain: lake_compaction {run.run_id} triggered for {exchange} {span}")
            upstream = follow(api, "lake_compaction", run.run_id, say, deadline)
            outcome.runs["lake_compaction"] = (run.run_id, upstream)
            if upstream != "success":
                return outcome
            parent = run.run_id
            for dag_id in DOWNSTREAM:
                child = find_triggered(api, dag_id, parent, say, deadline)
                state = follow(api, dag_id, child, say, deadline)
                outcome.runs[dag_id] = (child, state)
                if state not in ("success", "skipped") and dag_id != "reconcile_klines":
                    return outcome
                parent = child
    outcome.candles = curated_counts(settings, exchange, symbols, days)
    return outcome


def wait_for_lake(settings: Settings, offsets: dict[int, int], say: Callable[[str], None], deadline: float) -> None:
    """Until the streaming job's lake query has read the topic up to `offsets`; ChainError at the deadline."""
    from candlelake.nightly.chain import lake_offsets_reached

    wanted = {str(p): o for p, o in offsets.items()}
    said = ""
    next_say = 0.0
    while True:
        done, detail = lake_offsets_reached(settings, {p: int(o) for p, o in wanted.items()})
        if done:
            say(f"chain: {detail}")
            return
        if time.monotonic() > deadline:
            raise ChainError(f"the lake did not take the replayed trades in time: {detail} (is the stream running?)")
        if detail != said or time.monotonic() >= next_say:
            say(f"chain: waiting for the lake: {detail}")
            said, next_say = detail, time.monotonic() + PROGRESS_EVERY_S
        time.sleep(POLL_S)


def follow(api: Any, dag_id: str, run_id: str, say: Callable[[str], None], deadline: float) -> str:
    """Poll a run until it finishes, saying each task's new state; its final state."""
    seen: dict[str, str | None] = {}
    while True:
        run = api.get_dag_run(dag_id, run_id)
        for ti in api.task_instances(dag_id, run_id):
            if seen.get(ti.task_id, "") != ti.state and ti.state not in (None, "scheduled", "queued"):
                say(f"chain: {dag_id}.{ti.task_id} {ti.state}")
            seen[ti.task_id] = ti.state
        if run.finished:
            say(f"chain: {dag_id} {run.state}")
            return str(run.state)
        if time.monotonic() > deadline:
            raise ChainError(f"{dag_id} run {run_id} still {run.state} at the deadline: follow it in the Airflow UI")
        time.sleep(POLL_S)


def find_triggered(api: Any, dag_id: str, parent_run_id: str, say: Callable[[str], None], deadline: float) -> str:
    """The run of `dag_id` started by an asset event that the run `parent_run_id` emitted."""
    say(f"chain: waiting for {dag_id} (started by {parent_run_id}'s asset)")
    checked: set[str] = set()
    while True:
        for run in reversed(api.dag_runs(dag_id, run_type="asset_triggered")):
            if run.run_id in checked and run.finished:
                continue
            events = api.upstream_asset_events(dag_id, run.run_id)
            if any((e.get("extra") or {}).get("run_id") == parent_run_id for e in events):
                return run.run_id
            checked.add(run.run_id)
        if time.monotonic() > deadline:
            raise ChainError(f"no {dag_id} run started after {parent_run_id}: see the Airflow UI")
        time.sleep(POLL_S)


_COUNTS_SQL = """
    SELECT symbol, (open_time AT TIME ZONE 'UTC')::date AS day, count(*),
           count(*) FILTER (WHERE coverage = 'complete'), count(*) FILTER (WHERE coverage = 'partial'),
           count(*) FILTER (WHERE trades = 0)
      FROM candles
     WHERE exchange = %s AND symbol = ANY(%s) AND state = 'curated' AND open_time >= %s AND open_time < %s
     GROUP BY 1, 2
     ORDER BY 1, 2
"""


def curated_counts(settings: Settings, exchange: str, symbols: Sequence[str], days: Sequence[date]) -> list[DayCandles]:
    """The curated candles of `symbols` on `days`, per market and day (a day without any is listed as 0)."""
    import psycopg2

    start = datetime.combine(min(days), datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(max(days), datetime.min.time(), tzinfo=UTC) + timedelta(days=1)
    conn = psycopg2.connect(settings.pg_reader_dsn, connect_timeout=5, application_name="candlelake-replay")
    try:
        with conn.cursor() as cur:
            cur.execute(_COUNTS_SQL, (exchange, list(symbols), start, end))
            found = {(r[0], r[1]): DayCandles(r[0], r[1], *map(int, r[2:])) for r in cur.fetchall()}
    finally:
        conn.close()
    return [found.get((s, d), DayCandles(s, d, 0, 0, 0, 0)) for s in sorted(symbols) for d in days]
