"""The expectation suites of the nightly audit: what a day of trades and of staged candles must satisfy.

Pure builders: each call returns a fresh `great_expectations.ExpectationSuite` (no context, no data),
so the suites live in code and the file-backed context only stores what the code says. The values
that change per run (the UTC day) are suite parameters (`$PARAMETER`) filled in at validation time,
so the stored suite stays the same from day to day and the validation result shows the values used.

Two checks on candles need more than one row of the stage and are expressed through evidence columns
that `candlelake.nightly.quality.evidence.checked_candles` adds next to the staged columns:

- `gap_before`: NULL, or which intervals are missing between a candle and its market's previous one
  where coverage says the market was watched (uncovered time rightly has no candles);
- `recompute_mismatch`: NULL when the staged candle equals the recomputation from the lake's trades in
  every column, else the columns that differ (or that the candle is missing on one side).

Both are then ordinary "values must be null" expectations whose unexpected values name the candle,
so the Data Docs page shows which candle failed and why. Every expectation carries `meta["check"]`,
the rule in plain words that the job prints when it fails.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from candlelake import candle
from candlelake.trade import CANDLE_INPUTS, TRADE_KEY
from candlelake.util import day_bounds

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.expectations import Expectation

TRADES_SUITE = "trades"
CANDLES_SUITE = "candles"

CANDLE_KEY: tuple[str, ...] = candle.KEY
# Columns that name the row of an unexpected value in a result (its "index").
TRADES_INDEX: tuple[str, ...] = ("symbol", "trade_id")
CANDLES_INDEX: tuple[str, ...] = ("symbol", "open_time")

# Suite parameters of the trades suite: the validated UTC day is [DAY_START, DAY_END).
DAY_START = "day_start"
DAY_END = "day_end"

# Evidence columns of the candles suite (see the module docstring).
GAP_COLUMN = "gap_before"
MISMATCH_COLUMN = "recompute_mismatch"

# (column_A, column_B): column_A >= column_B on every candle.
PRICE_ORDER: tuple[tuple[str, str], ...] = (
    ("open", "low"),
    ("high", "open"),
    ("close", "low"),
    ("high", "close"),
    ("high", "low"),
)


def day_parameters(day: date) -> dict[str, datetime]:
    """The trades suite's parameters for one UTC day."""
    start, end = day_bounds(day)
    return {DAY_START: start, DAY_END: end}


def _check(words: str) -> dict[str, Any]:
    return {"check": words}


def trades_suite() -> ExpectationSuite:
    """A day of trades: complete, positive, one row per trade id, all inside the day.

    Validated on the day's trades as the batch reads them, with identical copies of a trade collapsed
    (see candlelake.nightly.quality.evidence.distinct_trades): two *different* rows under one
    (exchange, symbol, trade_id) are a defect, a second identical copy is not.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations: list[Expectation] = [
        gxe.ExpectColumnValuesToNotBeNull(column=name, meta=_check(f"{name} is never null")) for name in CANDLE_INPUTS
    ]
    expectations += [
        gxe.ExpectColumnValuesToBeBetween(column=name, min_value=0, strict_min=True, meta=_check(f"{name} > 0"))
        for name in ("price", "qty")
    ]
    expectations.append(
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=list(TRADE_KEY), meta=_check("one trade per (exchange, symbol, trade_id)")
        )
    )
    expectations.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="trade_time",
            min_value={"$PARAMETER": DAY_START},
            max_value={"$PARAMETER": DAY_END},
            strict_max=True,
            meta=_check("trade_time inside the UTC day [00:00, next 00:00)"),
        )
    )
    return gx.ExpectationSuite(name=TRADES_SUITE, expectations=expectations)


def candles_suite() -> ExpectationSuite:
    """A day of staged candles: consistent prices, non-negative sums, unique keys, no gaps, equal to the truth.

    Validated on `checked_candles(staged, recomputed, interval)`: the staged columns plus the two
    evidence columns named in the module docstring.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations: list[Expectation] = [
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=high, column_B=low, or_equal=True, meta=_check(f"{low} <= {high}")
        )
        for high, low in PRICE_ORDER
    ]
    expectations += [
        gxe.ExpectColumnValuesToBeBetween(column=name, min_value=0, meta=_check(f"{name} >= 0"))
        for name in candle.NON_NEGATIVE
    ]
    expectations.append(
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=list(CANDLE_KEY), meta=_check("one candle per (exchange, symbol, open_time)")
        )
    )
    # The evidence columns: NULL where the rule holds; an unexpected value says where and why it does not.
    evidence = [
        (
            GAP_COLUMN,
            "no missing interval inside a market's covered time",
            "(unexpected values name the missing intervals and the candle after them)",
        ),
        (
            MISMATCH_COLUMN,
            "every candle equals its recomputation from the trades",
            "(every column exactly; unexpected values name the candle and the columns that differ)",
        ),
    ]
    expectations += [
        gxe.ExpectColumnValuesToBeNull(column=column, description=f"{words.capitalize()} {detail}.", meta=_check(words))
        for column, words, detail in evidence
    ]
    return gx.ExpectationSuite(name=CANDLES_SUITE, expectations=expectations)
