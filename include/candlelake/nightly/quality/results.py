"""A Great Expectations validation result read back in words a person reads: its failed checks with a few
offending rows each, and the suite's outcome.

Works on the result objects' attributes only, so nothing here imports Great Expectations.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from candlelake.nightly.quality.outcomes import Failure, SuiteOutcome

# Unexpected rows of a failed expectation that go into `quality_runs.failures` (the result and its
# Data Docs page keep every one Great Expectations kept).
SAMPLE_ROWS = 5


def suite_outcome(
    name: str, result: Any, rows: int | None, fingerprint: str | None, docs: str | None, seconds: float
) -> SuiteOutcome:
    """The outcome of a suite's `result` on `rows` rows, with its Data Docs page `docs`."""
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


def failures_of(result: Any) -> tuple[Failure, ...]:
    """The failed expectations of a suite's result, with a few unexpected rows each."""
    return tuple(_failure(item) for item in result.results if not item.success)


def _failure(item: Any) -> Failure:
    """One failed expectation's result (an ExpectationValidationResult) as a Failure."""
    config = item.expectation_config
    details: dict[str, Any] = dict(item.result or {})
    unexpected = details.get("unexpected_count")
    return Failure(
        expectation=config.type,
        check=str((config.meta or {}).get("check") or config.type),
        columns=_columns(dict(config.kwargs)),
        observed=_observed(details, item.exception_info),
        unexpected_count=int(unexpected) if unexpected is not None else None,
        sample=_sample(details),
    )


def _columns(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """The columns an expectation looks at: one, a pair or a list, whichever its kwargs name."""
    if "column" in kwargs:
        columns = [kwargs["column"]]
    elif "column_A" in kwargs:
        columns = [kwargs["column_A"], kwargs["column_B"]]
    else:
        columns = kwargs.get("column_list", [])
    return tuple(str(c) for c in columns)


def _observed(details: Mapping[str, Any], exception_info: Any) -> str:
    """What was found: the error that kept it from being evaluated, the share of rows, or the value."""
    error = _error(exception_info)
    if error:
        return f"could not be evaluated: {error}"
    unexpected = details.get("unexpected_count")
    if unexpected is not None:
        return f"{unexpected} of {details.get('element_count')} rows"
    return str(plain(details.get("observed_value")))


def _sample(details: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """The first few distinct unexpected rows: their key columns and values, or the bare values."""
    rows: list[dict[str, Any]] = []
    for row in details.get("partial_unexpected_index_list") or [
        {"value": v} for v in details.get("partial_unexpected_list") or []
    ]:
        readable = plain(dict(row))
        if readable not in rows:  # the copies of a duplicate key are one example
            rows.append(readable)
    return tuple(rows[:SAMPLE_ROWS])


def plain(value: Any) -> Any:
    """A JSON value a person reads: exact decimals as text, times as ISO UTC."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")  # exact, without the scale's trailing zeros
    if isinstance(value, datetime):
        # PySpark hands back naive local times; astimezone() reads a naive one as local (unlike
        # candlelake.util.utc, which takes a naive time as UTC already).
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
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
