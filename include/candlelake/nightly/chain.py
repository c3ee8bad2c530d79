"""What the Airflow DAGs share: their assets, the days they work on, and the reports they log.

The DAG files in `dags/` are wiring; anything they decide (which exchange's day a run covers, whether the
lake has settled, what a run did) is a function here, importable without Airflow or Spark and tested on
its own. Everything is keyed by one exchange's UTC day (`DayKey`), the unit the nightly chain works in:

    lake_compaction --curated_trades--> data_quality --validated_candles--> load_curated_candles
        --curated_candles--> reconcile_klines

Each asset event carries the days it covers in its `extra` (`{"days": [{"exchange": ..., "trade_date":
...}]}`), so the next DAG works on exactly those days, however many events one of its runs collects.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg2

from candlelake.config import Settings

# Asset names (the DAGs build `Asset(name)` from these; the URI defaults to the name).
CURATED_TRADES = "candlelake.curated_trades"
VALIDATED_CANDLES = "candlelake.validated_candles"
CURATED_CANDLES = "candlelake.curated_candles"

# The Airflow connection the Spark tasks submit through (AIRFLOW_CONN_CANDLELAKE_SPARK, set by the platform).
SPARK_CONN_ID = "candlelake_spark"

LAKE_QUERY = "lake_trades"
# One run compacts, validates and loads at most this many days (a month): a bigger catch-up is split.
MAX_RUN_DAYS = 31


class OrchestrationError(ValueError):
    """A parameter or state a person must fix; the message says what and how."""


@dataclass(frozen=True, order=True)
class DayKey:
    exchange: str
    trade_date: date

    def as_dict(self) -> dict[str, str]:
        return {"exchange": self.exchange, "trade_date": self.trade_date.isoformat()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DayKey:
        return cls(str(data["exchange"]), parse_day(str(data["trade_date"])))

    def __str__(self) -> str:
        return f"{self.exchange} {self.trade_date.isoformat()}"


def parse_day(text: str) -> date:
    """A UTC day from 'YYYY-MM-DD' (a date-time is cut to its day), with a message a person understands."""
    value = text.strip()
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise OrchestrationError(f"trade_date {text!r} is not a day: write it as YYYY-MM-DD, e.g. 2026-11-30") from None


def resolve_day(param: str | None, interval_start: datetime | None) -> date:
    """The day a run works on: the form's `trade_date` when given, else the run's data interval's day."""
    if param:
        return parse_day(param)
    if interval_start is None:
        raise OrchestrationError("this run has no data interval: give trade_date (YYYY-MM-DD) in the form")
    return interval_start.astimezone(UTC).date()


def run_days(trade_date: str | None, through_date: str | None, interval_start: datetime | None) -> list[date]:
    """Every day of a compaction run: `trade_date` (or the data interval's day) through `through_date`."""
    first = resolve_day(trade_date, interval_start)
    last = parse_day(through_date) if through_date else first
    if last < first:
        raise OrchestrationError(f"through_date {last.isoformat()} is before trade_date {first.isoformat()}")
    if (last - first).days >= MAX_RUN_DAYS:
        raise OrchestrationError(f"{(last - first).days + 1} days in one run: at most {MAX_RUN_DAYS}; split the range")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def compaction_runs(exchange: str, days: Iterable[date | str]) -> list[dict[str, Any]]:
    """The `lake_compaction` runs (their conf) that recompute `days` of one exchange after a backfill.

    One run per stretch of consecutive days, at most MAX_RUN_DAYS each: a run is one Spark job per
    step (compaction, recompute, validation) for all its days, where a run per day paid every JVM start
    once per day. Days between two stretches are not touched (nothing was backfilled there).
    """
    ordered = sorted({d if isinstance(d, date) else parse_day(d) for d in days})
    stretches: list[list[date]] = []
    for day in ordered:
        current = stretches[-1] if stretches else None
        if current and day - current[-1] == timedelta(days=1) and len(current) < MAX_RUN_DAYS:
            current.append(day)
        else:
            stretches.append([day])
    return [
        {
            "trade_date": stretch[0].isoformat(),
            "through_date": stretch[-1].isoformat(),
            "exchanges": [exchange],
            # The backfill has waited until the lake read every trade it sent; waiting for the end of
            # the last day as well would hold a backfill of today until midnight.
            "wait_for_lake": False,
        }
        for stretch in stretches
    ]


def event_extra(days: Iterable[DayKey], run_id: str) -> dict[str, Any]:
    """The `extra` of an asset event that covers `days`."""
    return {"days": [d.as_dict() for d in sorted(set(days))], "run_id": run_id}


def days_from_events(extras: Iterable[Mapping[str, Any] | None]) -> list[DayKey]:
    """Every day named by a run's triggering asset events, once each, in order."""
    days: set[DayKey] = set()
    for extra in extras:
        for item in (extra or {}).get("days", []):
            days.add(DayKey.from_dict(item))
    return sorted(days)


def days_from_params(exchange: str, trade_date: str, known: Sequence[str]) -> list[DayKey]:
    """The days of a manual run: one exchange (or every `known` one when blank) on `trade_date`."""
    day = parse_day(trade_date)
    exchanges = [exchange.strip()] if exchange.strip() else list(known)
    if not exchanges:
        raise OrchestrationError(f"nothing to do for {day.isoformat()}: no exchange has compacted trades that day")
    return [DayKey(e, day) for e in exchanges]


def days_for_run(settings: Settings, params: Mapping[str, Any], events: Any) -> list[DayKey]:
    """The days an asset-triggered DAG works on: the form's (`exchange`, `trade_date`) on a manual run,
    else every day named by the run's triggering asset events (`context["triggering_asset_events"]`)."""
    if params.get("trade_date"):
        known = curated_exchanges(settings, parse_day(params["trade_date"]))
        return days_from_params(params.get("exchange", ""), params["trade_date"], known)
    extras = [e.extra for asset in events for e in events[asset]] if events else []
    return days_from_events(extras)


def curated_exchanges(settings: Settings, day: date) -> list[str]:
    """Exchanges with a curated (compacted) partition for `day`."""
    root = settings.curated_dir / "trades"
    suffix = f"trade_date={day.isoformat()}"
    if not root.is_dir():
        return []
    return sorted(
        p.name.removeprefix("exchange=") for p in root.glob("exchange=*") if (p / suffix / "_manifest.json").is_file()
    )


def bronze_exchanges(settings: Settings, day: date) -> list[str]:
    """Exchanges the streaming job landed trades for on `day` (partition folders, not data files)."""
    root = settings.lake_dir / "trades"
    suffix = f"trade_date={day.isoformat()}"
    if not root.is_dir():
        return []
    return sorted(p.name.removeprefix("exchange=") for p in root.glob("exchange=*") if (p / suffix).is_dir())


def nightly_cron(settings: Settings) -> str | None:
    """The cron expression of the nightly `lake_compaction` run (CANDLELAKE_NIGHTLY_AT), None when off.

    Its data interval runs from that time one day to the same time the next, so the interval's start
    is always on the day before the run: the day the run compacts.
    """
    return daily_cron(settings.nightly_at)


def daily_cron(at: str | None) -> str | None:
    """The cron expression of a run every day at `at` ("HH:MM", UTC); None (off) stays None."""
    if at is None:
        return None
    hour, minute = at.split(":")
    return f"{int(minute)} {int(hour)} * * *"


def spark_env() -> dict[str, str]:
    """Environment for spark-submit: driver and workers run this interpreter, with candlelake installed."""
    return {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


# --- state read from PostgreSQL ---------------------------------------------------------------------


def _query(settings: Settings, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(settings.pg_dsn(), connect_timeout=10, application_name="candlelake-dags")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def lake_settled(settings: Settings, moment: datetime) -> tuple[bool, str]:
    """Has the lake query caught up with everything Kafka held at `moment`?

    True once the streaming job's lake query reported (a batch or an idle poll) after `moment`: it then
    had asked Kafka for new offsets after that time, so every trade sent before it is in the lake.
    """
    rows = _query(
        settings,
        "SELECT max(recorded_at) FROM stream_progress WHERE query_name = %s",
        (LAKE_QUERY,),
    )
    latest = rows[0][0] if rows else None
    if latest is None:
        return False, "the streaming job's lake query has never reported (is the stream running?)"
    if latest >= moment:
        return True, f"the lake query reported at {latest.isoformat()}, after {moment.isoformat()}"
    return False, f"the lake query last reported at {latest.isoformat()}; waiting for one after {moment.isoformat()}"


def lake_offsets_reached(settings: Settings, wanted: Mapping[str, int]) -> tuple[bool, str]:
    """Has the lake query read the `trades` topic up to `wanted` ({partition: end offset})?"""
    rows = _query(
        settings,
        "SELECT end_offsets FROM stream_progress WHERE query_name = %s AND end_offsets IS NOT NULL "
        "ORDER BY recorded_at DESC LIMIT 1",
        (LAKE_QUERY,),
    )
    if not rows:
        return False, "the lake query has recorded no Kafka offsets yet"
    read = rows[0][0] or {}
    offsets = read.get(settings.trades_topic, {}) if isinstance(read, Mapping) else {}
    behind = {p: n - int(offsets.get(str(p), -1)) for p, n in wanted.items() if int(offsets.get(str(p), -1)) < n}
    if behind:
        left = sum(behind.values())
        return False, f"the lake query is {left} records behind the backfill's last offsets"
    return True, "the lake query has read every backfilled record"


def compaction_report(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    """What each compaction of this run did, newest attempt per day."""
    rows = _query(
        settings,
        "SELECT DISTINCT ON (exchange, trade_date) exchange, trade_date, status, files_before, bytes_before, "
        "rows_before, duplicates_dropped, files_after, bytes_after, rows_after, seconds, note "
        "FROM lake_compactions WHERE run_id = %s ORDER BY exchange, trade_date, started_at DESC",
        (run_id,),
    )
    keys = [
        "exchange",
        "trade_date",
        "status",
        "files_before",
        "bytes_before",
        "rows_before",
        "duplicates_dropped",
        "files_after",
        "bytes_after",
        "rows_after",
        "seconds",
        "note",
    ]
    return [dict(zip(keys, row, strict=True)) for row in rows]


def failed_validations(settings: Settings, key: DayKey, run_id: str) -> list[dict[str, Any]]:
    """The failed suites of this run for one day, each with its failures (for the task's error message)."""
    rows = _query(
        settings,
        "SELECT suite, failures, docs_path FROM quality_runs WHERE run_id = %s AND exchange = %s "
        "AND trade_date = %s AND NOT success ORDER BY validated_at",
        (run_id, key.exchange, key.trade_date),
    )
    return [{"suite": suite, "failures": failures, "docs_path": docs} for suite, failures, docs in rows]


def describe_failures(failed: Sequence[Mapping[str, Any]]) -> str:
    """Failed suites in plain words, one expectation per line."""
    lines = []
    for suite in failed:
        lines.append(f"suite {suite['suite']} failed (Data Docs: {suite.get('docs_path') or 'not built'}):")
        for failure in suite.get("failures") or []:
            lines.append("  - " + json.dumps(failure, default=str)[:400])
    return "\n".join(lines)


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
