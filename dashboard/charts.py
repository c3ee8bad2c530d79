"""Plotly figure builders for the dashboard. Pure functions of DataFrames: no Streamlit, no database.

Candles arrive with exact `Decimal` prices and volumes. Floats appear only here, for the drawing itself;
the hover text shows the exact decimal strings, so what a user reads off the chart is never rounded.

Three kinds of "nothing" look different on purpose:
- a candle without trades (the market was quiet) is a grey dash at the repeated close;
- a gap-ledger interval (trades known to be missing, or the feed disconnected) is a shaded red or amber
  band: data is missing there, the chart is not the market;
- before a market's first trade and after its newest candle there is simply no candle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from candlelake.market_stats import AlertStatus, bollinger, moving_average
from dashboard.formats import exact

UP = "#26a69a"  # the green/red pair most trading UIs use, readable on light and dark themes
DOWN = "#ef5350"
QUIET = "#9e9e9e"  # candles without trades
MISSING = "rgba(239, 83, 80, 0.15)"  # trades known to be missing
DISCONNECTED = "rgba(255, 167, 38, 0.15)"  # the feed had no connection
OVERLAY_COLOURS = ("#5c6bc0", "#ab47bc", "#8d6e63")

# Overlays a user can switch on: label -> moving-average window (in buckets); "Bollinger" is the 20-bucket
# average with bands two standard deviations wide, the usual volatility envelope.
MOVING_AVERAGES = {"MA 20": 20, "MA 50": 50, "MA 200": 200}
BOLLINGER = "Bollinger 20, 2σ"
OVERLAYS = (*MOVING_AVERAGES, BOLLINGER)

PRICE_TRACE = "price"
QUIET_TRACE = "no trades"


def to_floats(values: Iterable[object]) -> np.ndarray:
    """Decimals (None for SQL NULL: NaN) as a float array, for drawing only. Plotly sends a numpy array to
    the browser as one typed array instead of checking a list element by element (3x faster here)."""
    return np.array([np.nan if value is None else float(value) for value in values], dtype=float)  # type: ignore[arg-type]


def local_times(times: pd.Series, tz: str) -> pd.Series:
    """UTC timestamps as naive wall-clock times in `tz`: Plotly draws datetimes as given, without zones."""
    return pd.to_datetime(times, utc=True).dt.tz_convert(tz).dt.tz_localize(None)


def _strings(values: Iterable[str]) -> np.ndarray:
    # An object array passes Plotly's validation as one array; a list is checked string by string.
    return np.array(list(values), dtype=object)


def candle_hover_text(candles: pd.DataFrame) -> list[str]:
    """One hover label per candle with exact OHLC, volume, trade count and state."""
    return [
        f"O {exact(row.open)}<br>H {exact(row.high)}<br>L {exact(row.low)}<br>C {exact(row.close)}"
        f"<br>vol {exact(row.volume)}<br>trades {row.trades:,}<br>{row.state}"
        for row in candles.itertuples(index=False)
    ]


@dataclass(frozen=True)
class Band:
    """A shaded interval on the time axis (UTC), such as a gap in the ledger."""

    start: pd.Timestamp
    end: pd.Timestamp
    label: str
    kind: str  # "missing" or "disconnected"


def candlestick_figure(
    candles: pd.DataFrame,
    *,
    tz: str = "UTC",
    overlays: Sequence[str] = (),
    bands: Sequence[Band] = (),
    alerts: Sequence[AlertStatus] = (),
    title: str = "",
    revision: str = "",
) -> go.Figure:
    """Candlesticks over a volume panel sharing one time axis, in display zone `tz`.

    `candles` needs open_time (UTC), open, high, low, close, volume, trades and state, oldest first.
    Candles with trades are the "price" trace, candles without are the "no trades" trace, so the two
    together hold every candle once. `revision` becomes Plotly's `uirevision`: while it stays the same, a
    live refresh keeps the user's zoom and pan; a new market, range or bucket resets the view.
    """
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.03, row_heights=[0.75, 0.25])
    times = local_times(candles["open_time"], tz) if len(candles) else candles["open_time"]
    traded = (candles["trades"] > 0).to_numpy() if len(candles) else []
    priced = candles[traded]
    quiet = candles[~traded] if len(candles) else candles
    figure.add_trace(
        go.Candlestick(
            x=times[traded],
            open=to_floats(priced["open"]),
            high=to_floats(priced["high"]),
            low=to_floats(priced["low"]),
            close=to_floats(priced["close"]),
            increasing={"line": {"color": UP}, "fillcolor": UP},
            decreasing={"line": {"color": DOWN}, "fillcolor": DOWN},
            text=_strings(candle_hover_text(priced)),
            hoverinfo="x+text",
            name=PRICE_TRACE,
        ),
        row=1,
        col=1,
    )
    figure.add_trace(
        go.Scatter(
            x=times[~traded] if len(candles) else [],
            y=to_floats(quiet["close"]),
            mode="markers",
            marker={"symbol": "line-ew-open", "size": 10, "color": QUIET, "line": {"width": 2}},
            hovertext=_strings(f"no trades; price stays {exact(c)}" for c in quiet["close"]),
            hoverinfo="x+text",
            name=QUIET_TRACE,
        ),
        row=1,
        col=1,
    )
    _add_overlays(figure, times, candles, overlays)
    # Colour by the candle's direction, compared exactly on the Decimals; quiet intervals in grey.
    colours = [
        QUIET if trades == 0 else UP if close >= open_ else DOWN
        for open_, close, trades in zip(candles["open"], candles["close"], candles["trades"], strict=True)
    ]
    figure.add_trace(
        go.Bar(
            x=times,
            y=to_floats(candles["volume"]),
            marker={"color": _strings(colours), "line": {"width": 0}},
            hovertext=_strings(f"vol {exact(v)}" for v in candles["volume"]),
            hoverinfo="x+text",
            name="volume",
        ),
        row=2,
        col=1,
    )
    for band in bands:
        start, end = local_times(pd.Series([band.start, band.end]), tz).tolist()
        # Shaded over both panels, labelled once (on the price panel).
        for row in (1, 2):
            figure.add_vrect(
                x0=start,
                x1=end,
                fillcolor=MISSING if band.kind == "missing" else DISCONNECTED,
                line_width=0,
                layer="below",
                annotation_text=band.label if row == 1 else None,
                annotation_position="top left",
                row=row,
                col=1,
            )
    for status in alerts:
        colour = DOWN if status.state == "crossed" else QUIET
        figure.add_hline(
            y=float(status.alert.level),
            line={"dash": "dash", "color": colour, "width": 1},
            annotation_text=f"alert {status.alert.direction} {exact(status.alert.level)}",
            annotation_position="top right",
            row=1,
            col=1,
        )
    figure.update_layout(
        showlegend=bool(overlays),
        legend={"orientation": "h", "y": 1.02, "x": 0, "yanchor": "bottom"},
        xaxis_rangeslider_visible=False,
        margin={"l": 10, "r": 10, "t": 40 if title or overlays else 10, "b": 10},
        height=560,
        hovermode="x",
    )
    if title:
        figure.update_layout(title_text=title)
    if revision:
        figure.update_layout(uirevision=revision)
    # Full digits on the price axis: "64.3k" hides exactly the moves a trader looks for.
    figure.update_yaxes(exponentformat="none", separatethousands=True)
    figure.update_yaxes(title_text="price", row=1, col=1)
    figure.update_yaxes(title_text="volume", row=2, col=1)
    figure.update_xaxes(title_text=f"open time ({tz})", row=2, col=1)
    return figure


def _add_overlays(figure: go.Figure, times: pd.Series, candles: pd.DataFrame, overlays: Sequence[str]) -> None:
    if not len(candles) or not overlays:
        return
    closes = [float(c) for c in candles["close"]]
    for i, name in enumerate(o for o in overlays if o in MOVING_AVERAGES):
        line = moving_average(closes, MOVING_AVERAGES[name])
        colour = OVERLAY_COLOURS[i % len(OVERLAY_COLOURS)]
        figure.add_trace(
            go.Scatter(x=times, y=line, mode="lines", line={"width": 1.2, "color": colour}, name=name),
            row=1,
            col=1,
        )
    if BOLLINGER in overlays:
        bands = bollinger(closes)
        style = {"width": 0.8, "color": "rgba(120, 144, 156, 0.9)"}
        figure.add_trace(
            go.Scatter(x=times, y=bands.upper, mode="lines", line=style, name=BOLLINGER, legendgroup="bb"),
            row=1,
            col=1,
        )
        figure.add_trace(
            go.Scatter(
                x=times,
                y=bands.lower,
                mode="lines",
                line=style,
                fill="tonexty",
                fillcolor="rgba(120, 144, 156, 0.08)",
                name=BOLLINGER,
                legendgroup="bb",
                showlegend=False,
            ),
            row=1,
            col=1,
        )
