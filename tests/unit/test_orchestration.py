"""What the DAGs decide, without Airflow: the days a run covers, the events between DAGs, the reports."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from candlelake.nightly.chain import (
    MAX_RUN_DAYS,
    DayKey,
    OrchestrationError,
    bronze_exchanges,
    compaction_runs,
    curated_exchanges,
    days_from_events,
    days_from_params,
    describe_failures,
    event_extra,
    fmt_bytes,
    nightly_cron,
    parse_day,
    resolve_day,
    run_days,
)
from candlelake.util import day_bounds

pytestmark = pytest.mark.unit

D = date(2026, 11, 30)


def test_a_day_parameter_may_be_a_date_time_and_is_cut_to_its_day() -> None:
    assert parse_day(" 2026-11-30 ") == D
    assert parse_day("2026-11-30T23:59:59Z") == D


@pytest.mark.parametrize("text", ["", "30.11.2026", "2026-02-30", "yesterday"])
def test_a_bad_day_parameter_says_how_to_write_it(text: str) -> None:
    with pytest.raises(OrchestrationError, match=r"write it as YYYY-MM-DD, e\.g\. 2026-11-30"):
        parse_day(text)


def test_a_run_works_on_the_form_s_day_else_its_data_interval_s_utc_day() -> None:
    assert resolve_day("2026-11-30", datetime(2026, 1, 1, tzinfo=UTC)) == D
    # 01:30 in UTC+2 is still the day before in UTC.
    local = datetime.fromisoformat("2026-12-01T01:30:00+02:00")
    assert resolve_day("", local) == D
    with pytest.raises(OrchestrationError, match="give trade_date"):
        resolve_day(None, None)


def test_run_days_spans_trade_date_through_through_date() -> None:
    assert run_days("2026-11-29", "2026-12-01", None) == [date(2026, 11, 29), D, date(2026, 12, 1)]
    assert run_days("2026-11-30", "", None) == [D]
    with pytest.raises(OrchestrationError, match="before trade_date"):
        run_days("2026-11-30", "2026-11-29", None)
    with pytest.raises(OrchestrationError, match=f"at most {MAX_RUN_DAYS}; split the range"):
        run_days("2026-01-01", "2026-02-01", None)  # 32 days


def test_day_bounds_are_utc_midnights() -> None:
    assert day_bounds(D) == (datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


def test_asset_events_carry_their_days_and_a_run_takes_each_day_once() -> None:
    a, b = DayKey("binance", D), DayKey("coinbase", date(2026, 11, 29))
    first = event_extra([a, b, a], "run-1")
    assert first == {
        "days": [
            {"exchange": "binance", "trade_date": "2026-11-30"},
            {"exchange": "coinbase", "trade_date": "2026-11-29"},
        ],
        "run_id": "run-1",
    }
    # Two events (one repeating a day) and an event without extra: each day once, in order.
    assert days_from_events([event_extra([b], "run-2"), first, None, {}]) == [a, b]
    assert str(a) == "binance 2026-11-30"


def test_a_manual_run_takes_the_form_s_exchange_or_every_known_one() -> None:
    assert days_from_params(" coinbase ", "2026-11-30", ["binance"]) == [DayKey("coinbase", D)]
    assert days_from_params("", "2026-11-30", ["binance", "coinbase"]) == [
        DayKey("binance", D),
        DayKey("coinbase", D),
    ]
    with pytest.raises(OrchestrationError, match="no exchange has compacted trades that day"):
        days_from_params("", "2026-11-30", [])


def test_exchanges_of_a_day_are_read_from_partition_folders(tmp_path) -> None:
    from dataclasses import replace

    from candlelake.config import load_settings

    settings = replace(load_settings(), lake_dir=tmp_path / "lake", curated_dir=tmp_path / "curated")
    assert bronze_exchanges(settings, D) == [] and curated_exchanges(settings, D) == []
    for exchange in ("coinbase", "binance"):
        (settings.lake_dir / "trades" / f"exchange={exchange}" / "trade_date=2026-11-30").mkdir(parents=True)
    (settings.lake_dir / "trades" / "exchange=kraken" / "trade_date=2026-11-29").mkdir(parents=True)
    assert bronze_exchanges(settings, D) == ["binance", "coinbase"]
    # Curated only once its manifest exists: a compaction killed before its switch leaves none.
    done = settings.curated_dir / "trades" / "exchange=binance" / "trade_date=2026-11-30"
    done.mkdir(parents=True)
    (settings.curated_dir / "trades" / "exchange=coinbase" / "trade_date=2026-11-30").mkdir(parents=True)
    (done / "_manifest.json").write_text("{}")
    assert curated_exchanges(settings, D) == ["binance"]


def test_a_backfill_compacts_each_stretch_of_consecutive_days_in_one_run() -> None:
    days = ["2026-11-03", "2026-11-01", "2026-11-02", "2026-11-02", "2026-11-20", date(2026, 11, 21)]
    assert compaction_runs("binance", days) == [
        {"trade_date": "2026-11-01", "through_date": "2026-11-03", "exchanges": ["binance"], "wait_for_lake": False},
        {"trade_date": "2026-11-20", "through_date": "2026-11-21", "exchanges": ["binance"], "wait_for_lake": False},
    ]
    assert compaction_runs("binance", []) == []


def test_a_long_backfill_is_split_into_runs_the_compaction_accepts() -> None:
    days = [date.fromordinal(date(2026, 1, 1).toordinal() + n) for n in range(70)]
    runs = compaction_runs("coinbase", days)
    assert [(r["trade_date"], r["through_date"]) for r in runs] == [
        ("2026-01-01", "2026-01-31"),
        ("2026-02-01", "2026-03-03"),
        ("2026-03-04", "2026-03-11"),
    ]
    for r in runs:  # each is a valid lake_compaction form
        assert len(run_days(r["trade_date"], r["through_date"], None)) <= MAX_RUN_DAYS


def test_failures_are_described_one_expectation_per_line() -> None:
    text = describe_failures(
        [
            {"suite": "candles", "docs_path": "/r/x.html", "failures": [{"check": "low <= high"}, {"check": "x"}]},
            {"suite": "trades", "docs_path": None, "failures": []},
        ]
    )
    assert text.splitlines() == [
        "suite candles failed (Data Docs: /r/x.html):",
        '  - {"check": "low <= high"}',
        '  - {"check": "x"}',
        "suite trades failed (Data Docs: not built):",
    ]


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "-"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 2**20, "5.0 MiB"), (3 * 2**40, "3072.0 GiB")],
)
def test_byte_counts_read_as_a_person_writes_them(n, text) -> None:
    assert fmt_bytes(n) == text


@pytest.mark.parametrize(("at", "cron"), [("00:00", "0 0 * * *"), ("02:30", "30 2 * * *"), (" OFF ", None)])
def test_the_nightly_run_starts_at_candlelake_nightly_at(at: str, cron: str | None) -> None:
    from candlelake.config import load_settings

    assert nightly_cron(load_settings({"CANDLELAKE_NIGHTLY_AT": at})) == cron
    assert nightly_cron(load_settings({})) == "0 0 * * *"
