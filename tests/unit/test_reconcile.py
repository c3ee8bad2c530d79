"""Reconciliation under coverage: partial candles and uncovered minutes are not judged, and a run with
no reachable kline source is skipped, not failed; a real difference still fails.

The klines are tests/fixtures/klines/XRPETH-1m-2019-10-11.csv (Binance's real XRP/ETH klines of the day;
its README), and the candles are those klines' own values, changed where a test says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from candlelake.candle import Candle
from candlelake.nightly.reconcile import (
    ReconcileFailed,
    ReconcileResult,
    ReconcileSkipped,
    check_results,
    check_threshold,
    compare,
)
from candlelake.sources.klines import Kline, read_kline_file
from candlelake.util import to_us

pytestmark = pytest.mark.unit

CSV = Path(__file__).resolve().parents[1] / "fixtures" / "klines" / "XRPETH-1m-2019-10-11.csv"
DAY = date(2019, 10, 11)
DAY_START = datetime(2019, 10, 11, tzinfo=UTC)
WHOLE_DAY = [(to_us(DAY_START), to_us(DAY_START + timedelta(days=1)))]


@pytest.fixture(scope="module")
def klines() -> list[Kline]:
    return read_kline_file(CSV)


def candle_of(k: Kline, partial: bool = False) -> Candle:
    assert k.quote_volume is not None and k.trades is not None
    assert k.taker_buy_volume is not None and k.taker_buy_quote_volume is not None
    return Candle(
        k.open_time, k.open, k.high, k.low, k.close, k.volume, k.quote_volume, k.trades, k.taker_buy_volume,
        k.taker_buy_quote_volume, "partial" if partial else "complete",
    )  # fmt: skip


def minute(i: int) -> datetime:
    return DAY_START + timedelta(minutes=i)


def test_partial_candles_that_differ_are_partial_not_mismatches(klines) -> None:
    candles = [candle_of(k) for k in klines]
    # Coverage began at 00:10:30 and broke at 12:00:20: those two minutes hold only the trades seen.
    for i in (10, 720):
        candles[i] = replace(candles[i], volume=candles[i].volume / 2, coverage="partial")
    result = compare("binance", "XRPETH", DAY, "files", candles, klines, WHOLE_DAY)
    assert (result.matched, result.mismatched, result.partial, result.not_covered) == (1438, 0, 2, 0)
    assert result.judged == 1438 and result.match_rate == 1.0 and result.mismatch_rate == 0.0
    assert result.examples == ()
    assert ", 2 partial (interval not fully observed, not judged)" in result.text()
    check_threshold([result], 0.0)  # partial minutes do not fail the match rate
    # The same difference in a complete candle is a mismatch, and fails.
    tampered = list(candles)
    tampered[30] = replace(tampered[30], volume=tampered[30].volume + 1)
    failed = compare("binance", "XRPETH", DAY, "files", tampered, klines, WHOLE_DAY)
    assert (failed.mismatched, failed.partial) == (1, 2)
    assert failed.examples[0]["field"] == "volume" and failed.examples[0]["open_time"] == "2019-10-11T00:30:00Z"
    counted = r"0\.07% \(1 mismatched, 0 without a candle, 0 without a kline; 2 partial"
    with pytest.raises(ReconcileFailed, match=counted):
        check_threshold([failed], 0.0)


def test_a_partial_candle_equal_to_its_kline_is_still_not_judged(klines) -> None:
    candles = [candle_of(k, partial=(i == 3)) for i, k in enumerate(klines[:5])]
    result = compare("binance", "XRPETH", DAY, "files", candles, klines[:5])
    assert (result.matched, result.partial, result.judged, result.match_rate) == (4, 1, 4, 1.0)


def test_klines_without_candles_outside_our_coverage_are_not_covered(klines) -> None:
    # Covered from 06:00 to 18:00 only, with nothing curated outside; one covered minute lost its candle.
    covered = [(to_us(minute(360)), to_us(minute(1080)))]
    candles = [candle_of(k) for i, k in enumerate(klines) if 360 <= i < 1080 and i != 500]
    result = compare("binance", "XRPETH", DAY, "files", candles, klines, covered)
    assert (result.klines, result.candles) == (1440, 719)
    assert (result.matched, result.missing_candles, result.not_covered, result.partial) == (719, 1, 720, 0)
    assert result.judged == 720
    assert result.match_rate == pytest.approx(719 / 720)
    assert result.mismatch_rate == pytest.approx(1 / 720)
    assert result.examples == ({"open_time": "2019-10-11T08:20:00Z", "field": "candle", "ours": None,
                                "theirs": "kline present"},)  # fmt: skip
    assert "719 of 720 covered klines matched (99.86%)" in result.text()
    assert ", 720 not covered (no candle, minute not observed)" in result.text()
    # A minute only partly covered is not covered either: 05:59:30 to 06:00 covers none of 05:59 whole.
    edge = [(to_us(minute(359)) + 30_000_000, to_us(minute(1080)))]
    assert compare("binance", "XRPETH", DAY, "files", candles, klines, edge).not_covered == 720


def test_without_coverage_given_every_minute_is_judged(klines) -> None:
    result = compare("binance", "XRPETH", DAY, "files", [candle_of(k) for k in klines[1:]], klines)
    assert (result.missing_candles, result.not_covered) == (1, 0)


def test_a_market_seen_nowhere_has_nothing_judged(klines) -> None:
    result = compare("binance", "XRPETH", DAY, "files", [], klines, [])
    assert (result.not_covered, result.judged, result.match_rate, result.mismatch_rate) == (1440, 0, 1.0, 0.0)


def _skipped(symbol: str) -> ReconcileResult:
    note = "skipped: no kline source (binance REST API at https://api.binance.com cannot be reached: ...)"
    return ReconcileResult("binance", symbol, DAY, "rest", note=note, skipped=True)


def test_nothing_reachable_is_skipped_with_the_reason() -> None:
    skipped = [_skipped("XRPETH"), _skipped("BTCUSDT")]
    assert not skipped[0].compared
    assert skipped[0].text().startswith("binance XRPETH 2019-10-11: skipped: no kline source")
    with pytest.raises(ReconcileSkipped) as raised:
        check_results(skipped, 0.0)
    message = str(raised.value)
    assert message.startswith("skipped: no kline source: 2 market(s) not compared (binance XRPETH 2019-10-11, ")
    assert message.endswith("): binance REST API at https://api.binance.com cannot be reached: ...")  # once
    assert ReconcileResult.from_dict(skipped[0].as_dict()) == skipped[0]


def test_a_real_mismatch_fails_even_when_other_markets_were_skipped(klines) -> None:
    candles = [candle_of(k) for k in klines]
    candles[0] = replace(candles[0], close=candles[0].close + Decimal("0.00000001"))
    bad = compare("binance", "XRPETH", DAY, "files", candles, klines, WHOLE_DAY)
    with pytest.raises(ReconcileFailed, match="binance XRPETH 2019-10-11"):
        check_results([bad, _skipped("BTCUSDT")], 0.0)


def test_compared_and_skipped_markets_give_a_summary(klines) -> None:
    candles = [candle_of(k, partial=(i == 0)) for i, k in enumerate(klines)]
    good = compare("binance", "XRPETH", DAY, "files", candles, klines, WHOLE_DAY)
    no_klines = ReconcileResult("simulator", "*", DAY, "auto", note="no kline source for exchange simulator")
    assert check_results([good, _skipped("BTCUSDT"), no_klines], 0.0) == {
        "checked": 1, "skipped": 1, "partial": 1, "not_covered": 0, "max_mismatch_rate": 0.0
    }  # fmt: skip
    assert check_results([no_klines], 0.0)["checked"] == 0  # an exchange without klines: reported, not skipped


# The DAG's last task, run as Airflow runs its callable, in a child process (no airflow import leaks here).
_DAG_SCRIPT = """
import importlib.util, json, sys
from datetime import date
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from candlelake.nightly.reconcile import ReconcileResult

spec = importlib.util.spec_from_file_location("reconcile_klines_file", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
check = module.reconcile_klines_dag.get_task("check_match_rate").python_callable
module.get_current_context = lambda: {"params": {"max_mismatch_rate": 0.0}}
day = date(2019, 10, 11)
skipped = ReconcileResult("binance", "XRPETH", day, "rest", note="skipped: no kline source (offline)", skipped=True)
bad = ReconcileResult("binance", "BTCUSDT", day, "files", klines=2, candles=2, matched=1, mismatched=1)
good = ReconcileResult("binance", "ETHUSDT", day, "files", klines=2, candles=2, matched=1, partial=1)
out = {}
cases = {"skipped": [[skipped]], "failed": [[skipped], [bad]], "passed": [[good, skipped]]}
for name, per_day in cases.items():
    try:
        out[name] = ["returned", check([[r.as_dict() for r in day] for day in per_day])]
    except (AirflowSkipException, AirflowFailException) as error:
        out[name] = [type(error).__name__, str(error)]
print(json.dumps(out))
"""


def test_the_dag_ends_skipped_offline_and_failed_on_a_mismatch(tmp_path) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CANDLELAKE_"))},
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'unused.db'}",
        "CANDLELAKE_RUNTIME_DIR": str(tmp_path / "runtime"),
        "PYTHONPATH": str(root / "include"),
    }
    script = [sys.executable, "-c", _DAG_SCRIPT, str(root / "dags" / "reconcile_klines.py")]
    done = subprocess.run(script, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["skipped"] == [
        "AirflowSkipException",
        "skipped: no kline source: 1 market(s) not compared (binance XRPETH 2019-10-11): offline",
    ]
    assert out["failed"][0] == "AirflowFailException" and "binance BTCUSDT 2019-10-11: 50.00%" in out["failed"][1]
    assert out["passed"] == [
        "returned", {"checked": 1, "skipped": 1, "partial": 1, "not_covered": 0, "max_mismatch_rate": 0.0}
    ]  # fmt: skip
