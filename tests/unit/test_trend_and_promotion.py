"""The trend classifier's labels and walk-forward validation, and the promotion rule, on real XRP/ETH klines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from candlelake.analytics import trend
from candlelake.analytics.features import MINUTE_US, Bar
from candlelake.analytics.training import decide, held_out_cut, train_detector, train_trend
from candlelake.sources.klines import read_kline_file
from candlelake.util import to_us

pytestmark = pytest.mark.unit

KLINES = Path(__file__).resolve().parents[1] / "fixtures" / "klines"
DAYS = ("2019-10-11", "2019-10-12", "2019-10-13")


@pytest.fixture(scope="module")
def bars() -> list[Bar]:
    klines = [k for day in DAYS for k in read_kline_file(KLINES / f"XRPETH-1m-{day}.csv")]
    return [Bar(to_us(k.open_time), k.close, k.volume, k.trades) for k in klines]


@pytest.fixture(scope="module")
def data(bars) -> trend.Samples:
    return trend.samples(bars)


def test_labels_say_whether_the_close_fifteen_minutes_later_is_higher(bars, data) -> None:
    close = pd.Series([b.close for b in bars], index=[b.open_time_us for b in bars])
    later = close.reindex(close.index + trend.HORIZON_MINUTES * MINUTE_US).to_numpy()
    expected = {t: int(after > now) for t, now, after in zip(close.index, close, later, strict=True) if after == after}
    assert len(data) > 3000
    assert all(expected[int(t)] == y for t, y in zip(data.times_us, data.y, strict=True))
    assert np.all(np.diff(data.times_us) > 0)  # time order, never shuffled


def test_a_walk_forward_fold_trains_only_on_labels_that_end_before_it(data) -> None:
    start = int(data.times_us[len(data) // 2])
    train, test = trend.split(data, start)
    assert train.times_us.max() + trend.HORIZON_MINUTES * MINUTE_US < start <= test.times_us.min()
    # The gap is exactly the horizon: the samples whose label would reach into the test block are dropped.
    dropped = data.where((data.times_us < start) & (data.times_us + trend.HORIZON_MINUTES * MINUTE_US >= start))
    assert 0 < len(dropped) <= trend.HORIZON_MINUTES


def test_walk_forward_scores_every_model_and_baseline_on_the_same_folds(data) -> None:
    results = trend.walk_forward(data, folds=3)
    assert set(results) == {"random_forest", "logistic", "majority", "last_move"}
    assert {len(scores) for scores in results.values()} == {3}
    assert all(s.balanced_accuracy == 0.5 for s in results["majority"])  # a constant guess, whatever the balance
    # Measured on these days: both learners above the majority guess; the last move below it (this pair
    # reverts within minutes). The forest is no better than the logistic regression to within the noise.
    assert trend.mean(results["random_forest"]).balanced_accuracy > 0.5
    assert trend.mean(results["last_move"]).balanced_accuracy < 0.5


def test_decide_promotes_only_what_beats_the_champion_and_every_baseline() -> None:
    s = [trend.Score(v, v, 100) for v in (0.5, 0.55, 0.6)]
    assert decide(s[2], None, {"majority": s[0]}).promote
    assert decide(s[2], s[1], {"majority": s[0]}).promote
    assert decide(s[1], s[2], {"majority": s[0]}).reason == "does not beat the champion"
    assert decide(s[1], None, {"logistic": s[2]}).reason == "does not beat the logistic baseline"
    assert not decide(s[1], s[1], {}).promote  # a tie is not a win


def test_too_short_a_history_is_refused_with_the_minutes_needed(bars) -> None:
    with pytest.raises(ValueError, match="too few to hold out"):
        held_out_cut({"binance:XRPETH": bars[:400]})
    with pytest.raises(ValueError, match="no candles"):
        held_out_cut({})


def test_the_detector_is_promoted_over_the_rules_and_a_challenger_no_better_than_its_champion_is_not(bars) -> None:
    history = {"binance:XRPETH": bars}
    first = train_detector(history, trees=50)
    assert first.verdict.promote, first.verdict
    assert first.challenger.beats(first.baselines["rules"])
    # The same training again, with the first as champion: equal on the same held-out events, so refused.
    again = train_detector(history, champion=first.model, trees=50)
    assert again.champion is not None and again.champion.recall == again.challenger.recall
    assert (again.verdict.promote, again.verdict.reason) == (False, "does not beat the champion")


def test_the_trend_report_says_plainly_when_the_forest_does_not_beat_its_baselines(bars) -> None:
    report = train_trend({"binance:XRPETH": bars})
    assert set(report.baselines) == {"majority", "last_move", "logistic"}
    beaten = all(report.challenger.beats(b) for b in report.baselines.values())
    assert report.verdict.promote == beaten
    if not beaten:
        assert report.verdict.reason.startswith("does not beat the")
