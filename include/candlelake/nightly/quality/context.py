"""The file-backed Great Expectations context in `<reports_dir>/gx/`, and one suite's run through it.

Every validation result stays in that context's result store. Concurrent validations (two exchanges at
once) take turns on the context's files through a lock (`locked`). Great Expectations is imported by
the functions that use it, never at module import.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from candlelake.nightly.quality.docs import DOCS_SITE, site_config

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

DATASOURCE = "candlelake"
BATCH_DEFINITION = "day"
LOCK_FILE = ".gx.lock"
# Unexpected rows Great Expectations keeps per expectation in a result (the result and its Data Docs
# page keep them all; candlelake.nightly.quality.results puts a few into `quality_runs.failures`).
PARTIAL_UNEXPECTED = 20


def import_in_background() -> threading.Thread:
    """Start importing Great Expectations on a daemon thread and return it.

    The import costs about 15 s of CPU (measured: 14.9 s with -X importtime, scipy, altair and pandas
    among it). A validation job starts it first: while the JVM starts and Spark prepares the day, the
    Python side only waits on py4j, so the import runs on the machine's other core instead of after
    them. The later `import great_expectations` waits on the module's import lock until it is done.
    """
    os.environ["GX_ANALYTICS_ENABLED"] = "False"  # as open_context sets it: read by the first import

    def load() -> None:
        import great_expectations  # noqa: F401

    thread = threading.Thread(target=load, name="import-great-expectations", daemon=True)
    thread.start()
    return thread


@contextmanager
def locked(reports_dir: Path) -> Iterator[None]:
    """Hold the reports folder's lock: one process at a time changes the context's files and the site."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    with open(reports_dir / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_context(reports_dir: Path) -> Any:
    """The file-backed context in `<reports_dir>/gx`, set up for us: no analytics, no progress bars,
    one Data Docs site in `<reports_dir>/data_docs`. Changes and saves its config only when needed."""
    # Never report usage anywhere (our machines have no internet; a job must not wait on it). Set
    # before the first import, which reads it.
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    import great_expectations as gx

    context: Any = gx.get_context(mode="file", project_root_dir=str(reports_dir))
    changed = _silence(context)
    changed = _keep_one_site(context, reports_dir) or changed
    if changed:
        context.variables.save()
    return context


def _silence(context: Any) -> bool:
    """Turn analytics and progress bars off; True when that changed the config."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

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
    return changed


def _keep_one_site(context: Any, reports_dir: Path) -> bool:
    """Make our Data Docs site the context's only one; True when that changed the config."""
    site = site_config(reports_dir)
    if dict(context.variables.data_docs_sites or {}) == {DOCS_SITE: site}:
        return False
    context.variables.data_docs_sites = {DOCS_SITE: site}
    return True


def run_name_for(exchange: str, day: date, run_id: str) -> str:
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
    from great_expectations.core.run_identifier import RunIdentifier

    started = time.monotonic()
    validation = _validation_definition(context, suite)
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
    return result, _result_identifier(suite.name, run_id), time.monotonic() - started


def _validation_definition(context: Any, suite: Any) -> Any:
    """The suite, saved as the code builds it, bound to its whole-DataFrame batch, as a saved definition."""
    import great_expectations as gx

    saved = context.suites.add_or_update(suite)
    definition = _batch_definition(context, suite.name)
    return context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite.name, data=definition, suite=saved)
    )


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


def _result_identifier(suite_name: str, run_id: Any) -> Any:
    """The key the result store filed a run's result under (the Data Docs page is built from it)."""
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    return ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite_name),
        run_id=run_id,
        # What the store named the result after (datasource-asset).
        batch_identifier=f"{DATASOURCE}-{suite_name}",
    )
