"""Markets page: candlesticks, volume and the window's figures for one market, live from PostgreSQL.

The selectors (market, lookback or a custom range, bucket, overlays, alerts) live outside the fragment,
so changing one reruns the page; the chart, its tiles and the alerts live in an `st.fragment` that
reruns on its own every few seconds while "Live" is on, so a refresh redraws only them and the user's
zoom and pan survive it (Plotly's `uirevision`). The selection is kept in the URL (`bind`), so a link
opens the same view; a URL value the page does not know is named in a message, never obeyed blindly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import pandas as pd
import streamlit as st

from candlelake.serve import market_stats, rollups
from dashboard import charts, data, url_params
from dashboard.formats import age_seconds, describe_age, describe_duration, in_zone, price, price_places

LOOKBACKS: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
    "1y": timedelta(days=365),
}
CUSTOM = "Custom"
DEFAULT_LOOKBACK = "1h"
EARLIEST = datetime(2009, 1, 1)
# Offered bucket sizes; any other whole number of s/m/h/d/w can be typed (such as 13m).
BUCKETS = ("1s", "1m", "3m", "5m", "15m", "30m", "45m", "1h", "2h", "4h", "6h", "12h", "1d", "1w")
DEFAULT_BUCKET = "1m"
# The stream upserts live candles every trigger (about a second); 5 s keeps the page fresh without
# making every open browser tab query PostgreSQL continuously.
REFRESH_SECONDS = 5
KEEP_ZOOM_JS = f"<script>{(Path(__file__).parents[1] / 'static' / 'keep_zoom.js').read_text()}</script>"
ALERTS_KEY = "price_alerts"  # session state: {"exchange:symbol": [(level text, direction), ...]}
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


def _wait_for_markets() -> None:
    """Explain why there is nothing to draw, poll every few seconds, rerun the page once there is.

    Covers both a fresh platform (no candle yet) and PostgreSQL being down or restarting, so an open
    tab recovers on its own.
    """
    try:
        markets = data.list_markets()
    except data.DataError as exc:
        st.error(str(exc))
        st.caption(f"Trying again every {REFRESH_SECONDS} s.")
        return
    if not markets.empty:
        st.rerun(scope="app")
    st.info(
        "No candles yet. Candles appear here about a minute after trades start flowing: run "
        "`candlelake up` (the simulator produces trades offline), or `candlelake replay FILE`."
    )


def _window(view: View, base: int) -> tuple[datetime, datetime, tuple[datetime, datetime]] | None:
    """[start, end) in UTC and the market's data span; None (with a message) when there is nothing."""
    span = data.market_span(view.exchange, view.symbol)
    if span is None:
        st.info(f"No candles for {view.exchange} {view.symbol} any more; pick another market.")
        return None
    if view.lookback == CUSTOM:
        assert view.start is not None and view.end is not None
        return view.start, view.end, span
    # A preset window ends at the market's newest candle, not at now(): a replayed historical sample or
    # a stream that paused still shows its last hours (the caption says how old the newest candle is).
    end = span[1] + timedelta(seconds=base)
    return end - LOOKBACKS[view.lookback], end, span


def _alerts(view: View) -> list[market_stats.Alert]:
    saved = st.session_state.get(ALERTS_KEY, {}).get(f"{view.exchange}:{view.symbol}", [])
    return [market_stats.Alert(Decimal(level), direction) for level, direction in saved]


def _show_alerts(view: View, rows: list[market_stats.Candle], places: int) -> list[market_stats.AlertStatus]:
    statuses = [market_stats.alert_status(rows, a) for a in _alerts(view)]
    announced: set[tuple[str, str, str]] = st.session_state.setdefault("alerts_announced", set())
    for s in statuses:
        level = price(s.alert.level, places)
        when = in_zone(s.at, view.tz) if s.at else ""
        if s.state == "crossed":
            st.error(
                f"**{view.symbol} crossed {s.alert.direction} {level}** at {when}; "
                f"last price {price(s.last_price, places)}",
                icon=":material/notifications_active:",
            )
            marker = (f"{view.exchange}:{view.symbol}", str(s.alert.level), s.alert.direction)
            if marker not in announced:
                announced.add(marker)
                st.toast(f"{view.symbol} crossed {s.alert.direction} {level}", icon=":material/notifications_active:")
        elif s.state == "touched":
            side = "below" if s.alert.direction == "above" else "above"
            st.warning(
                f"{view.symbol} touched {level} at {when} but is back {side} it (last {price(s.last_price, places)})",
                icon=":material/notifications:",
            )
        else:
            st.caption(f"Alert {s.alert.direction} {level}: not reached in this window.")
    return statuses


def _show_market(view: View) -> None:
    """Tiles, alerts and the candlestick chart for one market; runs inside the live fragment."""
    base = data.base_seconds()
    try:
        resolved = _window(view, base)
        if resolved is None:
            return
        start, end, (first, newest) = resolved
        asked = rollups.parse_bucket(view.bucket, base)
        # Sized by the data in the window, not the window: ten minutes of a new market over "7d" stay 1m.
        data_start, data_end = max(start, first), min(end, newest + timedelta(seconds=base))
        if data_end <= data_start:
            st.info(
                f"No candles for {view.exchange} {view.symbol} between {in_zone(start, view.tz)} and "
                f"{in_zone(end, view.tz)}: its data runs from {in_zone(first, view.tz)} to "
                f"{in_zone(newest, view.tz)}. Choose a range inside it."
            )
            return
        bucket = rollups.fit_bucket(asked, data_start, data_end, data.MAX_CANDLES, base)
        # From the bucket holding the first candle: it opens before the first candle, not after it.
        start = max(start, bucket.start_of(data_start))
        if bucket != asked:
            count = rollups.bucket_count(asked, data_start, data_end)
            st.info(
                f"{view.bucket} over this range would be {count:,} candles; showing {bucket.text} candles to keep "
                f"at most {data.MAX_CANDLES:,}. Choose a shorter range for finer candles.",
                icon=":material/zoom_out:",
            )
        if rollups.bucket_count(bucket, start, end) == 0:
            st.warning(f"No {bucket.text} candle opens in this range; widen the range or choose a smaller bucket.")
            return
        candles = data.load_candles(view.exchange, view.symbol, bucket.text, start, end)
        missing = data.missing_intervals(view.exchange, view.symbol, start, end)
        uncovered = data.uncovered_intervals(view.exchange, view.symbol, start, end, timedelta(seconds=bucket.seconds))
    except rollups.RollupError as exc:
        st.error(str(exc))
        return
    except data.DataError as exc:
        st.error(str(exc))
        return
    if candles.empty:
        if not uncovered.empty:  # no trade seen, and no coverage says the market was quiet: nothing known
            st.info(
                f"Nothing is known about {view.exchange} {view.symbol} between {in_zone(start, view.tz)} and "
                f"{in_zone(end, view.tz)}: no trade was seen, and no live feed, replay or backfill covered that "
                "time, so it cannot be told apart from missing data. The Quality page's Coverage section shows "
                "what was covered."
            )
        else:  # the market's candles were deleted between the two queries
            st.info(f"No candles for {view.exchange} {view.symbol} in this range any more; pick another range.")
        return

    unknown = _unknown_bands(uncovered, start, end)
    candles = _in_progress(
        candles, unknown, timedelta(seconds=bucket.seconds), datetime.now(UTC) - data.coverage_grace()
    )
    rows = list(candles.itertuples(index=False))  # read by the tiles and every alert
    figures = market_stats.kpis(rows)
    partial = charts.partial_mask(candles)
    places = price_places(candles["close"].iloc[-200:].tolist())
    label = view.lookback if view.lookback != CUSTOM else "range"
    row1 = st.columns(4)
    change = f"{figures.change_pct:+.2f}% over {label}" if figures.change_pct is not None else None
    if partial[-1]:
        row1[0].metric(
            "Last price (partial candle)",
            price(figures.last_price, places),
            change,
            help="The newest candle is partial: part of its interval was not seen, so it may lack trades",
        )
    else:
        row1[0].metric("Last price", price(figures.last_price, places), change)
    row1[1].metric(f"High ({label})", price(figures.high, places))
    row1[2].metric(f"Low ({label})", price(figures.low, places))
    row1[3].metric("Average close", price(figures.average, places), help="Mean close of the candles with trades")
    row2 = st.columns(4)
    spread_pct = f"{figures.spread_pct:.2f}% of the low" if figures.spread_pct is not None else None
    row2[0].metric(
        "Spread (high - low)", price(figures.spread, places), spread_pct, delta_color="off", delta_arrow="off"
    )
    row2[1].metric(f"Trades ({label})", f"{figures.trades:,}")
    row2[2].metric("VWAP", price(figures.vwap, places), help="Quote volume / volume: the average price paid")
    row2[3].metric(f"Volume ({label})", format(figures.volume, ",f"))

    statuses = _show_alerts(view, rows, places)
    # A band covers whole buckets: a one-minute gap inside a 1h candle shades that candle, not a hairline.
    ledger = [
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
    revision = "|".join(
        [view.exchange, view.symbol, view.lookback, bucket.text, view.tz, str(view.start), str(view.end)]
    )
    figure = charts.candlestick_figure(
        candles, tz=view.tz, overlays=view.overlays, bands=[*unknown, *ledger], alerts=statuses, revision=revision
    )
    st.plotly_chart(figure, width="stretch", key="candles", config={"displaylogo": False})
    volatility = market_stats.volatility_pct([float(c) for c in candles["close"]])
    quiet = f"; {figures.empty_candles:,} without trades (grey)" if figures.empty_candles else ""
    gaps = f"; {len(ledger)} gap-ledger interval(s) shaded" if ledger else ""
    hollow = f"; {int(partial.sum()):,} partial (hollow: part of the interval unseen)" if partial.any() else ""
    unseen = sum((b.end - b.start for b in unknown), pd.Timedelta(0))
    grey = f"; {describe_duration(unseen.total_seconds())} not covered (grey: unknown)" if unknown else ""
    vol = f" Volatility {volatility:.3f}% per {bucket.text} candle." if volatility is not None else ""
    newest_candle = candles.iloc[-1]
    st.caption(
        f"{len(candles):,} candles of {bucket.text} for {view.exchange} {view.symbol}{quiet}{hollow}{gaps}{grey}. "
        f"Newest base candle opened {in_zone(newest, view.tz)} ({describe_age(age_seconds(newest))}), "
        f"newest shown is {newest_candle['state']}{', partial' if partial[-1] else ''}.{vol} Times in {view.tz}. "
        f"Refreshed {in_zone(datetime.now(UTC), view.tz)}."
    )


def _unknown_bands(uncovered: pd.DataFrame, start: datetime, end: datetime) -> list[charts.Band]:
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


def _in_progress(
    candles: pd.DataFrame, unknown: list[charts.Band], step: timedelta, reported: datetime
) -> pd.DataFrame:
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


def _range_inputs(tz: str, newest: datetime) -> tuple[datetime, datetime] | None:
    """The custom range, typed in the display zone, as UTC; None (with a message) when it is not a range."""
    zone = ZoneInfo(tz)
    default_end = newest.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0) + timedelta(minutes=1)
    left, right = st.columns(2)
    # Trades exist from 2009 on (the producer rejects earlier times); a day ahead covers every zone.
    bounds = {"min_value": EARLIEST, "max_value": datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1)}
    start = left.datetime_input(
        f"From ({tz})", value=default_end - timedelta(hours=6), key="start", step=timedelta(minutes=1), **bounds
    )
    end = right.datetime_input(f"To ({tz})", value=default_end, key="end", step=timedelta(minutes=1), **bounds)
    if start is None or end is None:
        st.warning("Give both ends of the range.")
        return None
    start_utc = start.replace(tzinfo=zone).astimezone(UTC)
    end_utc = end.replace(tzinfo=zone).astimezone(UTC)
    if end_utc <= start_utc:
        st.error(f"The range must end after it starts: {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} is empty.")
        return None
    return start_utc, end_utc


def _alert_editor(exchange: str, symbol: str) -> None:
    """Add and remove price alerts for this market (kept for the browser session)."""
    market = f"{exchange}:{symbol}"
    saved: dict[str, list[tuple[str, str]]] = st.session_state.setdefault(ALERTS_KEY, {})
    with st.expander(f"Price alerts for {symbol} ({len(saved.get(market, []))})", icon=":material/notifications:"):
        with st.form("add_alert", clear_on_submit=True, border=False):
            left, middle, right = st.columns([3, 2, 1], vertical_alignment="bottom")
            level_text = left.text_input("Price level", key="alert_level", placeholder="e.g. 65000.5")
            direction = middle.segmented_control(
                "When the price is", ["above", "below"], default="above", required=True, key="alert_direction"
            )
            added = right.form_submit_button("Add alert")
        if added:
            try:
                level = Decimal(level_text.strip().replace(",", ""))
                if not level.is_finite() or level <= 0:
                    raise InvalidOperation
            except (InvalidOperation, ValueError):
                st.error(f"{level_text!r} is not a price: give a positive number such as 65000.5.")
            else:
                entry = (str(level), cast(str, direction or "above"))
                if entry not in saved.setdefault(market, []):
                    saved[market].append(entry)
        for i, (level, direction) in enumerate(saved.get(market, [])):
            text, button = st.columns([5, 1], vertical_alignment="center")
            text.write(f"{direction} {level}")
            if button.button("Remove", key=f"remove_alert_{i}"):
                saved[market].pop(i)
                st.rerun()


def main() -> None:
    st.title("Markets")
    try:
        markets = data.list_markets()
    except data.DataError:
        markets = None
    if markets is None or markets.empty:
        st.fragment(_wait_for_markets, run_every=REFRESH_SECONDS)()
        return

    tz = st.session_state.get("tz", "UTC")
    base = data.base_seconds()
    exchanges = sorted(markets["exchange"].unique().tolist())
    url_params.warn_unknown("exchange", exchanges, "exchange")
    left, middle, bucket_col, live_col = st.columns([3, 3, 3, 2], vertical_alignment="bottom")
    right, overlay_col = st.columns([3, 2], vertical_alignment="bottom")
    exchange = left.selectbox("Exchange", exchanges, key="exchange", bind="query-params")
    symbols = sorted(markets.loc[markets["exchange"] == exchange, "symbol"].tolist())
    url_params.warn_unknown("symbol", symbols, f"symbol on {exchange}")
    symbol = middle.selectbox("Symbol", symbols, key="symbol", bind="query-params")
    lookbacks = [*LOOKBACKS, CUSTOM]
    url_params.warn_unknown("lookback", lookbacks, "lookback")
    lookback = right.segmented_control(
        "Lookback", lookbacks, default=DEFAULT_LOOKBACK, required=True, key="lookback", bind="query-params"
    )
    offered = [b for b in BUCKETS if rollups.parse_bucket_or_none(b, base)]
    bucket = bucket_col.selectbox(
        "Bucket",
        offered,
        index=offered.index(DEFAULT_BUCKET) if DEFAULT_BUCKET in offered else 0,
        key="bucket",
        bind="query-params",
        accept_new_options=True,
        help="Any whole number of s, m, h, d or w (such as 13m); rolled up from the base candles",
    )
    live = live_col.toggle(
        "Live", value=True, key="live", help=f"Redraw every {REFRESH_SECONDS} s; off freezes the view"
    )
    overlays = overlay_col.multiselect(
        "Overlays", list(charts.OVERLAYS), key="overlays", placeholder="moving averages, Bollinger bands"
    )
    if exchange is None or symbol is None:
        return
    lookback = lookback or DEFAULT_LOOKBACK
    start = end = None
    if lookback == CUSTOM:
        span = data.market_span(exchange, symbol)
        chosen = _range_inputs(tz, span[1] if span else datetime.now(UTC))
        if chosen is None:
            return
        start, end = chosen
    _alert_editor(exchange, symbol)
    view = View(exchange, symbol, lookback, (bucket or DEFAULT_BUCKET).strip(), start, end, tuple(overlays), tz)
    # Outside the fragment, once per page run: the script itself guards against a second copy.
    st.html(KEEP_ZOOM_JS, unsafe_allow_javascript=True)
    # The fragment is built per run so that "Live" off really stops its timer.
    chart = st.fragment(_show_market, run_every=REFRESH_SECONDS if live else None)
    chart(view)


main()
