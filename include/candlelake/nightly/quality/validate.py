"""Validate one exchange's UTC day: the audit of write, audit, publish (candlelake.nightly.staging).

`validate_day` takes the day's trades (as the batch reads them), the staged candles and a fresh
recomputation of them, and runs the two suites of candlelake.nightly.quality.suites through the
file-backed context in `<reports_dir>/gx/` (candlelake.nightly.quality.context). Every result stays
in that context's result store, the Data Docs site `<reports_dir>/data_docs/` is rebuilt with the new
results (candlelake.nightly.quality.docs), and `quality_runs` gets one row per suite
(candlelake.nightly.quality.record). The load (candlelake.nightly.curated_load) publishes a stage only
when the latest 'candles' row passed with the stage's fingerprint.

Cost on a large day: the trades are read once and cached; the recomputation reuses that cache (Spark
matches the same read plan), and Great Expectations then runs its per-expectation Spark jobs on
local checkpoints of the two frames it validates (kept by the executors, with a plan of one step).
Expectations are first only counted; their unexpected rows are collected only for a suite that fails
(see `run_suite`). Identical copies of a trade are collapsed before the trades suite (a trade stored twice
is expected in the lake and deduplicated by the batch; two different rows under one id are not).

Concurrent validations (two exchanges at once) take turns on the context's files through a lock;
their Spark work before the lock runs in parallel.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from candlelake import coverage
from candlelake.nightly import staging
from candlelake.nightly.quality import suites
from candlelake.nightly.quality.context import locked, open_context, run_name_for, run_suite
from candlelake.nightly.quality.docs import build_docs, docs_index
from candlelake.nightly.quality.evidence import checked_candles, distinct_trades
from candlelake.nightly.quality.outcomes import DayOutcome, Failure, SuiteOutcome
from candlelake.nightly.quality.record import record_outcome
from candlelake.nightly.quality.results import suite_outcome

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from candlelake.config import Settings


@dataclass(frozen=True)
class _Prepared:
    """The day's frames ready for Great Expectations, and what was counted on the way."""

    trades: DataFrame  # the distinct trades, checkpointed
    trades_read: int
    distinct_rows: int
    candles: DataFrame | None  # the checked candles, checkpointed; None when nothing is staged
    candle_rows: int | None
    stale: tuple[Failure, ...]  # the staged files are not the ones the stage record names
    seconds: float


@dataclass(frozen=True)
class _Checked:
    """One suite's Great Expectations result, its Data Docs page and the seconds the suite took."""

    result: Any
    docs: str | None
    seconds: float


def validate_day(
    settings: Settings,
    exchange: str,
    day: date,
    run_id: str,
    *,
    trades: DataFrame,
    staged: DataFrame | None,
    recomputed: DataFrame,
    stage: staging.StageInfo | None,
    interval: str,
    covered: Mapping[tuple[str, str], Sequence[coverage.Span]],
    record: bool = True,
) -> DayOutcome:
    """Validate one exchange's UTC day; store the results, rebuild Data Docs, record `quality_runs`.

    `trades`: the day's trades as the batch reads them (candlelake.nightly.recompute.read_lake_trades);
    `staged`: the staged candles' files read with CURATED_SCHEMA (None when nothing is staged);
    `recomputed`: candlelake.nightly.recompute.recompute of the same day from the same lake, with the same
    `covered` (each market's merged coverage); `stage`: the stage record. The candles suite also fails
    when the files no longer match the stage's fingerprint.
    """
    started = time.monotonic()
    prepared = _prepare(trades, staged, recomputed, stage, interval, covered)
    reports = settings.reports_dir
    trades_checked, candles_checked, docs_seconds = _run_suites(
        reports, prepared, run_name_for(exchange, day, run_id), day
    )
    outcome = DayOutcome(
        exchange=exchange,
        trade_date=day,
        run_id=run_id,
        trades=_trades_outcome(trades_checked, prepared),
        candles=_candles_outcome(candles_checked, prepared, stage, staging.stage_dir(settings.lake_dir, exchange, day)),
        docs_index=str(docs_index(reports)),
        trades_read=prepared.trades_read,
        seconds=time.monotonic() - started,
        details={
            "identical_trade_copies": prepared.trades_read - prepared.distinct_rows,
            "prepare_seconds": round(prepared.seconds, 3),
            "docs_seconds": round(docs_seconds, 3),
        },
    )
    if record:
        record_outcome(settings, outcome)
    return outcome


def _prepare(
    trades: DataFrame,
    staged: DataFrame | None,
    recomputed: DataFrame,
    stage: staging.StageInfo | None,
    interval: str,
    covered: Mapping[tuple[str, str], Sequence[coverage.Span]],
) -> _Prepared:
    """The Spark work before the lock: count the trades, fingerprint the stage, build both frames."""
    started = time.monotonic()
    # The read first, cached: the recomputation below reads the same plan and takes it from the cache.
    trades = trades.persist()
    trades_read = trades.count()
    candles: DataFrame | None = None
    candle_rows: int | None = None
    stale: tuple[Failure, ...] = ()
    if staged is not None and stage is not None:
        candle_rows, printed = staging.fingerprint(staged)
        stale = _stale_files(printed, stage.fingerprint)
        # Checkpointed, not only cached: Great Expectations plans a few dozen queries on each frame,
        # and Spark would analyse the whole recomputation's plan for every one of them.
        candles = checked_candles(staged, recomputed, interval, covered).localCheckpoint(eager=True)
    distinct = distinct_trades(trades).localCheckpoint(eager=True)
    distinct_rows = distinct.count()
    trades.unpersist()
    return _Prepared(distinct, trades_read, distinct_rows, candles, candle_rows, stale, time.monotonic() - started)


def _stale_files(printed: str, recorded: str) -> tuple[Failure, ...]:
    """A failed check when the staged files' fingerprint is not the stage record's (files changed since)."""
    if printed == recorded:
        return ()
    return (
        Failure(
            expectation="staged_files_match_stage_record",
            check="the staged files are the ones staged (_stage.json)",
            columns=(),
            observed=f"files {printed}, _stage.json {recorded}",
            unexpected_count=None,
        ),
    )


def _run_suites(
    reports: Path, prepared: _Prepared, run_name: str, day: date
) -> tuple[_Checked, _Checked | None, float]:
    """Both suites, then the Data Docs rebuilt with their results, under the reports folder's lock.

    Returns the trades suite's result, the candles suite's (None when nothing is staged) and the seconds
    the Data Docs took."""
    with locked(reports):
        context = open_context(reports)
        runs = [
            run_suite(
                context,
                suites.trades_suite(),
                prepared.trades,
                index_columns=suites.TRADES_INDEX,
                run_name=run_name,
                parameters=suites.day_parameters(day),
            )
        ]
        if prepared.candles is not None:
            runs.append(
                run_suite(
                    context,
                    suites.candles_suite(),
                    prepared.candles,
                    index_columns=suites.CANDLES_INDEX,
                    run_name=run_name,
                )
            )
        built = time.monotonic()
        pages = build_docs(context, reports, [identifier for _, identifier, _ in runs])
        docs_seconds = time.monotonic() - built
    checked = [_Checked(result, page, seconds) for (result, _, seconds), page in zip(runs, pages, strict=True)]
    return checked[0], (checked[1] if len(checked) > 1 else None), docs_seconds


def _trades_outcome(checked: _Checked, prepared: _Prepared) -> SuiteOutcome:
    """The trades suite's outcome, on the distinct trades (no stage, so no fingerprint)."""
    return suite_outcome(
        suites.TRADES_SUITE, checked.result, prepared.distinct_rows, None, checked.docs, checked.seconds
    )


def _candles_outcome(
    checked: _Checked | None, prepared: _Prepared, stage: staging.StageInfo | None, stage_dir: Path
) -> SuiteOutcome:
    """The candles suite's outcome, failed outright when nothing is staged, and failed too when the files
    are not the ones staged."""
    if checked is None or stage is None:
        return _nothing_staged(stage_dir)
    outcome = suite_outcome(
        suites.CANDLES_SUITE, checked.result, prepared.candle_rows, stage.fingerprint, checked.docs, checked.seconds
    )
    return outcome.with_failures(prepared.stale)


def _nothing_staged(stage_dir: Path) -> SuiteOutcome:
    """A failed candles suite: the load must not publish a day whose candles were never staged."""
    return SuiteOutcome(
        suite=suites.CANDLES_SUITE,
        success=False,
        evaluated=1,
        failed=1,
        rows_validated=None,
        fingerprint=None,
        failures=(
            Failure(
                expectation="candles_are_staged",
                check="the day's candles are staged",
                columns=(),
                observed=f"nothing complete staged in {stage_dir}",
                unexpected_count=None,
            ),
        ),
    )
