"""Run the quality suites on Spark DataFrames, keep the results, publish Data Docs, record `quality_runs`.

The audit of write, audit, publish (candlelake.nightly.staging): `validate_day` takes one exchange's UTC day of
trades (as the batch reads them), the staged candles and a fresh recomputation of them, and runs the
two suites of `candlelake.nightly.quality.suites` through a file-backed Great Expectations context in
`<reports_dir>/gx/`. Every validation result stays in that context's result store, the Data Docs site
`<reports_dir>/data_docs/` (index.html) is rebuilt with the new results, and `quality_runs` gets one
row per suite. The load (candlelake.nightly.curated_load) publishes a stage only when the latest 'candles'
row passed with the stage's fingerprint.

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

import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from candlelake import coverage
from candlelake.nightly import staging
from candlelake.nightly.quality import suites

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from candlelake.config import Settings

log = logging.getLogger(__name__)

DOCS_DIR = "data_docs"
DOCS_SITE = "candlelake"
DATASOURCE = "candlelake"
BATCH_DEFINITION = "day"
LOCK_FILE = ".gx.lock"
# Unexpected rows Great Expectations keeps per expectation in a result, and how many of them go into
# `quality_runs.failures` (the result and its Data Docs page keep them all).
PARTIAL_UNEXPECTED = 20
SAMPLE_ROWS = 5

_INSERT_SQL = """
INSERT INTO quality_runs (run_id, exchange, trade_date, suite, success, evaluated, failed, rows_validated,
                          fingerprint, failures, docs_path)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


# --- outcomes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One failed expectation, in words a person reads (also the JSON of `quality_runs.failures`)."""

    expectation: str  # the Great Expectations type, e.g. expect_column_pair_values_a_to_be_greater_than_b
    check: str  # the rule in plain words, e.g. "close <= high"
    columns: tuple[str, ...]
    observed: str  # e.g. "2 of 1440 rows"
    unexpected_count: int | None
    sample: tuple[dict[str, Any], ...] = ()  # a few unexpected rows: their key and the offending values

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "columns": list(self.columns), "sample": list(self.sample)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Failure:
        """The inverse of `as_dict` (a `quality_runs.failures` item); unknown keys are ignored."""
        return cls(
            expectation=str(data.get("expectation", "")),
            check=str(data.get("check", data.get("expectation", "?"))),
            columns=tuple(data.get("columns") or ()),
            observed=str(data.get("observed", "")),
            unexpected_count=data.get("unexpected_count"),
            sample=tuple(data.get("sample") or ()),
        )

    def sentence(self) -> str:
        """E.g. `close <= high: 1 of 1440 rows; e.g. symbol=BTCUSDT open_time=... high=1 close=2`."""
        examples = "; ".join(" ".join(f"{k}={v}" for k, v in row.items()) for row in self.sample)
        return f"{self.check}: {self.observed}" + (f"; e.g. {examples}" if examples else "")


@dataclass(frozen=True)
class SuiteOutcome:
    suite: str
    success: bool
    evaluated: int
    failed: int
    rows_validated: int | None
    fingerprint: str | None
    failures: tuple[Failure, ...] = ()
    docs_path: str | None = None  # the result's Data Docs page (absolute path), when built
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "failures": [f.as_dict() for f in self.failures],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class DayOutcome:
    exchange: str
    trade_date: date
    run_id: str
    trades: SuiteOutcome
    candles: SuiteOutcome
    docs_index: str
    trades_read: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.trades.success and self.candles.success

    @property
    def suites(self) -> tuple[SuiteOutcome, SuiteOutcome]:
        return (self.trades, self.candles)

    def failure_lines(self) -> list[str]:
        """Every failed expectation, one line each, prefixed by its suite."""
        return [f"{s.suite}: {f.sentence()}" for s in self.suites for f in s.failures]

    def as_dict(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "trade_date": self.trade_date.isoformat(),
            "run_id": self.run_id,
            "success": self.success,
            "trades_read": self.trades_read,
            "seconds": round(self.seconds, 3),
            "data_docs": self.docs_index,
            **self.details,
            "suites": {s.suite: s.as_dict() for s in self.suites},
        }


# --- the frames validated -------------------------------------------------------------------------


def distinct_trades(trades: DataFrame) -> DataFrame:
    """The fields that make a trade, identical copies collapsed (copies differ only in ingest metadata)."""
    return trades.select(*suites.TRADE_REQUIRED).distinct()


def _iso(column: Any) -> Any:
    from pyspark.sql import functions as F

    return F.date_format(column, "yyyy-MM-dd'T'HH:mm:ss'Z'")


def checked_candles(
    staged: DataFrame,
    recomputed: DataFrame,
    interval: str,
    covered: Mapping[tuple[str, str], Sequence[coverage.Span]],
) -> DataFrame:
    """Staged candles plus the candles suite's evidence columns (see candlelake.nightly.quality.suites).

    `gap_before` compares each staged candle with its market's previous one: more than `interval` apart
    is a gap when the first missing interval had to be a quiet candle, that is when it lies inside a
    covered stretch of `covered` (each market's merged coverage) that the previous candle belongs to
    (coverage.complete_buckets' "earliest carrier"). Uncovered time has no candles, rightly.
    `recompute_mismatch` comes from a full outer join with `recomputed` on (exchange, symbol, open_time),
    so a recomputed candle missing from the stage is a row too (key only, staged values NULL). Equality is
    null-safe and exact on every candle column. Needs a UTC session time zone (the jobs' sessions).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from candlelake.spark import transforms

    keys = list(suites.CANDLE_KEY)
    values = [c for c in transforms.CURATED_COLUMNS if c not in keys]
    step = transforms.interval_micros(interval)

    by_market = Window.partitionBy("exchange", "symbol").orderBy("open_time")
    previous = F.lag("open_time").over(by_market)
    apart = F.unix_micros(F.col("open_time")) - F.unix_micros(F.col("_previous"))
    # Whole intervals when the candles are on the grid; a fraction shows one that is not.
    missing = F.when(apart % F.lit(step) == 0, (apart / F.lit(step) - 1).cast("long").cast("string")).otherwise(
        (apart / F.lit(step) - 1).cast("decimal(20,3)").cast("string")
    )
    first_missing = F.unix_micros(F.col("_previous")) + F.lit(step)
    stretches = staged.sparkSession.createDataFrame(
        [
            (exchange, symbol, start, end, carrier)
            for (exchange, symbol), spans in sorted(covered.items())
            for (start, end), carrier in zip(spans, coverage.carriers(spans, step), strict=True)
        ],
        "exchange string, symbol string, _s long, _e long, _carrier long",
    )
    inside = stretches.alias("c")
    gap = F.when(
        F.col("_previous").isNotNull() & (apart > F.lit(step)) & F.col("_covered"),
        F.concat(
            F.col("symbol"),
            F.lit(": "),
            missing,
            F.lit(f" missing (one candle every {interval}) between "),
            _iso(F.col("_previous")),
            F.lit(" and "),
            _iso(F.col("open_time")),
        ),
    )
    with_previous = staged.select(*transforms.CURATED_COLUMNS).withColumn("_previous", previous)
    # One flag per staged candle: is its first missing predecessor inside a stretch it had to be filled in?
    flagged = (
        with_previous.alias("s")
        .join(
            F.broadcast(inside),
            (F.col("s.exchange") == F.col("c.exchange"))
            & (F.col("s.symbol") == F.col("c.symbol"))
            & (F.col("c._s") <= first_missing)
            & (F.col("c._e") >= first_missing + F.lit(step))
            & (F.unix_micros(F.col("s._previous")) >= F.col("c._carrier")),
            "left",
        )
        .select("s.*", F.col("c._s").isNotNull().alias("_covered"))
    )
    stage = (
        flagged.withColumn(suites.GAP_COLUMN, gap).drop("_previous", "_covered").withColumn("_in_stage", F.lit(True))
    )
    truth = recomputed.select(*keys, *[F.col(c).alias(f"_r_{c}") for c in values], F.lit(True).alias("_in_recompute"))
    joined = stage.join(truth, keys, "full_outer")

    def text(column: str) -> Any:
        return F.coalesce(F.col(column).cast("string"), F.lit("null"))

    differences = F.concat_ws(
        "; ",
        *[
            F.when(
                ~F.col(c).eqNullSafe(F.col(f"_r_{c}")),
                F.concat(F.lit(f"{c} "), text(c), F.lit(" (recomputed "), text(f"_r_{c}"), F.lit(")")),
            )
            for c in values
        ],
    )
    where = F.concat(F.col("symbol"), F.lit(" "), _iso(F.col("open_time")), F.lit(": "))
    mismatch = (
        F.when(F.col("_in_stage").isNull(), F.concat(where, F.lit("missing from the staged candles")))
        .when(
            F.col("_in_recompute").isNull(),
            F.concat(where, F.lit("staged, but the trades give no such candle")),
        )
        .when(differences != F.lit(""), F.concat(where, differences))
    )
    return joined.select(
        *keys,
        *values,
        F.col(suites.GAP_COLUMN),
        mismatch.alias(suites.MISMATCH_COLUMN),
    )


# --- Great Expectations ---------------------------------------------------------------------------


@contextmanager
def _locked(reports_dir: Path) -> Iterator[None]:
    """Hold the reports folder's lock: one process at a time changes the context's files and the site."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    with open(reports_dir / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def docs_index(reports_dir: Path) -> Path:
    """The Data Docs site's front page (the dashboard links to it)."""
    return reports_dir / DOCS_DIR / "index.html"


def open_context(reports_dir: Path) -> Any:
    """The file-backed context in `<reports_dir>/gx`, set up for us: no analytics, no progress bars,
    one Data Docs site in `<reports_dir>/data_docs`. Changes and saves its config only when needed."""
    # Never report usage anywhere (our machines have no internet; a job must not wait on it). Set
    # before the first import, which reads it.
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context: Any = gx.get_context(mode="file", project_root_dir=str(reports_dir))
    changed = False
    if context.config.analytics_enabled is not False:
        context.config.analytics_enabled = False
        changed = True
    bars = context.variables.progress_bars  # a ProgressBarsConfig, or a dict once read back from the file
    shown = [
        getattr(bars, k, None) if not isinstance(bars, dict) else bars.get(k)
        for k in ("globally", "metric_calculations")
    ]
    if bars is None or any(v is not False for v in shown):
        # tqdm bars in a task log are noise: one line per metric batch.
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        changed = True
    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str((reports_dir / DOCS_DIR).resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    sites = dict(context.variables.data_docs_sites or {})
    if sites != {DOCS_SITE: site}:
        context.variables.data_docs_sites = {DOCS_SITE: site}
        changed = True
    if changed:
        context.variables.save()
    return context


def _batch_definition(context: Any, asset_name: str) -> Any:
    try:
        source = context.data_sources.get(DATASOURCE)
    except KeyError:
        # persist=False: the caller caches the frame; a second cache would double the memory.
        source = context.data_sources.add_spark(name=DATASOURCE, persist=False)
    try:
        asset = source.get_asset(asset_name)
    except LookupError:
        asset = source.add_dataframe_asset(name=asset_name)
    try:
        return asset.get_batch_definition(BATCH_DEFINITION)
    except KeyError:
        return asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)


def _run_name(exchange: str, day: date, run_id: str) -> str:
    """The result's run name (a folder name in the store and the site): exchange, day and the run."""
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", run_id).strip("_") or "run"
    return f"{exchange}_{day.isoformat()}_{safe}"


def run_suite(
    context: Any,
    suite: Any,
    frame: DataFrame,
    *,
    index_columns: Sequence[str],
    run_name: str,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[Any, Any, float]:
    """Validate `frame` against `suite` (saved first: the code is the source of truth) and store the
    result. Returns (result, its ValidationResultIdentifier, the seconds it took).

    Two passes, because the details cost most of the Spark jobs: first only whether each expectation
    holds (BOOLEAN_ONLY: counts, a few aggregates per suite); only when one fails, again with the
    unexpected values and the key columns of their rows (SUMMARY), stored under the same key so the
    detailed result replaces the first. On 1 million trades the first pass is 9 Spark jobs against 51.
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    started = time.monotonic()
    saved = context.suites.add_or_update(suite)
    definition = _batch_definition(context, suite.name)
    validation = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite.name, data=definition, suite=saved)
    )
    run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(UTC))

    def run(result_format: dict[str, Any]) -> Any:
        return validation.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=dict(parameters or {}),
            result_format=result_format,
            run_id=run_id,
        )

    result = run({"result_format": "BOOLEAN_ONLY"})
    if not result.success:
        result = run(
            {
                "result_format": "SUMMARY",
                "partial_unexpected_count": PARTIAL_UNEXPECTED,
                "unexpected_index_column_names": list(index_columns),
            }
        )
    batch_id = f"{DATASOURCE}-{suite.name}"  # what the store named the result after (datasource-asset)
    identifier = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite.name),
        run_id=run_id,
        batch_identifier=batch_id,
    )
    return result, identifier, time.monotonic() - started


def _plain(value: Any) -> Any:
    """A JSON value a person reads: exact decimals as text, times as ISO UTC."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")  # exact, without the scale's trailing zeros
    if isinstance(value, datetime):
        # PySpark hands back naive local times; astimezone() reads a naive one as local.
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _error(info: Any) -> str | None:
    """The message of an exception raised while evaluating an expectation, if one was.

    `exception_info` is either one {"raised_exception", "exception_message", ...} mapping or, when a
    metric could not be computed, one ExceptionInfo per metric id."""
    if not info or not isinstance(info, Mapping):
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    for value in info.values():
        message = value.get("exception_message") if isinstance(value, Mapping) else None
        message = message or getattr(value, "exception_message", None)
        if message:
            return str(message)
    return None


def failures_of(result: Any) -> tuple[Failure, ...]:
    """The failed expectations of a suite's result, with a few unexpected rows each."""
    out: list[Failure] = []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        kwargs = dict(config.kwargs)
        columns = tuple(
            str(c)
            for c in (
                [kwargs["column"]]
                if "column" in kwargs
                else [kwargs["column_A"], kwargs["column_B"]]
                if "column_A" in kwargs
                else kwargs.get("column_list", [])
            )
        )
        check = str((config.meta or {}).get("check") or config.type)
        details: dict[str, Any] = dict(item.result or {})
        unexpected = details.get("unexpected_count")
        error = _error(item.exception_info)
        if error:
            observed = f"could not be evaluated: {error}"
        elif unexpected is not None:
            observed = f"{unexpected} of {details.get('element_count')} rows"
        else:
            observed = str(_plain(details.get("observed_value")))
        rows: list[dict[str, Any]] = []
        for row in details.get("partial_unexpected_index_list") or [
            {"value": v} for v in details.get("partial_unexpected_list") or []
        ]:
            plain = _plain(dict(row))
            if plain not in rows:  # the copies of a duplicate key are one example
                rows.append(plain)
        out.append(
            Failure(
                expectation=config.type,
                check=check,
                columns=columns,
                observed=observed,
                unexpected_count=int(unexpected) if unexpected is not None else None,
                sample=tuple(rows[:SAMPLE_ROWS]),
            )
        )
    return tuple(out)


def _outcome(
    name: str, result: Any, rows: int | None, fingerprint: str | None, docs: str | None, seconds: float
) -> SuiteOutcome:
    stats = result.statistics
    return SuiteOutcome(
        suite=name,
        success=bool(result.success),
        evaluated=int(stats["evaluated_expectations"]),
        failed=int(stats["unsuccessful_expectations"]),
        rows_validated=rows,
        fingerprint=fingerprint,
        failures=failures_of(result),
        docs_path=docs,
        seconds=seconds,
    )


# The logo of every Data Docs page is fetched from Great Expectations' bucket with the context's id in
# the URL (a usage beacon each time a page is opened): point it at the site's own copy instead.
_REMOTE_LOGO = re.compile(r"https://great-expectations-web-assets\.s3\.[^\"']*?/logo-long\.png[^\"']*")


def localize_logo(site: Path, pages: Sequence[Path]) -> None:
    """Rewrite `pages` of the site so that their logo is the local one (no request leaves the machine)."""
    logo = site / "static" / "images" / "logo-long.png"
    for page in pages:
        if not page.is_file():
            continue
        text = page.read_text()
        local = os.path.relpath(logo, page.parent)
        fixed = _REMOTE_LOGO.sub(local, text)
        if fixed != text:
            page.write_text(fixed)


def _docs_page(context: Any, identifier: Any) -> str | None:
    urls = context.get_docs_sites_urls(resource_identifier=identifier, site_name=DOCS_SITE)
    url = urls[0].get("site_url") if urls else None
    return url.removeprefix("file://") if url else None


# --- the day ----------------------------------------------------------------------------------------


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
    # The read first, cached: the recomputation below reads the same plan and takes it from the cache.
    trades = trades.persist()
    trades_read = trades.count()
    candles_frame: DataFrame | None = None
    candle_rows: int | None = None
    extra: list[Failure] = []
    if staged is not None and stage is not None:
        candle_rows, printed = staging.fingerprint(staged)
        if printed != stage.fingerprint:
            extra.append(
                Failure(
                    expectation="staged_files_match_stage_record",
                    check="the staged files are the ones staged (_stage.json)",
                    columns=(),
                    observed=f"files {printed}, _stage.json {stage.fingerprint}",
                    unexpected_count=None,
                )
            )
        # Checkpointed, not only cached: Great Expectations plans a few dozen queries on each frame,
        # and Spark would analyse the whole recomputation's plan for every one of them.
        candles_frame = checked_candles(staged, recomputed, interval, covered).localCheckpoint(eager=True)
    distinct = distinct_trades(trades).localCheckpoint(eager=True)
    distinct_rows = distinct.count()
    trades.unpersist()
    prepared = time.monotonic()

    run_name = _run_name(exchange, day, run_id)
    reports = settings.reports_dir
    with _locked(reports):
        context = open_context(reports)
        trades_result, trades_id, trades_seconds = run_suite(
            context,
            suites.trades_suite(),
            distinct,
            index_columns=suites.TRADES_INDEX,
            run_name=run_name,
            parameters=suites.day_parameters(day),
        )
        identifiers = [trades_id]
        candles_result = None
        candles_seconds = 0.0
        if candles_frame is not None:
            candles_result, candles_id, candles_seconds = run_suite(
                context,
                suites.candles_suite(),
                candles_frame,
                index_columns=suites.CANDLES_INDEX,
                run_name=run_name,
            )
            identifiers.append(candles_id)
        t0 = time.monotonic()
        context.build_data_docs(site_names=[DOCS_SITE], resource_identifiers=identifiers)
        docs_seconds = time.monotonic() - t0
        trades_docs = _docs_page(context, trades_id)
        candles_docs = _docs_page(context, identifiers[1]) if candles_result is not None else None
        pages = [docs_index(reports), *(Path(p) for p in (trades_docs, candles_docs) if p)]
        localize_logo(reports / DOCS_DIR, pages)

    trades_outcome = _outcome(suites.TRADES_SUITE, trades_result, distinct_rows, None, trades_docs, trades_seconds)
    if candles_result is None or stage is None:
        candles_outcome = SuiteOutcome(
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
                    observed=f"nothing complete staged in {staging.stage_dir(settings.lake_dir, exchange, day)}",
                    unexpected_count=None,
                ),
            ),
        )
    else:
        base = _outcome(
            suites.CANDLES_SUITE, candles_result, candle_rows, stage.fingerprint, candles_docs, candles_seconds
        )
        candles_outcome = SuiteOutcome(
            suite=base.suite,
            success=base.success and not extra,
            evaluated=base.evaluated + len(extra),
            failed=base.failed + len(extra),
            rows_validated=base.rows_validated,
            fingerprint=base.fingerprint,
            failures=base.failures + tuple(extra),
            docs_path=base.docs_path,
            seconds=base.seconds,
        )
    outcome = DayOutcome(
        exchange=exchange,
        trade_date=day,
        run_id=run_id,
        trades=trades_outcome,
        candles=candles_outcome,
        docs_index=str(docs_index(reports)),
        trades_read=trades_read,
        seconds=time.monotonic() - started,
        details={
            "identical_trade_copies": trades_read - distinct_rows,
            "prepare_seconds": round(prepared - started, 3),
            "docs_seconds": round(docs_seconds, 3),
        },
    )
    if record:
        record_outcome(settings, outcome)
    return outcome


def record_outcome(settings: Settings, outcome: DayOutcome) -> None:
    """One `quality_runs` row per suite, in one transaction."""
    import psycopg2
    from psycopg2.extras import Json

    rows = [
        (
            outcome.run_id,
            outcome.exchange,
            outcome.trade_date,
            s.suite,
            s.success,
            s.evaluated,
            s.failed,
            s.rows_validated,
            s.fingerprint,
            Json([f.as_dict() for f in s.failures]),
            s.docs_path,
        )
        for s in outcome.suites
    ]
    conn = psycopg2.connect(settings.pg_dsn(), connect_timeout=10, application_name="candlelake-quality")
    try:
        with conn, conn.cursor() as cur:
            cur.executemany(_INSERT_SQL, rows)
    finally:
        conn.close()


def summary_json(outcome: DayOutcome) -> str:
    """The job's one-line JSON summary."""
    return json.dumps(outcome.as_dict(), default=str)
