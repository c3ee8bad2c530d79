"""Rule-based anomalies (candlelake.analytics.rules) on real Binance XRP/ETH 1m klines.

A pump and a dump are injected into 2019-10-11 at known minutes (the close moved and the volume raised,
the rest of the day as Binance recorded it); the rules must name each at its minute and its kind. The
same day untouched gives the clean rate the thresholds cost.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from candlelake.analytics.features import Bar, features
from candlelake.analytics.rules import Rules, Thresholds, parse_rules
from candlelake.sources.klines import read_kline_file
from candlelake.util import to_us

pytestmark = pytest.mark.unit

DAY = Path(__file__).resolve().parents[1] / "fixtures" / "klines" / "XRPETH-1m-2019-10-11.csv"


@pytest.fixture(scope="module")
def bars() -> list[Bar]:
    return [Bar(to_us(k.open_time), k.close, k.volume, k.trades) for k in read_kline_file(DAY)]


def inject(bars: list[Bar], at: int, price_factor: str, volume_factor: int) -> list[Bar]:
    """The bars with a move at minute `at`: its close and every later one times `price_factor` (the price
    moves and stays), its volume `volume_factor` times the largest of the hour before (volumes are heavy
    tailed: a multiple of the minute's own can still be an ordinary minute of the hour)."""
    factor = Decimal(price_factor)
    moved = [dataclasses.replace(b, close=b.close * factor) if i >= at else b for i, b in enumerate(bars)]
    heaviest = max(b.volume for b in bars[at - 60 : at] if b.volume is not None)
    moved[at] = dataclasses.replace(moved[at], volume=heaviest * volume_factor)
    return moved


def fired(bars: list[Bar], rules: Rules) -> dict[int, str]:
    out = {}
    for i, row in enumerate(features(bars)):
        anomaly = rules.check("binance", "XRPETH", row)
        if anomaly is not None:
            out[i] = anomaly.kind
    return out


def test_an_injected_pump_and_dump_are_named_at_their_minutes(bars: list[Bar]) -> None:
    rules = Rules(Thresholds(return_z=4.0, volume_z=4.0))
    pumped = inject(inject(bars, 600, "1.04", 3), 1000, "0.96", 3)
    found = fired(pumped, rules)
    assert found.get(600) == "pump" and found.get(1000) == "dump", {
        k: v for k, v in found.items() if k in range(595, 1010)
    }
    clean = fired(bars, rules)
    assert 600 not in clean and 1000 not in clean
    # What the thresholds cost on the untouched day: every alert of a clean day is a false one.
    assert len(clean) <= 40, clean


def test_the_score_is_the_excess_over_the_threshold_and_the_evidence_is_kept(bars: list[Bar]) -> None:
    rules = Rules(Thresholds(return_z=4.0, volume_z=4.0))
    rows = list(features(inject(bars, 600, "1.04", 3)))
    anomaly = rules.check("binance", "XRPETH", rows[600])
    assert anomaly is not None and anomaly.detector == "rules" and anomaly.open_time_us == bars[600].open_time_us
    assert anomaly.score == pytest.approx(max(abs(rows[600].return_z) / 4.0, rows[600].volume_z / 4.0))
    assert anomaly.score >= 1.0 and Decimal(anomaly.features["close"]) == rows[600].close


def test_unknown_z_scores_fire_nothing(bars: list[Bar]) -> None:
    first_hour = list(features(bars))[:60]  # no hour before them: no z-scores
    assert all(Rules(Thresholds(0.1, 0.1)).check("binance", "XRPETH", row) is None for row in first_hour)


def test_thresholds_per_market_from_the_setting() -> None:
    rules = parse_rules("return_z=3, volume_z=5; binance:BTCUSDT=return_z=6")
    assert rules.default == Thresholds(3.0, 5.0)
    assert rules.thresholds("binance", "BTCUSDT") == Thresholds(6.0, 4.0)
    assert rules.thresholds("coinbase", "BTC-USD") == Thresholds(3.0, 5.0)
    assert parse_rules("") == Rules()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("return_z=high", "return_z must be a number, not 'high'"),
        ("binance:BTCUSDT=speed=3", "expected return_z=<number>"),
        ("volume_z=-1", "thresholds must be positive"),
    ],
)
def test_a_bad_threshold_setting_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="anomaly thresholds") as caught:
        parse_rules(text)
    assert message in str(caught.value)
