"""Plotly figure builders for the dashboard. Pure functions of DataFrames: no Streamlit, no database.

Candles arrive with exact `Decimal` prices and volumes. Floats appear only here, for the drawing itself;
the hover text shows the exact decimal strings, so what a user reads off the chart is never rounded.

The kinds of "nothing", and of "not all", look different on purpose:
- a candle without trades in covered time (the market was quiet) is a grey dash at the repeated close;
- a partial candle (it has trades, but part of its interval was not seen) is hollow and faded, its
  volume bar faded: its values hold only the trades that were seen;
- time no coverage holds (no feed connected, no file or backfill spanning it) is a grey band labelled
  "unknown (not covered)", with no candle in it unless trades were seen there anyway;
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

from candlelake.serve.market_stats import AlertStatus, bollinger, moving_average
from dashboard.formats import exact

UP = "#26a69a"  # the green/red pair most trading UIs use, readable on light and dark themes
DOWN = "#ef5350"
QUIET = "#9e9e9e"  # candles without trades
MISSING = "rgba(239, 83, 80, 0.15)"  # trades known to be missing
DISCONNECTED = "rgba(255, 167, 38, 0.15)"  # the feed had no connection
UNKNOWN = "rgba(97, 97, 97, 0.16)"  # no coverage: nobody watched the market then
BAND_COLOURS = {"missing": MISSING, "disconnected": DISCONNECTED, "unknown": UNKNOWN}
_LABEL_POSITION = {"missing": "top left", "disconnected": "top left", "unknown": "bottom left"}
HOLLOW = "rgba(0, 0, 0, 0)"
PARTIAL_OPACITY = 0.55  # the partial candles' trace; their volume bars are fainter still
PARTIAL_BAR_OPACITY = 0.35
OVERLAY_COLOURS = ("#5c6bc0", "#ab47bc", "#8d6e63")

# Overlays a user can switch on: label -> moving-average window (in buckets); "Bollinger" is the 20-bucket
# average with bands two standard deviations wide, the usual volatility envelope.
MOVING_AVERAGES = {"MA 20": 20, "MA 50": 50, "MA 200": 200}
BOLLINGER = "Bollinger 20, 2σ"
OVERLAYS = (*MOVING_AVERAGES, BOLLINGER)

PRICE_TRACE = "price"
PARTIAL_TRACE = "partial"
QUIET_TRACE = "no trades"
ANOMALY_TRACE = "anomalies"
ANOMALY = "#ff9800"  # the platform's anomalies: not up, not down, look here
PARTIAL = "partial"  # rollups' coverage value of a candle whose interval was not seen throughout
PARTIAL_HOVER = "partial: part of this interval was not seen"
UNKNOWN_LABEL = "unknown (not covered)"


def to_floats(values: Iterable[object]) -> np.ndarray:
    """Decimals (None for SQL NULL: NaN) as a float array, for drawing only. Plotly sends a numpy array to
    the browser as one typed array instead of checking a list element by element (3x faster here)."""
    return np.array([np.nan if value is None else float(value) for value in values], dtype=float)  # type: ignore[arg-type]


def anomaly_markers(candles: pd.DataFrame, anomalies: pd.DataFrame, tz: str) -> go.Scatter:
    """A marker above the candle (of any bucket) holding each anomaly's 1m candle, the why on hover."""
    opens = pd.to_datetime(candles["open_time"], utc=True).to_numpy()
    at = pd.to_datetime(anomalies["at"], utc=True).to_numpy()
    index = np.clip(np.searchsorted(opens, at, side="right") - 1, 0, len(candles) - 1)
    highs = to_floats(candles["high"])[index]
    text = [
        f"{kind.replace('_', ' ')} ({detector}, score {score:.2f})"
        for kind, detector, score in zip(anomalies["kind"], anomalies["detector"], anomalies["score"], strict=True)
    ]
    return go.Scatter(
        x=local_times(candles["open_time"].iloc[index].reset_index(drop=True), tz),
        y=highs * 1.002,
        mode="markers",
        marker={"symbol": "triangle-down", "size": 11, "color": ANOMALY},
        name=ANOMALY_TRACE,
        text=text,
        hovertemplate="%{text}<extra>anomaly</extra>",
    )


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
    label: str  # written on the band; empty for none (a band narrower than a candle, say)
    kind: str  # "missing", "disconnected" or "unknown" (see BAND_COLOURS)


def partial_mask(candles: pd.DataFrame) -> np.ndarray:
    """True for each candle whose interval was not covered throughout (`coverage` 'partial')."""
    if "coverage" not in candles or not len(candles):
        return np.zeros(len(candles), dtype=bool)
    return (candles["coverage"] == PARTIAL).to_numpy()


def candlestick_figure(
    candles: pd.DataFrame,
    *,
    tz: str = "UTC",
    overlays: Sequence[str] = (),
    bands: Sequence[Band] = (),
    alerts: Sequence[AlertStatus] = (),
    anomalies: pd.DataFrame | None = None,
    title: str = "",
    revision: str = "",
) -> go.Figure:
    """Candlesticks over a volume panel sharing one time axis, in display zone `tz`.

    `candles` needs open_time (UTC), open, high, low, close, volume, trades and state, oldest first, and
    may have `coverage`. Complete candles with trades are the "price" trace, partial ones the "partial"
    trace, complete candles without trades the "no trades" trace, so the three together hold every
    candle once. `bands` are shaded over both panels; the unknown ones get one legend entry. `revision`
    becomes Plotly's `uirevision`: while it stays the same, a live refresh keeps the user's zoom and pan;
    a new market, range or bucket resets the view.
    """
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.03, row_heights=[0.75, 0.25])
    times = local_times(candles["open_time"], tz) if len(candles) else candles["open_time"]
    partial = partial_mask(candles)
    traded = (candles["trades"] > 0).to_numpy() & ~partial if len(candles) else partial
    empty = ~traded & ~partial
    priced, unseen, quiet = candles[traded], candles[partial], candles[empty]
    figure.add_trace(_candlesticks(times[traded], priced, PRICE_TRACE), row=1, col=1)
    figure.add_trace(_candlesticks(times[partial], unseen, PARTIAL_TRACE), row=1, col=1)
    figure.add_trace(
        go.Scatter(
            x=times[empty] if len(candles) else [],
            y=to_floats(quiet["close"]),
            mode="markers",
            marker={"symbol": "line-ew-open", "size": 10, "color": QUIET, "line": {"width": 2}},
            hovertext=_strings(f"no trades; price stays {exact(c)}" for c in quiet["close"]),
            hoverinfo="x+text",
            name=QUIET_TRACE,
            showlegend=bool(len(quiet)),
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
            marker={
                "color": _strings(colours),
                "line": {"width": 0},
                "opacity": np.where(partial, PARTIAL_BAR_OPACITY, 1.0),
            },
            hovertext=_strings(
                f"vol {exact(v)}" + (" (partial)" if p else "") for v, p in zip(candles["volume"], partial, strict=True)
            ),
            hoverinfo="x+text",
            name="volume",
            showlegend=False,  # the panel says what it is; the legend explains the price panel
        ),
        row=2,
        col=1,
    )
    # Unknown first, so that a ledger band over the same time is drawn on top of it.
    ordered = sorted(bands, key=lambda b: b.kind != "unknown")
    in_legend = False
    for band in ordered:
        start, end = local_times(pd.Series([band.start, band.end]), tz).tolist()
        legend = band.kind == "unknown" and not in_legend
        in_legend = in_legend or legend
        # Shaded over both panels, labelled once (on the price panel).
        for row in (1, 2):
            # An annotation without text is drawn as Plotly's placeholder "new text": none at all instead.
            # Ledger labels sit at the top, unknown ones at the bottom, so the two never cover each other.
            label = (
                {"annotation_text": band.label, "annotation_position": _LABEL_POSITION[band.kind]}
                if band.label and row == 1
                else {}
            )
            figure.add_vrect(
                x0=start,
                x1=end,
                fillcolor=BAND_COLOURS[band.kind],
                line_width=0,
                layer="below",
                **label,
                # One legend entry names every unknown band, the narrow unlabelled ones too.
                showlegend=legend and row == 1,
                name=UNKNOWN_LABEL if band.kind == "unknown" else band.label,
                legendgroup=band.kind,
                row=row,
                col=1,
            )
    if anomalies is not None and len(anomalies) and len(candles):
        figure.add_trace(anomaly_markers(candles, anomalies, tz), row=1, col=1)
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
        # The legend is what explains hollow candles and grey bands: shown whenever there are any.
        showlegend=bool(overlays) or bool(partial.any()) or in_legend or (anomalies is not None and len(anomalies) > 0),
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


def _candlesticks(times: pd.Series, candles: pd.DataFrame, name: str) -> go.Candlestick:
    """The candles as one trace: filled for complete ones, hollow and faded for partial ones. An empty trace
    stays in the figure (every view has the same traces) but out of the legend."""
    hover = candle_hover_text(candles)
    partial = name == PARTIAL_TRACE
    fill = {"up": HOLLOW, "down": HOLLOW} if partial else {"up": UP, "down": DOWN}
    return go.Candlestick(
        x=times,
        open=to_floats(candles["open"]),
        high=to_floats(candles["high"]),
        low=to_floats(candles["low"]),
        close=to_floats(candles["close"]),
        increasing={"line": {"color": UP}, "fillcolor": fill["up"]},
        decreasing={"line": {"color": DOWN}, "fillcolor": fill["down"]},
        opacity=PARTIAL_OPACITY if partial else 1.0,
        text=_strings(f"{text}<br>{PARTIAL_HOVER}" for text in hover) if partial else _strings(hover),
        hoverinfo="x+text",
        name=name,
        showlegend=bool(len(candles)),
    )


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
