"""Markets page: candlesticks, volume and the window's figures for one market, live from PostgreSQL.

The selectors (market, lookback or a custom range, bucket, overlays, price alert rules) live outside the fragment,
so changing one reruns the page; the chart, its tiles and the alerts live in an `st.fragment` that
reruns on its own every few seconds while "Live" is on, so a refresh redraws only them and the user's
zoom and pan survive it (Plotly's `uirevision`). The selection is kept in the URL (`bind`), so a link
opens the same view; a URL value the page does not know is named in a message, never obeyed blindly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from candlelake.serve import market_stats, rollups
from dashboard import alerts_data, charts, data, url_params
from dashboard.formats import in_zone, price, price_places
from dashboard.views import markets_chart
from dashboard.views.markets_chart import CUSTOM, View

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
DEFAULT_LOOKBACK = "1h"
EARLIEST = datetime(2009, 1, 1)
# Offered bucket sizes; any other whole number of s/m/h/d/w can be typed (such as 13m).
BUCKETS = ("1s", "1m", "3m", "5m", "15m", "30m", "45m", "1h", "2h", "4h", "6h", "12h", "1d", "1w")
DEFAULT_BUCKET = "1m"
# The stream upserts live candles every trigger (about a second); 5 s keeps the page fresh without
# making every open browser tab query PostgreSQL continuously.
REFRESH_SECONDS = 5
KEEP_ZOOM_JS = f"<script>{(Path(__file__).parents[1] / 'static' / 'keep_zoom.js').read_text()}</script>"


@dataclass(frozen=True)
class Shown:
    """The window one refresh draws: [start, end) in UTC, the market's newest candle, the bucket fitted."""

    start: datetime
    end: datetime
    newest: datetime
    bucket: rollups.Bucket


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
    """The market's price alert rules, as the platform's scorer evaluates them."""
    try:
        saved = alerts_data.rules(view.exchange, view.symbol)
    except data.DataError:
        return []  # the chart still draws; the editor above says why the rules cannot be read
    return [
        market_stats.Alert(Decimal(level), direction)
        for level, direction in zip(saved["level"], saved["direction"], strict=True)
    ]


def _flash_raised(view: View, places: int) -> None:
    """A toast for every alert the platform raised for this market since this browser session opened it."""
    opened: dict[str, datetime] = st.session_state.setdefault("alerts_opened_at", {})
    since = opened.setdefault(f"{view.exchange}:{view.symbol}", datetime.now(UTC) - timedelta(minutes=1))
    try:
        raised = alerts_data.recent(since.replace(second=0, microsecond=0), view.exchange, view.symbol)
    except data.DataError:
        return
    announced: set[int] = st.session_state.setdefault("alerts_announced_ids", set())
    for row in raised.itertuples(index=False):
        if row.id in announced or row.raised_at < since:
            continue
        announced.add(row.id)
        if row.type == "price":
            text = f"{view.symbol} crossed {row.kind} {price(Decimal(row.level), places)}: {price(row.price, places)}"
        else:
            text = f"{view.symbol}: {row.kind.replace('_', ' ')} at {in_zone(row.at, view.tz)} ({row.detector})"
        st.toast(text, icon=":material/notifications_active:")


def _show_alerts(view: View, rows: list[market_stats.Candle], places: int) -> list[market_stats.AlertStatus]:
    _flash_raised(view, places)
    statuses = [market_stats.alert_status(rows, a) for a in _alerts(view)]
    for s in statuses:
        level = price(s.alert.level, places)
        when = in_zone(s.at, view.tz) if s.at else ""
        if s.state == "crossed":
            st.error(
                f"**{view.symbol} crossed {s.alert.direction} {level}** at {when}; "
                f"last price {price(s.last_price, places)}",
                icon=":material/notifications_active:",
            )
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
        shown = _resolve(view, base)
        if shown is None:
            return
        candles = data.load_candles(view.exchange, view.symbol, shown.bucket.text, shown.start, shown.end)
        missing = data.missing_intervals(view.exchange, view.symbol, shown.start, shown.end)
        uncovered = data.uncovered_intervals(
            view.exchange, view.symbol, shown.start, shown.end, timedelta(seconds=shown.bucket.seconds)
        )
    except (rollups.RollupError, data.DataError) as exc:
        st.error(str(exc))
        return
    if candles.empty:
        _explain_no_candles(view, shown, uncovered)
        return
    reported = datetime.now(UTC) - data.coverage_grace()
    _draw(
        view, shown, markets_chart.drawn(candles, missing, uncovered, shown.bucket, (shown.start, shown.end), reported)
    )


def _resolve(view: View, base: int) -> Shown | None:
    """The window and bucket to draw; None, with a message, when the window holds no candle to draw."""
    resolved = _window(view, base)
    if resolved is None:
        return None
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
        return None
    bucket = _fit_bucket(view, asked, data_start, data_end, base)
    # From the bucket holding the first candle: it opens before the first candle, not after it.
    start = max(start, bucket.start_of(data_start))
    if rollups.bucket_count(bucket, start, end) == 0:
        st.warning(f"No {bucket.text} candle opens in this range; widen the range or choose a smaller bucket.")
        return None
    return Shown(start, end, newest, bucket)


def _fit_bucket(
    view: View, asked: rollups.Bucket, data_start: datetime, data_end: datetime, base: int
) -> rollups.Bucket:
    """The asked bucket, or a coarser one (and a message why) when the asked one would draw too many candles."""
    bucket = rollups.fit_bucket(asked, data_start, data_end, data.MAX_CANDLES, base)
    if bucket != asked:
        count = rollups.bucket_count(asked, data_start, data_end)
        st.info(
            f"{view.bucket} over this range would be {count:,} candles; showing {bucket.text} candles to keep "
            f"at most {data.MAX_CANDLES:,}. Choose a shorter range for finer candles.",
            icon=":material/zoom_out:",
        )
    return bucket


def _explain_no_candles(view: View, shown: Shown, uncovered: pd.DataFrame) -> None:
    start, end = in_zone(shown.start, view.tz), in_zone(shown.end, view.tz)
    if not uncovered.empty:  # no trade seen, and no coverage says the market was quiet: nothing known
        st.info(
            f"Nothing is known about {view.exchange} {view.symbol} between {start} and {end}: no trade was "
            "seen, and no live feed, replay or backfill covered that time, so it cannot be told apart from "
            "missing data. The Quality page's Coverage section shows what was covered."
        )
    else:  # the market's candles were deleted between the two queries
        st.info(f"No candles for {view.exchange} {view.symbol} in this range any more; pick another range.")


def _draw(view: View, shown: Shown, drawn: markets_chart.Drawn) -> None:
    """The figures' tiles, the alerts, the chart and its caption."""
    rows = list(drawn.candles.itertuples(index=False))  # read by the tiles and every alert
    figures = market_stats.kpis(rows)
    places = price_places(drawn.candles["close"].iloc[-200:].tolist())
    _show_price_tiles(figures, view.label, places, partial_newest=bool(drawn.partial[-1]))
    _show_activity_tiles(figures, view.label, places)
    statuses = _show_alerts(view, rows, places)
    try:
        found = alerts_data.anomalies(view.exchange, view.symbol, shown.start, shown.end)
    except data.DataError:
        found = None
    figure = charts.candlestick_figure(
        drawn.candles,
        tz=view.tz,
        overlays=view.overlays,
        bands=[*drawn.unknown, *drawn.ledger],
        alerts=statuses,
        anomalies=found,
        revision=markets_chart.revision(view, drawn.bucket),
    )
    st.plotly_chart(figure, width="stretch", key="candles", config={"displaylogo": False})
    st.caption(markets_chart.caption(view, drawn, figures, shown.newest))


def _show_price_tiles(figures: market_stats.Kpis, label: str, places: int, *, partial_newest: bool) -> None:
    row = st.columns(4)
    change = f"{figures.change_pct:+.2f}% over {label}" if figures.change_pct is not None else None
    if partial_newest:
        row[0].metric(
            "Last price (partial candle)",
            price(figures.last_price, places),
            change,
            help="The newest candle is partial: part of its interval was not seen, so it may lack trades",
        )
    else:
        row[0].metric("Last price", price(figures.last_price, places), change)
    row[1].metric(f"High ({label})", price(figures.high, places))
    row[2].metric(f"Low ({label})", price(figures.low, places))
    row[3].metric("Average close", price(figures.average, places), help="Mean close of the candles with trades")


def _show_activity_tiles(figures: market_stats.Kpis, label: str, places: int) -> None:
    row = st.columns(4)
    spread_pct = f"{figures.spread_pct:.2f}% of the low" if figures.spread_pct is not None else None
    row[0].metric(
        "Spread (high - low)", price(figures.spread, places), spread_pct, delta_color="off", delta_arrow="off"
    )
    row[1].metric(f"Trades ({label})", f"{figures.trades:,}")
    row[2].metric("VWAP", price(figures.vwap, places), help="Quote volume / volume: the average price paid")
    row[3].metric(f"Volume ({label})", format(figures.volume, ",f"))


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
    """Add and remove this market's price alert rules: saved in PostgreSQL, evaluated by the platform
    (its scorer raises them to the alerts topic, the alerts table and the webhook), browser open or not."""
    market = f"{exchange}:{symbol}"
    try:
        saved = alerts_data.rules(exchange, symbol)
    except data.DataError as exc:
        st.error(str(exc))
        return
    with st.expander(f"Price alerts for {symbol} ({len(saved)})", icon=":material/notifications:"):
        with st.form("add_alert", clear_on_submit=True, border=False):
            left, middle, right = st.columns([3, 2, 1], vertical_alignment="bottom")
            level_text = left.text_input("Price level", key="alert_level", placeholder="e.g. 65000.5")
            direction = middle.segmented_control(
                "When the price is", ["above", "below"], default="above", required=True, key="alert_direction"
            )
            added = right.form_submit_button("Add alert")
        if added:
            try:
                rule = alerts_data.add_rule(market, cast(str, direction or "above"), level_text.replace(",", ""))
            except ValueError as exc:  # store.RuleError: the level, or a rule that exists
                st.error(f"{exc}. Give a positive number such as 65000.5.")
            except data.DataError as exc:
                st.error(str(exc))
            else:
                st.success(f"Saved: alert {rule.id} when {symbol} crosses {rule.direction} {rule.level}.")
                saved = alerts_data.rules(exchange, symbol)
        for rule in saved.itertuples(index=False):
            text, button = st.columns([5, 1], vertical_alignment="center")
            text.write(f"{rule.direction} {rule.level}" + (f" ({rule.note})" if rule.note else ""))
            if button.button("Remove", key=f"remove_alert_{rule.id}"):
                try:
                    alerts_data.remove_rule(int(rule.id))
                except (ValueError, data.DataError) as exc:
                    st.error(str(exc))
                st.rerun()
        st.caption("Rules are kept by the platform; every alert raised is on the Alerts page.")


@dataclass(frozen=True)
class Selection:
    """What the selectors above the chart say (every one kept in the URL but Live and the overlays)."""

    exchange: str | None
    symbol: str | None
    lookback: str
    bucket: str
    live: bool
    overlays: tuple[str, ...]


def _selectors(markets: pd.DataFrame, base: int) -> Selection:
    """The selectors in two rows: market, bucket and Live above; lookback and overlays below."""
    exchanges = sorted(markets["exchange"].unique().tolist())
    url_params.warn_unknown("exchange", exchanges, "exchange")
    left, middle, bucket_col, live_col = st.columns([3, 3, 3, 2], vertical_alignment="bottom")
    right, overlay_col = st.columns([3, 2], vertical_alignment="bottom")
    exchange = left.selectbox("Exchange", exchanges, key="exchange", bind="query-params")
    symbols = sorted(markets.loc[markets["exchange"] == exchange, "symbol"].tolist())
    url_params.warn_unknown("symbol", symbols, f"symbol on {exchange}")
    symbol = middle.selectbox("Symbol", symbols, key="symbol", bind="query-params")
    lookback = _lookback_selector(right)
    bucket = _bucket_selector(bucket_col, base)
    live = live_col.toggle(
        "Live", value=True, key="live", help=f"Redraw every {REFRESH_SECONDS} s; off freezes the view"
    )
    overlays = overlay_col.multiselect(
        "Overlays", list(charts.OVERLAYS), key="overlays", placeholder="moving averages, Bollinger bands"
    )
    return Selection(exchange, symbol, lookback, bucket, live, tuple(overlays))


def _lookback_selector(column: DeltaGenerator) -> str:
    lookbacks = [*LOOKBACKS, CUSTOM]
    url_params.warn_unknown("lookback", lookbacks, "lookback")
    lookback = column.segmented_control(
        "Lookback", lookbacks, default=DEFAULT_LOOKBACK, required=True, key="lookback", bind="query-params"
    )
    return cast(str, lookback or DEFAULT_LOOKBACK)


def _bucket_selector(column: DeltaGenerator, base: int) -> str:
    """The bucket: one offered, or any the user types (such as 13m), checked later by the rollups."""
    offered = [b for b in BUCKETS if rollups.parse_bucket_or_none(b, base)]
    bucket = column.selectbox(
        "Bucket",
        offered,
        index=offered.index(DEFAULT_BUCKET) if DEFAULT_BUCKET in offered else 0,
        key="bucket",
        bind="query-params",
        accept_new_options=True,
        help="Any whole number of s, m, h, d or w (such as 13m); rolled up from the base candles",
    )
    return cast(str, bucket or DEFAULT_BUCKET).strip()


def _markets() -> pd.DataFrame | None:
    """Every market with candles; None when PostgreSQL cannot say (the waiting fragment explains why)."""
    try:
        return data.list_markets()
    except data.DataError:
        return None


def main() -> None:
    st.title("Markets")
    markets = _markets()
    if markets is None or markets.empty:
        st.fragment(_wait_for_markets, run_every=REFRESH_SECONDS)()
        return
    tz = st.session_state.get("tz", "UTC")
    chosen = _selectors(markets, data.base_seconds())
    if chosen.exchange is None or chosen.symbol is None:
        return
    start = end = None
    if chosen.lookback == CUSTOM:
        span = data.market_span(chosen.exchange, chosen.symbol)
        window = _range_inputs(tz, span[1] if span else datetime.now(UTC))
        if window is None:
            return
        start, end = window
    _alert_editor(chosen.exchange, chosen.symbol)
    view = View(chosen.exchange, chosen.symbol, chosen.lookback, chosen.bucket, start, end, chosen.overlays, tz)
    # Outside the fragment, once per page run: the script itself guards against a second copy.
    st.html(KEEP_ZOOM_JS, unsafe_allow_javascript=True)
    # The fragment is built per run so that "Live" off really stops its timer.
    chart = st.fragment(_show_market, run_every=REFRESH_SECONDS if chosen.live else None)
    chart(view)


main()
