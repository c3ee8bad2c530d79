"""The dashboard's figures (candlelake.serve.market_stats) against independent computations.

KPIs over Binance's own XRP/ETH 1m klines of 2019-10-11 (exact decimals, quiet minutes included) are
checked against sums and extremes taken straight from the CSV; moving averages and Bollinger bands
against pandas' rolling windows, an implementation that shares nothing with ours.
"""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from candlelake.serve.market_stats import Alert, alert_status, bollinger, kpis, moving_average, volatility_pct

pytestmark = pytest.mark.unit

KLINES = Path(__file__).resolve().parents[1] / "fixtures" / "klines" / "XRPETH-1m-2019-10-11.csv"


def kline_candles() -> list[SimpleNamespace]:
    rows = []
    with KLINES.open() as f:
        for r in csv.reader(f):
            rows.append(
                SimpleNamespace(
                    open_time=datetime.fromtimestamp(int(r[0]) / 1000, UTC),
                    open=Decimal(r[1]),
                    high=Decimal(r[2]),
                    low=Decimal(r[3]),
                    close=Decimal(r[4]),
                    volume=Decimal(r[5]),
                    quote_volume=Decimal(r[7]),
                    trades=int(r[8]),
                )
            )
    return rows


def candle(minute: int, close: str, high: str | None = None, low: str | None = None, trades: int = 1):
    c = Decimal(close)
    return SimpleNamespace(
        open_time=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute),
        open=c,
        high=Decimal(high) if high else c,
        low=Decimal(low) if low else c,
        close=c,
        volume=Decimal(1 if trades else 0),
        quote_volume=c if trades else Decimal(0),
        trades=trades,
    )


def test_kpis_equal_the_figures_taken_from_binance_klines() -> None:
    candles = kline_candles()
    figures = kpis(candles)
    with KLINES.open() as f:
        rows = list(csv.reader(f))
    traded = [r for r in rows if int(r[8]) > 0]
    assert figures.candles == 1440 and figures.empty_candles == 1440 - 1022
    assert figures.high == max(Decimal(r[2]) for r in traded)
    assert figures.low == min(Decimal(r[3]) for r in traded)
    assert figures.spread == figures.high - figures.low
    assert figures.last_price == Decimal(rows[-1][4])
    assert figures.trades == sum(int(r[8]) for r in rows)
    volume = sum(Decimal(r[5]) for r in rows)
    quote = sum(Decimal(r[7]) for r in rows)
    assert figures.volume == volume and figures.quote_volume == quote
    assert figures.vwap == quote / volume
    assert figures.change_pct == (Decimal(rows[-1][4]) - Decimal(traded[0][1])) / Decimal(traded[0][1]) * 100
    assert figures.average == sum(Decimal(r[4]) for r in traded) / len(traded)


def test_quiet_candles_never_set_the_high_low_or_first_open() -> None:
    # The quiet minutes repeat the previous close; a quiet candle holding an extreme price must not count.
    candles = [candle(0, "10", "11", "9"), candle(1, "99", trades=0), candle(2, "12", "13", "12")]
    figures = kpis(candles)
    assert (figures.high, figures.low) == (Decimal("13"), Decimal("9"))
    assert figures.change_pct == Decimal(20)
    assert figures.empty_candles == 1 and figures.average == Decimal(11)


def test_a_window_without_trades_has_a_last_price_but_no_extremes() -> None:
    figures = kpis([candle(0, "5", trades=0), candle(1, "5", trades=0)])
    assert figures.last_price == Decimal(5)
    assert figures.high is None and figures.vwap is None and figures.change_pct is None
    assert kpis([]).last_price is None


def test_moving_average_and_bollinger_equal_pandas_rolling_windows() -> None:
    closes = [float(c.close) for c in kline_candles()]
    series = pd.Series(closes)
    for window in (1, 20, 50):
        ours = moving_average(closes, window)
        theirs = series.rolling(window).mean().tolist()
        for a, b in zip(ours, theirs, strict=True):
            assert (a is None and math.isnan(b)) or a == pytest.approx(b, rel=1e-9)
    bands = bollinger(closes, 20, 2.0)
    sd = series.rolling(20).std(ddof=0)
    mid = series.rolling(20).mean()
    for i in range(19, len(closes)):
        assert bands.upper[i] == pytest.approx(mid[i] + 2 * sd[i], rel=1e-9)
        assert bands.lower[i] == pytest.approx(mid[i] - 2 * sd[i], rel=1e-9)
    assert bands.upper[18] is None
    with pytest.raises(ValueError, match="window of at least 1"):
        moving_average(closes, 0)


def test_volatility_is_the_sample_deviation_of_log_returns() -> None:
    closes = [float(c.close) for c in kline_candles()]
    expected = pd.Series(closes).apply(math.log).diff().std(ddof=1) * 100
    assert volatility_pct(closes) == pytest.approx(expected, rel=1e-9)
    assert volatility_pct([1.0, 2.0]) is None


def test_alert_crossed_reports_when_the_run_beyond_the_level_began() -> None:
    candles = [
        candle(0, "10"),
        candle(1, "12"),
        candle(2, "9"),
        candle(3, "11"),
        candle(4, "11", trades=0),
        candle(5, "12"),
    ]
    status = alert_status(candles, Alert(Decimal("11"), "above"))
    assert status.state == "crossed" and status.at == candles[3].open_time
    assert status.last_price == Decimal(12)
    below = alert_status(candles, Alert(Decimal("9.5"), "below"))
    assert below.state == "touched" and below.at == candles[2].open_time


def test_alert_touched_by_a_wick_and_waiting_are_told_apart() -> None:
    candles = [candle(0, "10", high="10.5"), candle(1, "10", high="10.2")]
    assert alert_status(candles, Alert(Decimal("10.5"), "above")).state == "touched"
    waiting = alert_status(candles, Alert(Decimal("10.50000001"), "above"))
    assert waiting.state == "waiting" and waiting.at is None
    # Exact comparison: a level one satoshi above the close is not crossed.
    assert alert_status(candles, Alert(Decimal("10.00000001"), "above")).state == "touched"
    assert alert_status(candles, Alert(Decimal("10"), "above")).state == "crossed"
