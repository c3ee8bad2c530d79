"""candlelake.analytics.features against pandas' rolling windows on real Binance XRP/ETH 1m klines.

The klines (tests/fixtures/klines, 2019-10-11 and 12: 2,880 minutes, a third of them quiet) are the
bars; pandas computes each feature independently with time-based windows, so a minute removed from the
bars must make exactly the features whose window touches it disappear, as pandas' `min_periods` does.
"""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from candlelake.analytics.features import (
    BASELINE_MINUTES,
    MINUTE_US,
    Bar,
    FeatureBook,
    Features,
    bars_from_prices,
    features,
)
from candlelake.sources.klines import read_kline_file
from candlelake.util import to_us
from tests.support.features import assert_same_features

pytestmark = pytest.mark.unit

KLINES = Path(__file__).resolve().parents[1] / "fixtures" / "klines"
DAYS = ("2019-10-11", "2019-10-12")


@pytest.fixture(scope="module")
def bars() -> list[Bar]:
    klines = [k for day in DAYS for k in read_kline_file(KLINES / f"XRPETH-1m-{day}.csv")]
    return [Bar(to_us(k.open_time), k.close, k.volume, k.trades) for k in klines]


def pandas_features(bars: list[Bar]) -> pd.DataFrame:
    """Every feature computed by pandas from the bars, with time-based windows (NaN where not whole)."""
    index = pd.to_datetime([b.open_time_us for b in bars], unit="us", utc=True)
    close = pd.Series([float(b.close) for b in bars], index=index)
    volume = pd.Series([float(b.volume) if b.volume is not None else np.nan for b in bars], index=index)
    trades = pd.Series([float(b.trades) if b.trades is not None else np.nan for b in bars], index=index)
    previous = close.shift(freq="1min").reindex(index)  # the close of the minute before, if known
    log_return = np.log(close / previous)

    def z(values: pd.Series) -> pd.Series:
        before = values.rolling(f"{BASELINE_MINUTES}min", closed="left", min_periods=BASELINE_MINUTES)
        spread = before.std().replace(0.0, np.nan)
        return (values - before.mean()) / spread

    return pd.DataFrame(
        {
            "ma_1m": close.rolling("1min", min_periods=1).mean(),
            "ma_5m": close.rolling("5min", min_periods=5).mean(),
            "ma_15m": close.rolling("15min", min_periods=15).mean(),
            "return_1m": close / previous - 1,
            "log_return_1m": log_return,
            "volatility_15m": log_return.rolling("15min", min_periods=15).std(),
            "return_z": z(log_return),
            "volume_z": z(volume),
            "trades_z": z(trades),
        }
    )


FIELDS = tuple(f.name for f in dataclasses.fields(Features) if f.name not in ("open_time_us", "close"))


def assert_equal_to_pandas(ours: list[Features], bars: list[Bar]) -> dict[str, int]:
    """Each feature equal to pandas' to 1e-9 (relative) where pandas has one, None where it has NaN;
    returns how many of each were present."""
    theirs = pandas_features(bars)
    present = dict.fromkeys(FIELDS, 0)
    for row, (_, expected) in zip(ours, theirs.iterrows(), strict=True):
        for name in FIELDS:
            got, want = getattr(row, name), expected[name]
            if math.isnan(want):
                assert got is None, (name, row.open_time_us, got)
            else:
                assert got is not None, (name, row.open_time_us, want)
                assert float(got) == pytest.approx(want, rel=1e-9, abs=1e-12), (name, row.open_time_us)
                present[name] += 1
    return present


def test_every_feature_equals_pandas_over_two_real_days(bars: list[Bar]) -> None:
    ours = list(features(bars))
    present = assert_equal_to_pandas(ours, bars)
    n = len(bars)
    assert n == 2880
    # A whole history: only the first minutes of each window are missing (and z-scores of a flat hour).
    assert present["ma_5m"] == n - 4 and present["ma_15m"] == n - 14 and present["log_return_1m"] == n - 1
    assert present["volatility_15m"] == n - 15
    assert n - BASELINE_MINUTES - 1 - 100 < present["volume_z"] <= n - BASELINE_MINUTES


def test_a_minute_nobody_watched_removes_exactly_the_features_whose_window_holds_it(bars: list[Bar]) -> None:
    holes = {100, 101, 102, 700, 1500}
    kept = [b for i, b in enumerate(bars) if i not in holes]
    ours = list(features(kept))
    assert_equal_to_pandas(ours, kept)
    after = {f.open_time_us: f for f in ours}
    first_after = bars[103].open_time_us
    assert after[first_after].return_1m is None and after[first_after].ma_5m is None
    assert after[first_after + 4 * MINUTE_US].ma_5m is not None  # 103..107: whole again
    assert after[first_after + 13 * MINUTE_US].ma_15m is None  # 102..116 holds the hole's last minute
    assert after[first_after + 14 * MINUTE_US].ma_15m is not None  # 103..117 holds none
    assert after[first_after + 15 * MINUTE_US].volatility_15m is not None  # returns of 104..118: 103 known
    assert after[first_after + 14 * MINUTE_US].volatility_15m is None  # the return of 103 is not known


def test_moving_averages_are_the_exact_mean_of_the_closes(bars: list[Bar]) -> None:
    for i, row in enumerate(features(bars)):
        if i < 14:
            continue
        exact = sum((Fraction(b.close) for b in bars[i - 14 : i + 1]), Fraction(0)) / 15
        assert abs(Fraction(row.ma_15m) - exact) <= exact * Fraction(1, 10**33), i
        five = sum((Fraction(b.close) for b in bars[i - 4 : i + 1]), Fraction(0)) / 5
        assert Fraction(row.ma_5m) == five, i  # a fifth terminates in decimal: exact to the last digit


def book_features(bars: list[Bar]) -> list[Features]:
    book = FeatureBook()
    return [book.push(b) for b in bars]


@pytest.mark.parametrize("holes", [set(), {0, 100, 101, 102, 700, 1500, 1501, 2879}], ids=["whole", "with holes"])
def test_a_whole_history_at_once_is_the_live_book_bar_by_bar(bars: list[Bar], holes: set[int]) -> None:
    """Training's path (`features`) against the scorer's (`FeatureBook.push`), on real klines with an
    hour of flat closes and no trades put in (z-scores of a flat hour are None on both paths), and on
    the same bars as price points (no volume): averages and returns to the last digit, the rest to 1e-12."""
    kept = [b for i, b in enumerate(bars) if i not in holes]
    flat = kept[900].close
    kept[900:960] = [Bar(b.open_time_us, flat, Decimal(0), 0) for b in kept[900:960]]
    for series in (kept, [Bar(b.open_time_us, b.close) for b in kept]):
        assert_same_features(list(features(series)), book_features(series))
    live = book_features(kept)
    assert live[960].volume_z is None and live[960].trades_z is None  # its baseline is the flat hour
    assert live[961].volume_z is not None  # one real bar in the hour: a spread again


def test_the_book_matches_pandas_too(bars: list[Bar]) -> None:
    holes = {100, 101, 102, 700, 1500}
    kept = [b for i, b in enumerate(bars) if i not in holes]
    assert_equal_to_pandas(book_features(kept), kept)


def test_the_book_holds_an_hour_and_refuses_bars_out_of_order(bars: list[Bar]) -> None:
    book = FeatureBook()
    for bar in bars[:500]:
        book.push(bar)
    assert len(book) == BASELINE_MINUTES + 1
    with pytest.raises(ValueError, match="time order"):
        book.push(bars[10])
    with pytest.raises(ValueError, match="whole minute"):
        book.push(Bar(bars[600].open_time_us + 1, Decimal("1")))
    with pytest.raises(ValueError, match="time order"):
        list(features([bars[1], bars[0]]))
    with pytest.raises(ValueError, match="whole minute"):
        list(features([bars[0], Bar(bars[1].open_time_us + 1, Decimal("1"))]))


def test_price_points_become_minute_bars_of_their_last_price() -> None:
    t0 = 1_700_000_040_000_000  # a whole minute
    points = [(t0 + 50_000_000, Decimal("2.5")), (t0 + 1_000_000, Decimal("2.0")), (t0 + 61_000_000, Decimal("3"))]
    assert bars_from_prices(points) == [Bar(t0, Decimal("2.5")), Bar(t0 + MINUTE_US, Decimal("3"))]
    (first, second) = features(bars_from_prices(points))
    assert second.return_1m == pytest.approx(0.2) and second.volume_z is None and second.trades_z is None
    assert first.ma_1m == Decimal("2.5")
