"""Plotly figure builders for the dashboard. Pure functions of DataFrames: no Streamlit, no database.

Candles arrive with exact `Decimal` prices and volumes. Floats appear only here, for the drawing itself;
the hover text shows the exact decimal strings, so what a user reads off the chart is never rounded.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

UP = "#26a69a"  # the green/red pair most trading UIs use, readable on light and dark themes
DOWN = "#ef5350"

PRICE_COLUMNS = ("open", "high", "low", "close")


def to_floats(values: Iterable[object]) -> list[float | None]:
    """Decimals (or None for SQL NULL) as floats, for drawing only."""
    return [None if value is None else float(value) for value in values]  # type: ignore[arg-type]


def _exact(value: object) -> str:
    # format(Decimal, "f") never switches to scientific notation (Decimal('1E-8') -> '0.00000001').
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def candle_hover_text(candles: pd.DataFrame) -> list[str]:
    """One hover label per candle with exact OHLC, volume, trade count and state."""
    return [
        f"O {_exact(row.open)}<br>H {_exact(row.high)}<br>L {_exact(row.low)}<br>C {_exact(row.close)}"
        f"<br>vol {_exact(row.volume)}<br>trades {row.trades}<br>{row.state}"
        for row in candles.itertuples(index=False)
    ]


def candlestick_figure(candles: pd.DataFrame, title: str = "", revision: str = "") -> go.Figure:
    """Candlesticks over a volume panel sharing one UTC time axis.

    `candles` needs open_time, open, high, low, close, volume, trades and state, oldest first.
    `revision` becomes Plotly's `uirevision`: while it stays the same, a live refresh keeps the user's
    zoom and pan; a new market or lookback passes a new value and the view resets.
    """
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.03, row_heights=[0.75, 0.25])
    times = candles["open_time"]
    figure.add_trace(
        go.Candlestick(
            x=times,
            open=to_floats(candles["open"]),
            high=to_floats(candles["high"]),
            low=to_floats(candles["low"]),
            close=to_floats(candles["close"]),
            increasing={"line": {"color": UP}, "fillcolor": UP},
            decreasing={"line": {"color": DOWN}, "fillcolor": DOWN},
            text=candle_hover_text(candles),
            hoverinfo="x+text",
            name="price",
        ),
        row=1,
        col=1,
    )
    # Colour by the candle's direction, compared exactly on the Decimals.
    colours = [UP if close >= open_ else DOWN for open_, close in zip(candles["open"], candles["close"], strict=True)]
    figure.add_trace(
        go.Bar(
            x=times,
            y=to_floats(candles["volume"]),
            marker={"color": colours, "line": {"width": 0}},
            hovertext=[f"vol {_exact(v)}" for v in candles["volume"]],
            hoverinfo="x+text",
            name="volume",
        ),
        row=2,
        col=1,
    )
    figure.update_layout(
        showlegend=False,
        xaxis_rangeslider_visible=False,
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
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
    figure.update_xaxes(title_text="open time (UTC)", row=2, col=1)
    return figure
