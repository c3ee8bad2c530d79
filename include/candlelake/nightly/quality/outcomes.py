"""What a validation found, as plain values: a failed check, a suite's outcome, a day's outcome.

These are what the job prints, what `quality_runs` stores (candlelake.nightly.quality.record) and what
the dashboard reads back; nothing here knows Great Expectations or Spark.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from typing import Any


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
    """One suite's verdict on one day: one `quality_runs` row."""

    suite: str
    success: bool
    evaluated: int
    failed: int
    rows_validated: int | None
    fingerprint: str | None
    failures: tuple[Failure, ...] = ()
    docs_path: str | None = None  # the result's Data Docs page (absolute path), when built
    seconds: float = 0.0

    def with_failures(self, failures: tuple[Failure, ...]) -> SuiteOutcome:
        """This outcome with more failed checks, ones made outside Great Expectations."""
        return replace(
            self,
            success=self.success and not failures,
            evaluated=self.evaluated + len(failures),
            failed=self.failed + len(failures),
            failures=self.failures + failures,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "failures": [f.as_dict() for f in self.failures],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class DayOutcome:
    """Both suites' verdicts on one exchange's UTC day, with what the validation cost."""

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


def summary_json(outcome: DayOutcome) -> str:
    """The job's one-line JSON summary."""
    return json.dumps(outcome.as_dict(), default=str)
