"""The jobs' shared argument types: what they accept, and the message for what they refuse."""

from __future__ import annotations

import argparse
from datetime import date

import pytest

from candlelake.spark.job_args import exchange_name, utc_day

pytestmark = pytest.mark.unit


def test_a_day_is_written_yyyy_mm_dd() -> None:
    assert utc_day("2026-11-30") == date(2026, 11, 30)


@pytest.mark.parametrize("text", ["20261130", "2026-W48-1", "2026-13-01", "2026-11-30T00:00", " 2026-11-30", ""])
def test_anything_else_is_refused_with_the_format_to_use(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"not a date \(YYYY-MM-DD\)"):
        utc_day(text)


def test_an_exchange_name_is_trimmed() -> None:
    assert exchange_name(" binance-usdm ") == "binance-usdm"


@pytest.mark.parametrize("text", ["", "  ", "../x", "a/b", "exchange=x", "a\\b", ".hidden", "_spark_metadata"])
def test_a_name_that_would_escape_or_fake_a_lake_partition_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not an exchange name"):
        exchange_name(text)


def test_argparse_prints_the_message_not_a_traceback(capsys) -> None:
    parser = argparse.ArgumentParser(prog="job")
    parser.add_argument("--date", type=utc_day)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--date", "30/11/2026"])
    assert exit_info.value.code == 2
    assert "argument --date: not a date (YYYY-MM-DD): '30/11/2026'" in capsys.readouterr().err
