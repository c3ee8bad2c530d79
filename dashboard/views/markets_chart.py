"""What the Markets page draws for one refresh, built without Streamlit: the candles with their live edge
marked, the shaded bands (unknown time, gap-ledger intervals), the chart's zoom key and the caption.

The page (dashboard/views/markets.py) reads the data and puts these on the screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from candlelake.serve import market_stats, rollups
from dashboard import charts
from dashboard.formats import age_seconds, describe_age, describe_duration, in_zone

CUSTOM = "Custom"
# An unknown band is labelled when it is at least this share of the window: its label is about a tenth of
# a wide chart, and the legend names the narrow ones anyway.
LABEL_SHARE = 0.1
IN_PROGRESS = "in progress"  # a live-edge candle's coverage on this page: not partial, only not over yet


@dataclass(frozen=True)
class View:
    """What the user asked to see; the window itself is resolved at each refresh."""

    exchange: str
    symbol: str
    lookback: str  # a LOOKBACKS key or CUSTOM
    bucket: str
    start: datetime | None  # UTC, for CUSTOM only
    end: datetime | None
    overlays: tuple[str, ...]
    tz: str

    @property
    def label(self) -> str:
        """How the tiles name the window: the lookback, or "range" for a custom one."""
        return self.lookback if self.lookback != CUSTOM else "range"


@dataclass(frozen=True)
class Drawn:
    """The candles one refresh draws, their bucket and the bands shaded over them."""

    candles: pd.DataFrame  # live-edge candles marked IN_PROGRESS
    bucket: rollups.Bucket
    partial: np.ndarray  # per candle: drawn hollow, part of its interval unseen
    unknown: list[charts.Band]  # time no feed, replay or backfill covered
    ledger: list[charts.Band]  # the gap ledger's intervals


def drawn(
    candles: pd.DataFrame,
    missing: pd.DataFrame,
    uncovered: pd.DataFrame,
    bucket: rollups.Bucket,
    window: tuple[datetime, datetime],
    reported: datetime,
) -> Drawn:
    """The loaded candles, gap-ledger rows and uncovered intervals of `window` as the chart draws them;
    `reported`: the time up to which coverage is reported (see `in_progress`)."""
    unknown = unknown_bands(uncovered, *window)
    candles = in_progress(candles, unknown, timedelta(seconds=bucket.seconds), reported)
    return Drawn(candles, bucket, charts.partial_mask(candles), unknown, ledger_bands(missing, bucket))


def unknown_bands(uncovered: pd.DataFrame, start: datetime, end: datetime) -> list[charts.Band]:
    """Uncovered time as grey bands at its own times, not widened to whole buckets as ledger bands are: the
    candle around a short loss is drawn partial already, and the band shows how much of it was unseen."""
    wide = (end - start) * LABEL_SHARE
    return [
        charts.Band(
            pd.Timestamp(row.started_at),
            pd.Timestamp(row.ended_at),
            charts.UNKNOWN_LABEL if row.ended_at - row.started_at >= wide else "",
            "unknown",
        )
        for row in uncovered.itertuples(index=False)
    ]


def ledger_bands(missing: pd.DataFrame, bucket: rollups.Bucket) -> list[charts.Band]:
    """The gap ledger's intervals as bands. A band covers whole buckets: a one-minute gap inside a 1h
    candle shades that candle, not a hairline."""
    return [
        charts.Band(
            pd.Timestamp(bucket.start_of(row.started_at)),
            pd.Timestamp(bucket.start_of(row.ended_at - timedelta(microseconds=1)) + timedelta(seconds=bucket.seconds)),
            f"{row.kind.replace('_', ' ')} gap #{row.gap_id} ({row.status})"
            if row.kind != "disconnect"
            else "feed disconnected",
            "disconnected" if row.kind == "disconnect" else "missing",
        )
        for row in missing.itertuples(index=False)
    ]


def in_progress(candles: pd.DataFrame, unknown: list[charts.Band], step: timedelta, reported: datetime) -> pd.DataFrame:
    """The candles, those at the live edge that are partial only because their interval has not ended (or
    its last seconds are not reported yet: before `reported`, the last health beats) marked `in progress`.

    The rollups call such a candle partial: coverage cannot hold time that has not happened. Drawn hollow
    and named partial, every live view's newest candle would say "something was not seen", which is not
    so; its state (live) already says it is still changing. A candle any unknown band touches stays partial.
    """
    if "coverage" not in candles or not len(candles):
        return candles
    opens = pd.to_datetime(candles["open_time"], utc=True)
    ends = opens + step
    edge = (candles["coverage"] == charts.PARTIAL) & (ends > pd.Timestamp(reported))
    for band in unknown:
        edge &= ~((opens < band.end) & (ends > band.start))
    if not edge.any():
        return candles
    return candles.assign(coverage=candles["coverage"].where(~edge, IN_PROGRESS))


def revision(view: View, bucket: rollups.Bucket) -> str:
    """The chart's `uirevision`: Plotly keeps the user's zoom and pan while it stays the same, so it changes
    with what is shown, never with a refresh."""
    return "|".join([view.exchange, view.symbol, view.lookback, bucket.text, view.tz, str(view.start), str(view.end)])


def caption(view: View, shown: Drawn, figures: market_stats.Kpis, newest: datetime) -> str:
    """The line under the chart: what it shows, what is shaded or hollow, and how fresh it is."""
    candles, bucket = shown.candles, shown.bucket
    volatility = market_stats.volatility_pct([float(c) for c in candles["close"]])
    partial_newest = ", partial" if shown.partial[-1] else ""
    vol = f" Volatility {volatility:.3f}% per {bucket.text} candle." if volatility is not None else ""
    return (
        f"{len(candles):,} candles of {bucket.text} for {view.exchange} {view.symbol}{_shading(shown, figures)}. "
        f"Newest base candle opened {in_zone(newest, view.tz)} ({describe_age(age_seconds(newest))}), "
        f"newest shown is {candles.iloc[-1]['state']}{partial_newest}.{vol} Times in {view.tz}. "
        f"Refreshed {in_zone(datetime.now(UTC), view.tz)}."
    )


def _shading(shown: Drawn, figures: market_stats.Kpis) -> str:
    """E.g. `; 3 without trades (grey); 1 gap-ledger interval(s) shaded`: each kind of candle not drawn plain."""
    parts = [
        f"; {figures.empty_candles:,} without trades (grey)" if figures.empty_candles else "",
        f"; {int(shown.partial.sum()):,} partial (hollow: part of the interval unseen)" if shown.partial.any() else "",
        f"; {len(shown.ledger)} gap-ledger interval(s) shaded" if shown.ledger else "",
        f"; {describe_duration(_unseen(shown.unknown).total_seconds())} not covered (grey: unknown)"
        if shown.unknown
        else "",
    ]
    return "".join(parts)


def _unseen(unknown: Sequence[charts.Band]) -> pd.Timedelta:
    return sum((b.end - b.start for b in unknown), pd.Timedelta(0))
