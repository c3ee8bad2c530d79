"""The quality suites (the right expectations with the right parameters), the candles' evidence columns,
the plain-words failure rendering, and the arguments of the stage and validate jobs.

Run on a real Great Expectations (the suites are built, not mocked) and, for `checked_candles`, on
small in-memory Spark frames.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest

from candlelake.nightly.quality import suites
from candlelake.nightly.quality.context import run_name_for
from candlelake.nightly.quality.outcomes import Failure
from candlelake.nightly.quality.results import plain

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 20)
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def by_type(suite, type_name: str) -> list[dict]:
    return [e.configuration.kwargs for e in suite.expectations if e.configuration.type == type_name]


# --- the suites ------------------------------------------------------------------------------------


def test_trades_suite_checks_every_field_a_candle_needs_for_nulls() -> None:
    suite = suites.trades_suite()
    assert suite.name == "trades"
    columns = [k["column"] for k in by_type(suite, "expect_column_values_to_not_be_null")]
    assert sorted(columns) == sorted(["exchange", "symbol", "trade_id", "price", "qty", "trade_time", "is_buyer_maker"])


def test_trades_suite_wants_strictly_positive_price_and_qty() -> None:
    between = {k["column"]: k for k in by_type(suites.trades_suite(), "expect_column_values_to_be_between")}
    for column in ("price", "qty"):
        kwargs = between[column]
        assert kwargs["min_value"] == 0 and kwargs["strict_min"] is True, column
        assert kwargs.get("max_value") is None, column


def test_trades_suite_wants_one_row_per_trade_id_of_a_market() -> None:
    [unique] = by_type(suites.trades_suite(), "expect_compound_columns_to_be_unique")
    assert unique["column_list"] == ["exchange", "symbol", "trade_id"]


def test_trades_suite_bounds_trade_time_to_the_day_by_parameters() -> None:
    between = {k["column"]: k for k in by_type(suites.trades_suite(), "expect_column_values_to_be_between")}
    kwargs = between["trade_time"]
    assert kwargs["min_value"] == {"$PARAMETER": "day_start"}
    assert kwargs["max_value"] == {"$PARAMETER": "day_end"}
    assert kwargs["strict_max"] is True and not kwargs.get("strict_min")
    assert suites.day_parameters(DAY) == {
        "day_start": datetime(2026, 11, 20, tzinfo=UTC),
        "day_end": datetime(2026, 11, 21, tzinfo=UTC),
    }


def test_candles_suite_orders_low_open_close_high() -> None:
    pairs = by_type(suites.candles_suite(), "expect_column_pair_values_a_to_be_greater_than_b")
    assert {(k["column_A"], k["column_B"]) for k in pairs} == {
        ("open", "low"),
        ("high", "open"),
        ("close", "low"),
        ("high", "close"),
        ("high", "low"),
    }
    assert all(k["or_equal"] is True for k in pairs)


def test_candles_suite_wants_sums_and_counts_not_negative() -> None:
    between = by_type(suites.candles_suite(), "expect_column_values_to_be_between")
    assert {k["column"] for k in between} == {
        "volume",
        "quote_volume",
        "taker_buy_volume",
        "taker_buy_quote_volume",
        "trades",
    }
    assert all(k["min_value"] == 0 and not k.get("strict_min") and k.get("max_value") is None for k in between)


def test_candles_suite_wants_unique_keys_no_gaps_and_equality_with_the_recomputation() -> None:
    suite = suites.candles_suite()
    [unique] = by_type(suite, "expect_compound_columns_to_be_unique")
    assert unique["column_list"] == ["exchange", "symbol", "open_time"]
    nulls = {k["column"] for k in by_type(suite, "expect_column_values_to_be_null")}
    assert nulls == {"gap_before", "recompute_mismatch"}


def test_every_expectation_states_its_check_in_plain_words() -> None:
    for suite in (suites.trades_suite(), suites.candles_suite()):
        checks = [(e.meta or {}).get("check") for e in suite.expectations]
        assert all(checks), suite.name
        assert len(set(checks)) == len(checks), suite.name  # each failure line says which rule


def test_suites_are_rebuilt_fresh_on_every_call() -> None:
    first = suites.candles_suite()
    first.expectations.pop()
    assert len(suites.candles_suite().expectations) == len(first.expectations) + 1


def test_importing_the_quality_modules_does_not_import_great_expectations_or_spark() -> None:
    code = (
        "import sys; import candlelake.nightly.quality.suites, candlelake.nightly.quality.validate; "
        "heavy = [m for m in ('great_expectations', 'pyspark') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# --- plain words ------------------------------------------------------------------------------------


def test_values_in_failures_are_exact_text_and_utc_times() -> None:
    assert plain(D("101.5000000000")) == "101.5"
    assert plain(D("100.0000000000")) == "100"
    assert plain(datetime(2026, 11, 20, 12, 5, tzinfo=UTC)) == "2026-11-20T12:05:00Z"
    assert plain({"k": [D("0.00000001"), None]}) == {"k": ["0.00000001", None]}


def test_a_failure_reads_as_one_sentence_with_the_offending_rows() -> None:
    failure = Failure(
        expectation="expect_column_pair_values_a_to_be_greater_than_b",
        check="close <= high",
        columns=("high", "close"),
        observed="1 of 1440 rows",
        unexpected_count=1,
        sample=({"symbol": "BTCUSDT", "open_time": "2026-11-20T12:05:00Z", "high": "1", "close": "2"},),
    )
    assert failure.sentence() == (
        "close <= high: 1 of 1440 rows; e.g. symbol=BTCUSDT open_time=2026-11-20T12:05:00Z high=1 close=2"
    )
    assert failure.as_dict()["columns"] == ["high", "close"]


def test_run_names_are_safe_folder_names() -> None:
    assert run_name_for("binance", DAY, "scheduled__2026-11-21T00:30:00+00:00") == (
        "binance_2026-11-20_scheduled__2026-11-21T00_30_00_00_00"
    )


# --- the evidence columns of the candles suite ------------------------------------------------------


def candle(symbol: str, minute: int, close: str, volume: str = "1", trades: int = 1) -> tuple:
    t = T0 + minute * MINUTE
    p = D(close)
    return ("binance", symbol, t, t + MINUTE - timedelta(milliseconds=1), p, p, p, p, D(volume), p * D(volume),
            trades, D(0), D(0), p, minute, minute, "complete")  # fmt: skip


def minutes_us(first: int, last: int) -> tuple[int, int]:
    """The span from minute `first` to the end of minute `last`, in epoch microseconds."""
    start = int(T0.timestamp()) * 1_000_000
    return start + first * 60_000_000, start + (last + 1) * 60_000_000


# Both markets seen from the first minute to the tenth, unless a test says otherwise.
COVERED = {("binance", s): [minutes_us(0, 9)] for s in ("BTCUSDT", "ETHUSDT")}


def checked(spark, staged: list[tuple], recomputed: list[tuple], covered=COVERED) -> dict[tuple[str, int], tuple]:
    from pyspark.sql import functions as F

    from candlelake.nightly.quality.evidence import checked_candles
    from candlelake.spark import transforms as T

    frame = checked_candles(
        spark.createDataFrame(staged, T.CURATED_SCHEMA),
        spark.createDataFrame(recomputed, T.CURATED_SCHEMA),
        "1 minute",
        covered,
    )
    minute = ((F.unix_micros("open_time") - int(T0.timestamp() * 1e6)) / 60_000_000).cast("int")
    rows = frame.select("symbol", minute.alias("m"), suites.GAP_COLUMN, suites.MISMATCH_COLUMN).collect()
    out = {(r["symbol"], r["m"]): (r[suites.GAP_COLUMN], r[suites.MISMATCH_COLUMN]) for r in rows}
    assert len(out) == len(rows)
    return out


def test_equal_contiguous_candles_have_no_evidence(spark) -> None:
    day = [candle("BTCUSDT", m, "100") for m in range(3)] + [candle("ETHUSDT", m, "10") for m in (1, 2)]
    assert set(checked(spark, day, day).values()) == {(None, None)}


def test_a_missing_minute_is_named_on_the_candle_after_it(spark) -> None:
    truth = [candle("BTCUSDT", m, "100") for m in range(4)]
    staged = [c for c in truth if c[2] != T0 + 1 * MINUTE and c[2] != T0 + 2 * MINUTE]
    out = checked(spark, staged, truth)
    assert out[("BTCUSDT", 3)][0] == (
        "BTCUSDT: 2 missing (one candle every 1 minute) between 2026-11-20T12:00:00Z and 2026-11-20T12:03:00Z"
    )
    assert out[("BTCUSDT", 0)][0] is None
    # The recomputation has the two minutes: rows of their own, key only.
    assert out[("BTCUSDT", 1)] == (None, "BTCUSDT 2026-11-20T12:01:00Z: missing from the staged candles")


def test_missing_minutes_outside_coverage_are_no_gap(spark) -> None:
    # Seen in minutes 0-1 and again from minute 3: minute 2 had no observer, so no candle is right there.
    covered = {("binance", "BTCUSDT"): [minutes_us(0, 1), minutes_us(3, 9)]}
    truth = [candle("BTCUSDT", m, "100") for m in (0, 1, 3)]
    assert checked(spark, truth, truth, covered)[("BTCUSDT", 3)] == (None, None)
    # Minute 1 lies in the covered stretch the candle of minute 0 belongs to: it had to be a quiet candle.
    staged = [c for c in truth if c[2] != T0 + MINUTE]
    gap = checked(spark, staged, truth, covered)[("BTCUSDT", 3)][0]
    assert gap is not None and gap.startswith("BTCUSDT: ")


def test_a_changed_value_names_the_candle_the_column_and_both_values(spark) -> None:
    truth = [candle("BTCUSDT", m, "100") for m in range(2)]
    staged = [truth[0], candle("BTCUSDT", 1, "100", volume="2")]
    out = checked(spark, staged, truth)
    assert out[("BTCUSDT", 0)] == (None, None)
    mismatch = out[("BTCUSDT", 1)][1]
    assert mismatch.startswith("BTCUSDT 2026-11-20T12:01:00Z: volume 2.0000000000 (recomputed 1.0000000000)")
    assert "quote_volume 200" in mismatch and "trades" not in mismatch


def test_a_staged_candle_the_trades_do_not_give_is_named(spark) -> None:
    truth = [candle("BTCUSDT", 0, "100")]
    out = checked(spark, [*truth, candle("BTCUSDT", 1, "100")], truth)
    assert out[("BTCUSDT", 1)][1] == "BTCUSDT 2026-11-20T12:01:00Z: staged, but the trades give no such candle"


# --- the jobs' arguments ------------------------------------------------------------------------------


def batch_args(*argv: str):
    sys.path.insert(0, str(REPO / "jobs"))
    try:
        import batch_candles
    finally:
        sys.path.pop(0)
    return batch_candles.parse_args(list(argv), "1 minute")


def test_batch_date_means_one_whole_utc_day() -> None:
    args = batch_args("--exchange", "binance", "--date", "2026-11-20", "--stage", "--run-id", "r1")
    assert (args.start, args.end) == (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC))
    assert args.stage and args.run_id == "r1"


def test_batch_stages_several_days_in_one_job_sorted_once_each() -> None:
    days = ("2026-11-21", "2026-11-20", "2026-11-21")
    args = batch_args("--exchange", "binance", *(a for d in days for a in ("--date", d)), "--stage")
    assert args.dates == [date(2026, 11, 20), date(2026, 11, 21)]


def test_batch_start_and_end_still_work_for_the_other_targets() -> None:
    args = batch_args(
        "--exchange", "x", "--start", "2026-11-20T01:00:00Z", "--end", "2026-11-20T02:00:00Z", "--output", "/tmp/o"
    )
    assert args.end - args.start == timedelta(hours=1) and args.output == Path("/tmp/o")


@pytest.mark.parametrize(
    "argv",
    [
        ["--date", "2026-11-20", "--start", "2026-11-20T00:00:00Z", "--stage"],  # both ways at once
        ["--start", "2026-11-20T00:00:00Z", "--stage"],  # no end
        ["--start", "2026-11-20T01:00:00Z", "--end", "2026-11-21T01:00:00Z", "--stage"],  # not a UTC day
        ["--date", "2026-11-20", "--symbols", "BTCUSDT", "--stage"],  # a part of the day's markets
        ["--date", "2026-11-31", "--stage"],
        ["--date", "20261120", "--stage"],
        ["--date", "2026-11-20", "--date", "2026-11-21", "--write-postgres"],  # several days, not staged
    ],
)
def test_batch_rejects_what_cannot_be_staged(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        batch_args("--exchange", "binance", *argv)
    assert exc.value.code == 2 and "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--date", "2026-11-20"],
        ["--exchange", "binance", "--date", "20261120"],
        ["--exchange", "../x", "--date", "2026-11-20"],
    ],
)
def test_validate_day_exits_2_on_bad_arguments(argv: list[str], capsys, monkeypatch, tmp_path: Path) -> None:
    # Should the arguments pass by mistake, nothing shared is touched: no lake, reports or database.
    for name in ("LAKE_DIR", "CURATED_DIR", "CHECKPOINT_DIR", "REPORTS_DIR"):
        monkeypatch.setenv(f"CANDLELAKE_{name}", str(tmp_path / name.lower()))
    monkeypatch.setenv("CANDLELAKE_PG_PORT", "1")
    sys.path.insert(0, str(REPO / "jobs"))
    try:
        import validate_day
    finally:
        sys.path.pop(0)
    assert validate_day.main(argv) == 2
    assert "error" in capsys.readouterr().err
