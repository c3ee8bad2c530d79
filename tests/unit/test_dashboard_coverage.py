"""How the Markets chart shows coverage (dashboard.charts): partial candles, unknown bands, their order.

The figures are built from small frames whose every candle's kind (complete with trades, quiet, partial)
is known by construction, and read back from the Plotly figure as the browser gets it.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from dashboard import charts
from dashboard.formats import describe_duration

pytestmark = pytest.mark.unit

T0 = pd.Timestamp("2024-03-01T10:00:00Z")


def frame(kinds: str, *, coverage: bool = True) -> pd.DataFrame:
    """One 1m candle per letter: T a complete candle with trades, Q a quiet (complete) one, P a partial one."""
    rows = []
    for i, kind in enumerate(kinds):
        close = Decimal("100.5") + Decimal(i) / 10
        row = {
            "open_time": T0 + timedelta(minutes=i),
            "open": close - Decimal("0.1") if kind != "Q" else close,
            "high": close + Decimal("0.2") if kind != "Q" else close,
            "low": close - Decimal("0.3") if kind != "Q" else close,
            "close": close,
            "volume": Decimal(0) if kind == "Q" else Decimal(i + 1),
            "trades": 0 if kind == "Q" else i + 1,
            "state": "closed",
        }
        if coverage:
            row["coverage"] = "partial" if kind == "P" else "complete"
        rows.append(row)
    return pd.DataFrame(rows)


def trace(figure, name: str):
    [found] = [t for t in figure.data if t.name == name]
    return found


def xs(figure, name: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(x) for x in trace(figure, name).x]


def at(*minutes: int) -> list[pd.Timestamp]:
    return [(T0 + timedelta(minutes=m)).tz_localize(None) for m in minutes]


def test_partial_mask_marks_only_partial_candles() -> None:
    candles = frame("TPQPT")
    assert charts.partial_mask(candles).tolist() == [False, True, False, True, False]
    # Before the rollups carried `coverage`, and for an empty view: nothing is partial.
    assert charts.partial_mask(frame("TPQ", coverage=False)).tolist() == [False, False, False]
    assert charts.partial_mask(candles.iloc[0:0]).tolist() == []
    unknown = candles.assign(coverage=[None, "partial", None, "complete", None])
    assert charts.partial_mask(unknown).tolist() == [False, True, False, False, False]


def test_every_candle_is_drawn_once_partial_ones_hollow_in_their_own_trace() -> None:
    candles = frame("TPQTPP")
    figure = charts.candlestick_figure(candles)
    assert xs(figure, charts.PRICE_TRACE) == at(0, 3)
    assert xs(figure, charts.PARTIAL_TRACE) == at(1, 4, 5)
    assert xs(figure, charts.QUIET_TRACE) == at(2)
    partial = trace(figure, charts.PARTIAL_TRACE)
    assert partial.increasing.fillcolor == partial.decreasing.fillcolor == charts.HOLLOW
    assert partial.opacity < 1 and trace(figure, charts.PRICE_TRACE).opacity == 1
    assert list(partial.close) == [float(c) for c in candles["close"].iloc[[1, 4, 5]]]
    assert all(charts.PARTIAL_HOVER in text for text in partial.text)
    assert not any(charts.PARTIAL_HOVER in text for text in trace(figure, charts.PRICE_TRACE).text)
    # Every candle has its volume bar; the partial ones are fainter and say so on hover.
    volume = trace(figure, "volume")
    assert list(volume.marker.opacity) == [1.0, charts.PARTIAL_BAR_OPACITY, 1.0, 1.0] + [charts.PARTIAL_BAR_OPACITY] * 2
    assert [t.endswith("(partial)") for t in volume.hovertext] == [False, True, False, False, True, True]
    # The legend is what explains hollow candles.
    assert figure.layout.showlegend is True


def test_without_coverage_column_every_traded_candle_is_a_price_candle() -> None:
    figure = charts.candlestick_figure(frame("TQT", coverage=False))
    assert xs(figure, charts.PRICE_TRACE) == at(0, 2)
    assert xs(figure, charts.PARTIAL_TRACE) == []
    assert xs(figure, charts.QUIET_TRACE) == at(1)
    assert not figure.layout.showlegend
    assert trace(figure, charts.PARTIAL_TRACE).showlegend is False  # an empty trace has no legend entry


def band(kind: str, start: int, end: int, label: str = "") -> charts.Band:
    return charts.Band(T0 + timedelta(minutes=start), T0 + timedelta(minutes=end), label, kind)


def test_unknown_bands_lie_under_ledger_bands_and_share_one_legend_entry() -> None:
    bands = [
        band("missing", 1, 2, "trade ids gap #7 (open)"),
        band("unknown", 0, 3, charts.UNKNOWN_LABEL),
        band("disconnected", 4, 5, "feed disconnected"),
        band("unknown", 4, 6),  # narrow: no label
    ]
    figure = charts.candlestick_figure(frame("TTTTTT"), bands=bands)
    shapes = [s for s in figure.layout.shapes if s.type == "rect"]
    # Two shapes per band (price and volume panel); unknown ones first, so a ledger band is drawn over them.
    kinds = [{v: k for k, v in charts.BAND_COLOURS.items()}[s.fillcolor] for s in shapes]
    assert kinds == ["unknown"] * 4 + ["missing"] * 2 + ["disconnected"] * 2
    assert [(pd.Timestamp(s.x0), pd.Timestamp(s.x1)) for s in shapes[:4:2]] == [tuple(at(0, 3)), tuple(at(4, 6))]
    assert all(s.layer == "below" for s in shapes)
    legend = [s for s in shapes if s.showlegend]
    assert [s.name for s in legend] == [charts.UNKNOWN_LABEL]
    assert figure.layout.showlegend is True
    # A label per labelled band, on the price panel only (an annotation without text would read "new text");
    # ledger labels at the top, unknown ones at the bottom, so that they never cover each other.
    labels = {a.text: (a.yref, a.yanchor) for a in figure.layout.annotations}
    assert len(figure.layout.annotations) == len(labels) == 3
    assert labels == {
        charts.UNKNOWN_LABEL: ("y domain", "bottom"),
        "trade ids gap #7 (open)": ("y domain", "top"),
        "feed disconnected": ("y domain", "top"),
    }


def test_ledger_bands_alone_keep_their_order_and_add_no_legend() -> None:
    bands = [band("disconnected", 3, 4, "feed disconnected"), band("missing", 1, 2, "gap")]
    figure = charts.candlestick_figure(frame("TTTTT"), bands=bands)
    shapes = [s for s in figure.layout.shapes if s.type == "rect"]
    assert [s.fillcolor for s in shapes] == [charts.DISCONNECTED] * 2 + [charts.MISSING] * 2
    assert not any(s.showlegend for s in shapes)
    assert not figure.layout.showlegend


def test_a_band_in_another_zone_moves_with_the_axis() -> None:
    figure = charts.candlestick_figure(frame("TT"), tz="Asia/Tokyo", bands=[band("unknown", 0, 1)])
    shape = next(s for s in figure.layout.shapes if s.type == "rect")
    assert pd.Timestamp(shape.x0) == pd.Timestamp("2024-03-01T19:00:00")  # 10:00 UTC is 19:00 in Tokyo
    assert xs(figure, charts.PRICE_TRACE)[0] == pd.Timestamp("2024-03-01T19:00:00")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (45.9, "45 s"),
        (119, "119 s"),
        (120, "2 min"),
        (920, "15 min"),
        (7200, "2 h"),
        (3 * 3600 + 20 * 60, "3 h 20 min"),
        (172_800, "2 days"),
        (2 * 86_400 + 4 * 3600 + 59, "2 days 4 h"),
    ],
)
def test_durations_read_in_the_unit_a_person_uses(seconds: float, text: str) -> None:
    assert describe_duration(seconds) == text


def test_volume_opacity_is_one_array_per_candle() -> None:
    # Plotly gets the opacities as one array, one per bar, even when nothing is partial.
    figure = charts.candlestick_figure(frame("TQT"))
    assert np.asarray(trace(figure, "volume").marker.opacity).tolist() == [1.0, 1.0, 1.0]
