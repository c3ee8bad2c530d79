"""The audit step for real: Great Expectations on a local Spark session, results in PostgreSQL and Data Docs.

A day of trades is written into a lake of its own (the stream's file layout, with batch records),
recomputed and staged the way `batch_candles.py --stage` does, and validated: a good day passes and is
recorded; bad trades (null, negative, conflicting copies, outside the day) fail the trades suite; bad
candles injected into the stage (close above high, a duplicate key, a missing minute, a value that
differs from the trades) make jobs/validate_day.py exit 1 naming each failed expectation and candle, in
plain words, in `quality_runs` and in Data Docs.

Uses the platform database of the current settings and the tier's Spark session (both from
tests/integration/conftest.py). Exchange names are unique per module and their rows are deleted
afterwards; the lake and the reports live in a temporary folder.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from candlelake import coverage
from candlelake.config import Settings
from candlelake.lake import catalog
from candlelake.nightly import recompute as batch
from candlelake.nightly import staging
from candlelake.nightly.quality import suites
from candlelake.nightly.quality.outcomes import DayOutcome
from candlelake.nightly.quality.validate import validate_day
from candlelake.spark import transforms as T
from candlelake.stream import parquet_lake
from candlelake.util import to_us
from tests.support.spark import lent

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 20)
START = datetime(2026, 11, 20, tzinfo=UTC)
T0 = START + timedelta(hours=12)
MINUTE = timedelta(minutes=1)


@pytest.fixture(scope="module")
def settings(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("quality")
    return dataclasses.replace(
        services,
        lake_dir=root / "lake",
        curated_dir=root / "curated",
        checkpoint_dir=root / "checkpoints",
        reports_dir=root / "reports",
    )


@pytest.fixture(scope="module")
def exchange(settings: Settings, module_exchange: str) -> str:
    """A market pair seen the whole day (a live feed connected throughout): every minute is covered.

    The module's own name (tests/integration/conftest.py deletes its rows at the end): the module-scoped
    lake_day builds on it."""
    day = (to_us(START), to_us(START + timedelta(days=1)))
    seen = [coverage.Interval(module_exchange, s, "test", "live", *day) for s in ("BTCUSDT", "ETHUSDT")]
    coverage.record_dsn(settings.pg_dsn(), seen)
    return module_exchange


def trade_row(exchange: str, symbol: str, tid: int, price: str | None, qty: str, at: datetime) -> tuple:
    return (exchange, symbol, tid, D(price) if price is not None else None, D(qty), at, tid % 2 == 0, at, "test")


def good_trades(exchange: str) -> list[tuple]:
    """Two markets, ten minutes; BTCUSDT has no trade in minute 4 (a filled, empty candle)."""
    rows = []
    for minute in range(10):
        for n in range(3):
            at = T0 + minute * MINUTE + timedelta(seconds=10 * n + 1)
            if minute != 4:
                rows.append(trade_row(exchange, "BTCUSDT", 1000 + minute * 3 + n, f"{100 + minute}.{n}5", "0.5", at))
            rows.append(trade_row(exchange, "ETHUSDT", 500 + minute * 3 + n, f"{10 + n}.25", "2", at))
    return rows


def lake_args(settings: Settings) -> dict[str, Any]:
    return {"curated": settings.curated_dir, "checkpoint": catalog.lake_checkpoint(settings)}


@pytest.fixture(scope="module")
def lake_day(settings: Settings, spark: Any, exchange: str) -> list[tuple]:
    """The day in the lake as the stream writes it; batch 1 repeats a trade (an identical late copy)."""
    rows = good_trades(exchange)
    for batch_id, part in enumerate([rows, rows[:1]]):
        df = T.with_trade_date(spark.createDataFrame(part, T.TRADE_SCHEMA))
        parquet_lake.write_batch(df.coalesce(1), batch_id, settings.lake_dir / "trades", ["exchange", "trade_date"])
    return rows


def recompute(settings: Settings, spark: Any, exchange: str) -> Any:
    end = START + timedelta(days=1)
    covered = batch.load_coverage(settings.pg_dsn(), exchange, START, end)
    return batch.recompute(
        spark, settings.lake_dir, exchange, None, START, end, "1 minute", covered=covered, **lake_args(settings)
    )


def validate(settings: Settings, spark: Any, exchange: str, run_id: str, trades: Any | None = None) -> DayOutcome:
    """What jobs/validate_day.py does, in this process: the lake's day, the stage, a fresh recomputation."""
    end = START + timedelta(days=1)
    if trades is None:
        trades = batch.read_lake_trades(spark, settings.lake_dir, exchange, None, START, end, **lake_args(settings))
    stage = staging.read_stage_info(settings.lake_dir, exchange, DAY)
    files = [str(p) for p in staging.staged_files(settings.lake_dir, exchange, DAY)]
    staged = spark.read.schema(T.CURATED_SCHEMA).parquet(*files) if stage else None
    outcome = validate_day(
        settings,
        exchange,
        DAY,
        run_id,
        trades=trades,
        staged=staged,
        recomputed=recompute(settings, spark, exchange),
        stage=stage,
        interval="1 minute",
        covered=batch.load_coverage(settings.pg_dsn(), exchange, START, end),
    )
    spark.catalog.clearCache()
    return outcome


def recorded(settings: Settings, run_id: str) -> dict[str, dict[str, Any]]:
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT suite, success, evaluated, failed, rows_validated, fingerprint, failures, docs_path, exchange,"
            " trade_date FROM quality_runs WHERE run_id = %s",
            (run_id,),
        )
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    conn.close()
    return {r["suite"]: r for r in rows}


def by_check(failures: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["check"]: f for f in failures}


def page_text(path: str | Path) -> str:
    """The visible text of a Data Docs page."""
    raw = Path(path).read_text()
    raw = re.sub(r"<(script|style).*?</\1>", " ", raw, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", raw)))


def test_a_good_day_passes_and_is_recorded_with_its_fingerprint(
    settings: Settings, spark: Any, exchange: str, lake_day: list[tuple]
) -> None:
    info = staging.write_stage(recompute(settings, spark, exchange), settings.lake_dir, exchange, DAY, "stage-good")
    run_id = f"good-{uuid.uuid4().hex[:6]}"
    outcome = validate(settings, spark, exchange, run_id)

    assert outcome.success, outcome.failure_lines()
    assert outcome.trades_read == len(lake_day) + 1 and outcome.details["identical_trade_copies"] == 1
    rows = recorded(settings, run_id)
    assert set(rows) == {"trades", "candles"}
    trades, candles = rows["trades"], rows["candles"]
    assert trades["success"] and candles["success"]
    assert (trades["failed"], candles["failed"]) == (0, 0)
    assert trades["evaluated"] == len(suites.trades_suite().expectations)
    assert candles["evaluated"] == len(suites.candles_suite().expectations)
    assert trades["rows_validated"] == len(lake_day)
    assert candles["fingerprint"] == info.fingerprint and candles["rows_validated"] == info.rows == 2 * 720
    assert trades["failures"] == [] and candles["failures"] == []
    assert (candles["exchange"], candles["trade_date"]) == (exchange, DAY)
    index = settings.reports_dir / "data_docs" / "index.html"
    assert index.is_file() and outcome.docs_index == str(index)
    for row in rows.values():
        assert Path(row["docs_path"]).is_file() and Path(row["docs_path"]).is_relative_to(index.parent)


def bad_stage(spark: Any, good: Any, exchange: str) -> Any:
    """The good candles with four defects, each on a candle of its own."""
    from pyspark.sql import functions as F

    def at(symbol: str, minute: int) -> Any:
        return (F.col("symbol") == symbol) & (F.col("open_time") == F.lit(T0 + minute * MINUTE))

    bad = (
        good.withColumn(
            "close", F.when(at("BTCUSDT", 2), F.col("high") + 1).otherwise(F.col("close")).cast(T.PRICE_TYPE)
        )
        .withColumn(
            "volume", F.when(at("BTCUSDT", 7), F.col("volume") + 1).otherwise(F.col("volume")).cast(T.VOLUME_TYPE)
        )
        .where(~at("ETHUSDT", 5))
    )
    duplicate = good.where(at("ETHUSDT", 8))
    return bad.unionByName(duplicate).select(*T.CURATED_COLUMNS)


def test_null_negative_conflicting_and_out_of_day_trades_fail_the_trades_suite(
    settings: Settings, spark: Any, exchange: str
) -> None:
    from pyspark.sql.types import StructField, StructType

    # An exchange of its own, with nothing staged: the candles suite fails too ("not staged").
    other = f"{exchange}x"
    rows = good_trades(other)[:6]
    rows += [
        trade_row(other, "BTCUSDT", 9001, None, "1", T0),  # no price
        trade_row(other, "BTCUSDT", 9002, "100", "-1", T0),  # negative quantity
        trade_row(other, "BTCUSDT", 9003, "100", "1", T0),
        trade_row(other, "BTCUSDT", 9003, "101", "1", T0),  # another trade under the same id
        trade_row(other, "BTCUSDT", 9004, "100", "1", START + timedelta(days=1)),  # next day's 00:00
    ]
    nullable = StructType([StructField(f.name, f.dataType, True) for f in T.TRADE_SCHEMA.fields])
    trades = spark.createDataFrame(rows, nullable)
    run_id = f"trades-{uuid.uuid4().hex[:6]}"
    try:
        outcome = validate(settings, spark, other, run_id, trades=trades)
        failed = by_check([f.as_dict() for f in outcome.trades.failures])
        assert set(failed) == {
            "price is never null",
            "qty > 0",
            "one trade per (exchange, symbol, trade_id)",
            "trade_time inside the UTC day [00:00, next 00:00)",
        }
        assert failed["price is never null"]["sample"] == [{"symbol": "BTCUSDT", "trade_id": 9001, "price": None}]
        assert failed["qty > 0"]["sample"] == [{"symbol": "BTCUSDT", "trade_id": 9002, "qty": "-1"}]
        assert {r["trade_id"] for r in failed["one trade per (exchange, symbol, trade_id)"]["sample"]} == {9003}
        assert failed["trade_time inside the UTC day [00:00, next 00:00)"]["sample"] == [
            {"symbol": "BTCUSDT", "trade_id": 9004, "trade_time": "2026-11-21T00:00:00Z"}
        ]
        assert [f.expectation for f in outcome.candles.failures] == ["candles_are_staged"]
        stored = recorded(settings, run_id)
        assert not stored["trades"]["success"] and stored["trades"]["failed"] == 4
        assert by_check(stored["trades"]["failures"]).keys() == failed.keys()
        assert not stored["candles"]["success"] and stored["candles"]["docs_path"] is None
    finally:
        with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM quality_runs WHERE exchange = %s", (other,))
        conn.close()


def test_bad_candles_fail_the_job_naming_each_candle_in_plain_words_the_table_and_data_docs(
    settings: Settings,
    spark: Any,
    exchange: str,
    lake_day: list[tuple],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """jobs/validate_day.py's main() on a stage with four bad candles.

    In this process, to save a second JVM and Great Expectations import: main() takes the tier's
    session (getOrCreate) and stops it at its end, which `lent` turns into nothing for the modules after.
    """
    good = recompute(settings, spark, exchange)
    info = staging.write_stage(bad_stage(spark, good, exchange), settings.lake_dir, exchange, DAY, "stage-bad")
    spark.catalog.clearCache()
    run_id = f"job-{uuid.uuid4().hex[:6]}"
    for name, path in (
        ("LAKE_DIR", settings.lake_dir),
        ("CURATED_DIR", settings.curated_dir),
        ("CHECKPOINT_DIR", settings.checkpoint_dir),
        ("REPORTS_DIR", settings.reports_dir),
    ):
        monkeypatch.setenv(f"CANDLELAKE_{name}", str(path))
    monkeypatch.syspath_prepend(str(REPO / "jobs"))
    import validate_day

    with lent(spark):
        code = validate_day.main(["--exchange", exchange, "--date", DAY.isoformat(), "--run-id", run_id])
    out, err = capsys.readouterr()

    # The exit code and the words: a failed expectation, each one on a line of its own.
    assert code == 1, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["success"] is False and summary["suites"]["trades"]["success"] is True
    assert summary["data_docs"] == str(settings.reports_dir / "data_docs" / "index.html")
    assert "validation failed (the staged candles must not be loaded)" in err
    minute = lambda m: (T0 + m * MINUTE).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    # 1441 rows: the 1440 staged candles and the recomputed one missing from them.
    assert f"candles: close <= high: 1 of 1441 rows; e.g. symbol=BTCUSDT open_time={minute(2)}" in err
    assert "candles: every candle equals its recomputation from the trades: 3 of 1441 rows" in err

    # quality_runs: what failed, on which candle.
    rows = recorded(settings, run_id)
    assert {s: r["success"] for s, r in rows.items()} == {"trades": True, "candles": False}
    candles = rows["candles"]
    assert candles["failed"] == 4 and candles["evaluated"] == len(suites.candles_suite().expectations)
    assert candles["fingerprint"] == info.fingerprint and candles["rows_validated"] == info.rows
    failed = by_check(candles["failures"])
    assert set(failed) == {
        "close <= high",
        "one candle per (exchange, symbol, open_time)",
        "no missing interval inside a market's covered time",
        "every candle equals its recomputation from the trades",
    }
    close = failed["close <= high"]
    assert close["columns"] == ["high", "close"] and close["unexpected_count"] == 1
    assert close["sample"] == [{"symbol": "BTCUSDT", "open_time": minute(2), "high": "102.25", "close": "103.25"}]
    duplicate = failed["one candle per (exchange, symbol, open_time)"]
    assert duplicate["unexpected_count"] == 2
    assert duplicate["sample"] == [{"exchange": exchange, "symbol": "ETHUSDT", "open_time": minute(8)}]
    [gap] = failed["no missing interval inside a market's covered time"]["sample"]
    assert gap["gap_before"] == f"ETHUSDT: 1 missing (one candle every 1 minute) between {minute(4)} and {minute(6)}"
    mismatches = {
        r["recompute_mismatch"] for r in failed["every candle equals its recomputation from the trades"]["sample"]
    }
    assert mismatches == {
        f"BTCUSDT {minute(2)}: close 103.2500000000 (recomputed 102.2500000000)",
        f"BTCUSDT {minute(7)}: volume 2.5000000000 (recomputed 1.5000000000)",
        f"ETHUSDT {minute(5)}: missing from the staged candles",
    }

    # Data Docs: the index links to the run's page, which names the failed expectations and candles.
    index = settings.reports_dir / "data_docs" / "index.html"
    page = Path(candles["docs_path"])
    assert index.is_file() and os.path.relpath(page, index.parent) in index.read_text()
    text = page_text(page)
    assert "Status: Failed" in text and "Unsuccessful Expectations 4" in text
    assert "Values in high must always be greater than or equal to those in close" in text
    assert "102.25 103.25" in text  # the offending (high, close) pair
    assert f"ETHUSDT: 1 missing (one candle every 1 minute) between {minute(4)} and {minute(6)}" in text
    assert f"BTCUSDT {minute(7)}: volume 2.5000000000 (recomputed 1.5000000000)" in text
    for viewed in (index, page):
        assert "dataContextId" not in viewed.read_text()  # no usage beacon when a person opens the page
